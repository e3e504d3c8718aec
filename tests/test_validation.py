"""Bad input raises ValueError or TypeError with a message naming the argument."""

import pytest
import torch

import decorr_lite as dl

N, D = 6, 8


def good(*shape, dtype=torch.float32):
    return torch.randn(*(shape or (N, D)), dtype=dtype)


# Every public function, called with one embedding argument replaced.
def one_view(fn):
    return lambda z: fn(z)


def two_views_first(fn):
    return lambda z: fn(z, good())


def two_views_second(fn):
    return lambda z: fn(good(), z)


SINGLE = {"variance_loss": dl.variance_loss, "covariance_loss": dl.covariance_loss}
LOSS_FUNCTIONS = [spec.loss_function for spec in dl.LOSSES.values()]  # every loss of the registry
PAIRED = {
    "invariance_loss": dl.invariance_loss,
    **{fn.__name__: fn for fn in LOSS_FUNCTIONS},
    "cross_correlation": dl.cross_correlation,
    "circular_correlation": dl.circular_correlation,
}
CALLS = [(f"{name}(z)", "z", one_view(fn)) for name, fn in SINGLE.items()]
CALLS += [(f"{name}(z1=bad)", "z1", two_views_first(fn)) for name, fn in PAIRED.items()]
CALLS += [(f"{name}(z2=bad)", "z2", two_views_second(fn)) for name, fn in PAIRED.items()]


def nan_input():
    z = good()
    z[2, 3] = float("nan")
    return z


def inf_input():
    z = good()
    z[0, 0] = float("-inf")
    return z


BAD_EMBEDDINGS = [
    ("1-D", lambda: good(D), ValueError, "2-D"),
    ("3-D", lambda: good(N, D, 2), ValueError, "2-D"),
    ("n=1", lambda: good(1, D), ValueError, "n >= 2"),
    ("d=0", lambda: good(N, 0), ValueError, "d >= 1"),
    ("int", lambda: torch.ones(N, D, dtype=torch.int64), TypeError, "floating dtype"),
    ("bool", lambda: torch.ones(N, D, dtype=torch.bool), TypeError, "floating dtype"),
    ("complex", lambda: torch.ones(N, D, dtype=torch.complex64), TypeError, "floating dtype"),
    ("numpy", lambda: good().numpy(), TypeError, "torch.Tensor"),
    ("nan", nan_input, ValueError, "NaN or Inf"),
    ("inf", inf_input, ValueError, "NaN or Inf"),
]


# With d = 0 in z2 alone, the shape mismatch with z1 is what gets reported (tested below).
CASES = [
    pytest.param(make, error, fragment, argname, call, id=f"{call_id}-{label}")
    for label, make, error, fragment in BAD_EMBEDDINGS
    for call_id, argname, call in CALLS
    if not (label == "d=0" and argname == "z2")
]


@pytest.mark.parametrize("make,error,fragment,argname,call", CASES)
def test_bad_embeddings(make, error, fragment, argname, call):
    z = make()
    with pytest.raises(error) as info:
        call(z)
    message = str(info.value)
    assert argname in message and fragment in message, message


@pytest.mark.parametrize("fn", list(PAIRED.values()), ids=list(PAIRED))
def test_view_mismatch(fn):
    with pytest.raises(ValueError, match=r"z1 and z2 must have the same shape.*\(6, 8\).*\(6, 9\)"):
        fn(good(N, D), good(N, D + 1))
    with pytest.raises(ValueError, match="same shape"):
        fn(good(N, D), good(N + 1, D))
    with pytest.raises(TypeError, match="z1 and z2 must have the same dtype"):
        fn(good(), good(dtype=torch.float64))


def test_check_finite_can_be_switched_off():
    z = nan_input()
    # the check is skipped, so the NaN simply propagates instead of raising
    assert torch.isnan(dl.vicreg_loss(z, good(), check_finite=False))
    assert torch.isnan(dl.barlow_twins_loss(z, good(), check_finite=False))
    assert torch.isnan(dl.covariance_loss(z, check_finite=False))


def two_views(fn):
    return lambda **kw: fn(good(), good(), **kw)


LOSSES = {
    "covariance_loss": lambda **kw: dl.covariance_loss(good(), **kw),
    **{fn.__name__: two_views(fn) for fn in LOSS_FUNCTIONS},
}


