"""Inputs of any finite magnitude.

- Barlow Twins is scale-free: at 1e19 and beyond in float32 (1e160 in float64), where the
  batch variance overflows, every method and implementation still gives the loss and the
  gradients of the float64 formulas (before: the loss d with a zero gradient, or NaN for the
  fused path); at ordinary scales the arithmetic is the same as ever, bit for bit.
- VICReg is not scale-free: its terms overflow float32 (the covariance term grows as the fourth
  power of the scale). With ``check_finite`` every method and implementation refuses them with
  the same error, which names z1, z2 and the fix; without it the variance term, whose value is
  0 up there, is 0 on both paths (before: NaN on the fused one).
"""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

import decorr_lite as dl
from decorr_lite.losses import batch_standardize
from decorr_lite.losses.reference import wrapped_diagonal_sums

N, D = 24, 10
LAMBD = 0.0051
BARLOW_CASES = [
    dict(method="exact"),
    dict(method="gram"),
    dict(method="fft", block_size=4, impl="modular"),
    dict(method="fft", block_size=4, impl="fused"),
    dict(method="fft", impl="fused"),
    dict(method="fft", block_size=3, exponent=1, impl="fused"),
    dict(method="fft", block_size=3, exponent=1, impl="modular"),
]


def ids(options: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items())


def views(scale: float, dtype: torch.dtype, n: int = N, d: int = D, seed: int = 0):
    """Two correlated views at ``scale``, in ``dtype`` (rounded there), made in float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    z1 = x + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    z2 = x @ torch.randn(d, d, generator=g, dtype=torch.float64) / 3 + 0.4 * torch.randn(
        n, d, generator=g, dtype=torch.float64
    )
    z1, z2 = (z * scale for z in (z1, z2))  # in float64: 1e160 squared is then out of reach, as it should be
    return z1.to(dtype), z2.to(dtype)


def barlow_reference(z1, z2, *, method, block_size=None, exponent=2, permutation=None, down=1.0, **_):
    """The Barlow Twins loss from its formulas in float64, of z1 * down and z2 * down with eps *
    down^2 (down a power of two: the very same standardisation, and numbers that float64 holds)."""
    eps = 1e-5 * down**2
    a, b = ((z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps) for z in (z1 * down, z2 * down))
    n, d = a.shape
    c = a.T @ b / n
    on_diagonal = (1 - c.diagonal()).pow(2).sum()
    if method != "fft":
        off = c - torch.diag(c.diagonal())
        return on_diagonal + LAMBD * off.abs().pow(exponent).sum()
    if permutation is not None:
        a, b = a[:, permutation], b[:, permutation]
    b_size = block_size or d
    t = wrapped_diagonal_sums(a, b, b_size) / n
    g = t.shape[0]
    keep = torch.ones_like(t)
    keep[range(g), range(g), 0] = 0  # shift 0 of a diagonal block: the C_ii, the on-diagonal term's
    return on_diagonal + LAMBD * (t.abs().pow(exponent) * keep).sum()


def value_and_grads(fn, z1, z2):
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    value = fn(a, b)
    return (value.detach(), *torch.autograd.grad(value, (a, b)))


def reference_value_and_grads(z1, z2, down, **options):
    """The reference's value and its gradients with respect to z1 and z2 (down times those with
    respect to the downscaled views), from float64 copies of the inputs."""
    a, b = z1.double().requires_grad_(), z2.double().requires_grad_()
    value = barlow_reference(a, b, down=down, **options)
    return (value.detach(), *torch.autograd.grad(value, (a, b)))


def assert_close_to(got, want, rtol):
    """Each tensor within rtol of the reference, relative to the reference's largest entry."""
    for g, w in zip(got, want):
        assert torch.isfinite(g).all()
        scale = w.abs().max()
        assert float((g.double() - w).abs().max()) <= rtol * float(scale), (g, w)


RTOL = {torch.float64: 1e-12, torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}
# (scale, dtype, down): down a power of two near 1 / scale for the reference's float64 arithmetic
LARGE = [
    (1e19, torch.float32, 2.0**-64),
    (1e30, torch.float32, 2.0**-100),
    (1e36, torch.float32, 2.0**-120),  # the batch means themselves overflowed float32 here
    (1e19, torch.bfloat16, 2.0**-64),
    (1e160, torch.float64, 2.0**-532),
]


def decide_without_a_branch(monkeypatch):
    """Take the path of torch.compile and CUDA graph capture on the CPU: the powers of two decided
    up front from each feature's largest |entry|, without reading a number back."""
    from decorr_lite.losses import _magnitude

    monkeypatch.setattr(_magnitude, "_compiling", lambda: True)