def shuffled(n):
    """A permutation of n, the same at every collection: the test ids show it."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))


BAD_OPTIONS = [
    (dict(method="fft", block_size=0), ValueError, r"block_size must be in \[1, d\] = \[1, 8\]"),
    (dict(method="fft", block_size=9), ValueError, r"block_size must be in \[1, d\] = \[1, 8\]"),
    (dict(method="fft", block_size=2.5), TypeError, "block_size must be an integer"),
    (dict(method="fft", block_size=True), TypeError, "block_size must be an integer"),
    (dict(exponent=0), ValueError, "exponent must be a finite number >= 1"),
    (dict(exponent=-1), ValueError, "exponent must be a finite number >= 1"),
    (dict(exponent=0.5), ValueError, "infinite gradient at x = 0"),
    (dict(exponent=float("nan")), ValueError, "exponent must be a finite number >= 1"),
    (dict(exponent="2"), TypeError, "exponent must be a number >= 1"),
    (dict(method="gram", exponent=1), ValueError, "gram.*needs exponent=2"),
    (dict(method="svd"), ValueError, r"method must be one of \('exact', 'gram', 'fft'\)"),
    (dict(method="fft", permutation=shuffled(D - 1)), ValueError, "permutation must be 1-D with d = 8"),
    (dict(method="fft", permutation=shuffled(D)[None]), ValueError, "permutation must be 1-D"),
    (dict(method="fft", permutation=torch.zeros(D, dtype=torch.long)), ValueError, "every index 0..7 exactly once"),
    (dict(method="fft", permutation=torch.arange(1, D + 1)), ValueError, "every index 0..7 exactly once"),
    (dict(method="fft", permutation=torch.arange(D) - 1), ValueError, "every index 0..7 exactly once"),
    (dict(method="fft", permutation=shuffled(D).float()), TypeError, "permutation must have an integer dtype"),
    (dict(method="fft", permutation=list(range(D))), TypeError, "permutation must be a LongTensor"),
]


@pytest.mark.parametrize("options,error,pattern", BAD_OPTIONS, ids=[str(o[0]) for o in BAD_OPTIONS])
@pytest.mark.parametrize("name", list(LOSSES))
def test_bad_options(name, options, error, pattern):
    with pytest.raises(error, match=pattern):
        LOSSES[name](**options)


def test_circular_correlation_block_size():
    with pytest.raises(ValueError, match="block_size"):
        dl.circular_correlation(good(), good(), 0)
    with pytest.raises(ValueError, match="block_size"):
        dl.circular_correlation(good(), good(), D + 1)


@pytest.mark.parametrize(
    "call,pattern",
    [
        (lambda: dl.variance_loss(good(), gamma=0), "gamma must be > 0"),
        (lambda: dl.variance_loss(good(), eps=-1e-4), "eps must be > 0"),
        (lambda: dl.vicreg_loss(good(), good(), sim_coeff=-1), "sim_coeff must be >= 0"),
        (lambda: dl.vicreg_loss(good(), good(), std_coeff=float("inf")), "std_coeff must be a finite"),
        (lambda: dl.vicreg_loss(good(), good(), cov_coeff=None), "cov_coeff must be a finite"),
        (lambda: dl.barlow_twins_loss(good(), good(), lambd=-0.1), "lambd must be >= 0"),
    ],
)
def test_bad_coefficients(call, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        call()


# ------------------------------------------------------------------------------ torch.func.vmap


@pytest.mark.parametrize("method", ["exact", "gram"])
def test_vmap_with_check_finite_names_the_switch(method):
    """Under torch.func.vmap the NaN/Inf check is a branch on the data, which vmap refuses with a
    message about "data-dependent control flow" that names nothing of ours: the error says to
    pass check_finite=False, and with it the batched loss is the loss of each batch."""
    z1, z2 = torch.randn(3, N, D), torch.randn(3, N, D)
    with pytest.raises(RuntimeError, match=r"check_finite=True cannot run under torch\.func\.vmap.*check_finite=False"):
        torch.func.vmap(lambda a, b: dl.vicreg_loss(a, b, method=method))(z1, z2)
    batched = torch.func.vmap(lambda a, b: dl.vicreg_loss(a, b, method=method, check_finite=False))(z1, z2)
    torch.testing.assert_close(batched, torch.stack([dl.vicreg_loss(a, b, method=method) for a, b in zip(z1, z2)]))


@pytest.mark.parametrize(
    "call",
    [
        lambda z: dl.variance_loss(z),
        lambda z: dl.covariance_loss(z),
        lambda z: dl.invariance_loss(z, z),
    ],
    ids=["variance_loss", "covariance_loss", "invariance_loss"],
)
def test_vmap_of_the_terms_names_the_switch_too(call):
    with pytest.raises(RuntimeError, match="Pass check_finite=False"):
        torch.func.vmap(call)(torch.randn(2, N, D))


# ------------------------------------------------------------------------------ switches


@pytest.mark.parametrize("name", ["check_finite", "gather_distributed"])
@pytest.mark.parametrize("value", ["False", 0, None, 1.0])
@pytest.mark.parametrize(
    "loss", [fn.__name__ for spec in dl.LOSSES.values() for fn in (spec.loss_function, spec.terms_function)]
)
def test_switches_must_be_true_or_false(loss, name, value):
    """check_finite="False" used to run the check (a non-empty string is true), and any value
    passed for gather_distributed was taken for its truth."""
    with pytest.raises(TypeError, match=f"{name} must be True or False"):
        getattr(dl, loss)(good(), good(), **{name: value})


@pytest.mark.parametrize("fn", [dl.variance_loss, dl.covariance_loss])
def test_check_finite_of_the_single_view_terms_must_be_true_or_false(fn):
    with pytest.raises(TypeError, match="check_finite must be True or False"):
        fn(good(), check_finite="no")


# ------------------------------------------------------------------------------ tensors


@pytest.mark.parametrize("make", [lambda: torch.randn(20, 6).to_sparse(), lambda: torch.randn(20, 6, device="meta")])
def test_sparse_and_meta_tensors_get_a_clear_error(make):
    with pytest.raises(TypeError, match="dense tensors on a real device"):
        dl.vicreg_loss(make(), make())