@pytest.mark.parametrize("options", BARLOW_CASES, ids=ids)
@pytest.mark.parametrize("scale,dtype,down", LARGE, ids=[f"{s:g}-{str(t)[6:]}" for s, t, _ in LARGE])
@pytest.mark.parametrize("branch_free", [False, True], ids=["branch", "branch-free"])
def test_barlow_twins_is_scale_free_at_any_finite_magnitude(monkeypatch, options, scale, dtype, down, branch_free):
    """The loss and its gradients at a magnitude where the variance overflows are those of the
    float64 formulas (before: the loss d, a zero gradient; NaN on the fused path)."""
    if branch_free:
        decide_without_a_branch(monkeypatch)
    z1, z2 = views(scale, dtype)
    permutation = torch.randperm(D, generator=torch.Generator().manual_seed(1)) if options["method"] == "fft" else None
    got = value_and_grads(lambda a, b: dl.barlow_twins_loss(a, b, permutation=permutation, **options), z1, z2)
    want = reference_value_and_grads(z1, z2, down, permutation=permutation, **options)
    assert_close_to(got, want, RTOL[dtype])  # the gradients come back in the inputs' dtype
    # and the same loss as at scale 1: Barlow Twins does not see the scale (but for its eps)
    ordinary = dl.barlow_twins_loss(*views(1.0, torch.float64), permutation=permutation, **options)
    assert float(got[0]) == pytest.approx(float(ordinary), rel=1e-2 if dtype == torch.bfloat16 else 1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e6])
def test_the_branch_free_path_is_the_plain_one_at_ordinary_scales(monkeypatch, dtype, scale):
    """Under torch.compile and in a CUDA graph an ordinary input is standardised times 1: the
    values and gradients of the plain path, bit for bit (a shipped run bank was trained so)."""
    z1, z2 = views(scale, dtype)
    permutation = torch.randperm(D, generator=torch.Generator().manual_seed(4))
    calls = [lambda a, b, o=o: dl.barlow_twins_loss(a, b, permutation=permutation, **o) for o in BARLOW_CASES]
    plain = [value_and_grads(call, z1, z2) for call in calls]
    decide_without_a_branch(monkeypatch)
    for call, want in zip(calls, plain):
        for got, expected in zip(value_and_grads(call, z1, z2), want):
            assert torch.equal(got, expected)


def test_fused_and_modular_agree_at_large_magnitude():
    z1, z2 = views(1e19, torch.float32)
    permutation = torch.randperm(D, generator=torch.Generator().manual_seed(2))
    results = [
        value_and_grads(
            lambda a, b, impl=impl: dl.barlow_twins_loss(
                a, b, method="fft", block_size=4, permutation=permutation, impl=impl
            ),
            z1,
            z2,
        )
        for impl in ("fused", "modular")
    ]
    for fused, modular in zip(*results):
        torch.testing.assert_close(fused, modular, rtol=1e-4, atol=1e-6 * float(modular.abs().max()))


def test_one_huge_feature_leaves_the_others_bit_for_bit():
    """A feature far beyond the variance's range is standardised as the float64 formula says,
    and the other features exactly as without it: the downscaling is a division by a power of
    two, the same arithmetic rounding for rounding."""
    z, _ = views(1.0, torch.float32)
    z = z.clone()
    z[:, 0] *= 1e25
    z[:, 1] *= 1e10  # large, but its variance in range: the plain path's numbers, downscaled or not
    got = batch_standardize(z)
    alone = batch_standardize(z[:, 1:].contiguous())
    assert torch.equal(got[:, 1:], alone)
    z64 = z[:, 0].double()
    want = (z64 - z64.mean()) / torch.sqrt(z64.var(unbiased=False) + 1e-5)
    torch.testing.assert_close(got[:, 0].double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", BARLOW_CASES[:4], ids=ids)
def test_half_precision_at_its_largest_magnitudes(options):
    """float16 (up to 65504) is computed in float32, where its squares cannot overflow; bfloat16
    reaches float32's range and takes the downscaled path (``test_barlow_twins_is_scale_free...``)."""
    z1, z2 = views(1e4, torch.float16)
    got = value_and_grads(lambda a, b: dl.barlow_twins_loss(a, b, **options), z1, z2)
    want = reference_value_and_grads(z1, z2, 1.0, **options)
    assert_close_to(got, want, RTOL[torch.float16])  # the gradients come back in float16


def test_an_exactly_constant_feature_far_above_one_stays_finite():
    """Variance 0 at 1e30: eps / down^2 would underflow to 0 and the standardisation be 0 / 0; the
    feature is standardised to 0, as an ordinary constant feature is."""
    z1, z2 = views(1e30, torch.float32)
    z1, z2 = z1.clone(), z2.clone()
    z1[:, 3] = 2.0**100  # every row equal and the mean exact
    for options in BARLOW_CASES:
        value, g1, g2 = value_and_grads(lambda a, b, o=options: dl.barlow_twins_loss(a, b, **o), z1, z2)
        assert torch.isfinite(value) and torch.isfinite(g1).all() and torch.isfinite(g2).all(), options
    assert torch.equal(batch_standardize(z1)[:, 3], torch.zeros(N))


# ------------------------------------------------------------------------------------ VICReg

VICREG_CASES = [
    dict(method="exact"),
    dict(method="gram"),
    dict(method="fft", impl="modular"),
    dict(method="fft", impl="fused"),
    dict(method="fft", block_size=4, exponent=1, impl="fused"),
]


@pytest.mark.parametrize("options", VICREG_CASES, ids=ids)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_vicreg_refuses_terms_that_overflow_float32(options, dtype):
    """At 1e19 VICReg's terms exceed float32 (the covariance term is of order 1e76): every method
    and implementation raises the same error, naming the inputs and the fix (before: inf or
    NaN, and a different one from each path)."""
    z1, z2 = views(1e19, dtype)
    with pytest.raises(ValueError, match="overflowed torch.float32") as info:
        dl.vicreg_loss(z1, z2, **options)
    message = str(info.value)
    for fragment in ("z1 and z2 are finite", "fourth power", "z1.double(), z2.double()", "check_finite=False"):
        assert fragment in message, message


@pytest.mark.parametrize(
    "call",
    [
        lambda z1, z2: dl.covariance_loss(z1),
        lambda z1, z2: dl.invariance_loss(z1, z2),
        lambda z1, z2: dl.circular_correlation(z1, z2),
    ],
    ids=["covariance_loss", "invariance_loss", "circular_correlation"],
)
def test_the_terms_refuse_to_overflow_too(call):
    z1, z2 = views(1e19, torch.float32)
    with pytest.raises(ValueError, match="overflowed torch.float32.*check_finite=False"):
        call(z1, z2)


def test_vicreg_in_float64_at_the_same_magnitude_is_computed():
    """The fix the error names: the same embeddings in float64 give the formulas' value."""
    z1, z2 = views(1e19, torch.float32)
    a, b = z1.double(), z2.double()
    n, d = a.shape
    x, y = a - a.mean(dim=0), b - b.mean(dim=0)
    cov = lambda m: (m.T @ m / (n - 1)).fill_diagonal_(0).pow(2).sum() / d  # noqa: E731
    want = 25 * (a - b).pow(2).mean() + 0 + cov(x) + cov(y)  # every std >> 1: the hinge is 0
    torch.testing.assert_close(dl.vicreg_loss(a, b), want, rtol=1e-10, atol=0)


def test_without_check_finite_the_variance_term_agrees_on_both_paths():
    """The variance hinge at 1e19 is 0 (every std is far above the margin) on every path (before:
    NaN on the fused path, where the overflowed sums of squares met). Its gradient alone is 0 on
    the modular paths; the fused path computes every term in one function, whose backward meets
    the covariance term's inf."""
    z1, z2 = views(1e19, torch.float32)
    for options in VICREG_CASES:
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        terms = dl.vicreg_terms(a, b, check_finite=False, **options)
        assert float(terms["variance"].detach()) == 0.0, options
        if options.get("impl") != "fused":
            grads = torch.autograd.grad(terms["variance"], (a, b))
            assert all(bool((g == 0).all()) for g in grads), options


def test_vicreg_at_a_large_magnitude_that_float32_holds():
    """At 1e6 every term is representable in float32 and matches float64 on every path (the
    refusal is for overflow, not for large values)."""
    z1, z2 = views(1e6, torch.float32)
    want = dl.vicreg_terms(z1.double(), z2.double(), method="exact")
    for options in VICREG_CASES[:2]:
        got = dl.vicreg_terms(z1, z2, **options)
        for name in want:
            torch.testing.assert_close(got[name].double(), want[name], rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------- distributed


def _large_barlow_of_a_rank(world: int, rank: int):
    z1, z2 = views(1e19, torch.float32)
    rows = slice(rank * N // world, (rank + 1) * N // world)
    permutation = torch.randperm(D, generator=torch.Generator().manual_seed(3))
    a, b = z1[rows].clone().requires_grad_(), z2[rows].clone().requires_grad_()
    loss = dl.barlow_twins_loss(a, b, method="fft", block_size=4, permutation=permutation, gather_distributed=True)
    loss.backward()
    return loss.detach(), a.grad, b.grad


def test_distributed_barlow_twins_at_large_magnitude(tmp_path):
    """Across two processes (global statistics, all-reduced) the downscaled path gives the
    single-process loss, and world_size times its gradients (the convention of _distributed.py)."""
    from test_distributed import _free_port, _worker

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), _large_barlow_of_a_rank), nprocs=2, join=True)
    z1, z2 = views(1e19, torch.float32)
    permutation = torch.randperm(D, generator=torch.Generator().manual_seed(3))
    options = dict(method="fft", block_size=4, permutation=permutation)
    value, g1, g2 = value_and_grads(lambda a, b: dl.barlow_twins_loss(a, b, impl="modular", **options), z1, z2)
    want = reference_value_and_grads(z1, z2, 2.0**-64, **options)
    assert_close_to((value, g1, g2), want, 1e-4)
    for rank in range(2):
        loss, a_grad, b_grad = torch.load(tmp_path / f"rank{rank}.pt")
        rows = slice(rank * N // 2, (rank + 1) * N // 2)
        torch.testing.assert_close(loss, value, rtol=1e-5, atol=0)
        for got, single in ((a_grad, g1[rows]), (b_grad, g2[rows])):
            torch.testing.assert_close(got, 2 * single, rtol=1e-4, atol=1e-6 * float(single.abs().max()))
