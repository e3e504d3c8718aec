"""The loss modules (``VICRegLoss``, ``BarlowTwinsLoss``), the registry that lists the losses, the
``impl`` switch and the short reference implementation of the relaxation.

- a module computes what its function computes, values and gradients, for every method;
- the permutation policy: a fresh one per call in training mode, none in eval mode, the same on
  every rank with ``gather_distributed`` although the ranks' seeds differ, and a ``state_dict``
  that resumes the sequence;
- both losses equal their papers' formulas written out here, and both implementations of the
  relaxation equal ``losses/reference.py``, in float64, with gradcheck;
- one spec per loss holds its defaults, and every user of a loss reads them there.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from helpers import losses_and_methods
from torch.autograd import gradcheck

import decorr_lite as dl
from decorr_lite import losses, toy, widgets
from decorr_lite.losses import reference
from decorr_lite.train import TrainConfig, build_loss

N, D = 24, 10
MODULES = {name: (spec.module, spec.loss_function) for name, spec in dl.LOSSES.items()}
METHOD_CASES = [
    dict(method="exact"),
    dict(method="gram"),
    dict(method="fft"),
    dict(method="fft", block_size=3),
    dict(method="fft", block_size=4, exponent=1),
    dict(method="exact", exponent=1),
]


def views(n=N, d=D, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    z1 = x + 0.3 * torch.randn(n, d, generator=g, dtype=dtype)
    z2 = x @ torch.randn(d, d, generator=g, dtype=dtype) / 3 + 0.3 * torch.randn(n, d, generator=g, dtype=dtype)
    return z1.requires_grad_(), z2.requires_grad_()


def value_and_grads(fn, z1, z2):
    value = fn(z1, z2)
    return (value, *torch.autograd.grad(value, (z1, z2)))


# ------------------------------------------------------------------------------ module == function


@pytest.mark.parametrize("loss", sorted(MODULES))
@pytest.mark.parametrize("options", METHOD_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_the_module_computes_its_function_with_the_permutation_it_drew(loss, options):
    module_class, function = MODULES[loss]
    module = module_class(**options, seed=5)
    z1, z2 = views()
    expected_permutation = torch.randperm(D, generator=torch.Generator().manual_seed(5))
    permutation = expected_permutation if options["method"] == "fft" else None
    got = value_and_grads(module, z1, z2)
    want = value_and_grads(lambda a, b: function(a, b, **options, permutation=permutation), z1, z2)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)
    terms = losses.loss_spec(loss).terms_function(z1, z2, **options, permutation=permutation)
    assert set(module.terms) == set(terms)
    for name, value in terms.items():
        assert not module.terms[name].requires_grad
        torch.testing.assert_close(module.terms[name], value.detach(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("loss", sorted(MODULES))
def test_weights_switch_terms_off_and_measure_all_terms_still_logs_them(loss):
    spec = losses.loss_spec(loss)
    first = spec.terms[0]
    module_class, function = MODULES[loss]
    z1, z2 = views(seed=1)
    off = module_class(**{first.coefficient: 0.0})
    torch.testing.assert_close(off(z1, z2), function(z1, z2, **{first.coefficient: 0.0}), rtol=1e-13, atol=1e-15)
    logging = module_class(**{first.coefficient: 0.0}, measure_all_terms=True)
    logging(z1, z2)
    assert set(logging.terms) == {term.name for term in spec.terms}
    torch.testing.assert_close(logging.terms[first.name], spec.terms_function(z1, z2)[first.name].detach())


def test_every_weight_zero_gives_a_zero_loss_without_a_graph():
    z1, z2 = views()
    loss = dl.VICRegLoss(0.0, 0.0, 0.0)(z1, z2)
    assert float(loss) == 0.0 and not loss.requires_grad


# ------------------------------------------------------------------------------ the permutation policy


def test_a_fresh_permutation_per_training_call_and_none_in_eval_mode():
    module = dl.VICRegLoss(method="fft", exponent=1, seed=3)
    drawn = [module.next_permutation(D, torch.device("cpu")) for _ in range(3)]
    generator = torch.Generator().manual_seed(3)
    for permutation in drawn:
        assert torch.equal(permutation, torch.randperm(D, generator=generator))
    assert not torch.equal(drawn[0], drawn[1])
    module.eval()
    assert module.next_permutation(D, torch.device("cpu")) is None
    z1, z2 = views()
    torch.testing.assert_close(module(z1, z2), dl.vicreg_loss(z1, z2, method="fft", exponent=1), rtol=1e-13, atol=0)
    module.train()
    assert dl.VICRegLoss(method="fft", permute=False).next_permutation(D, torch.device("cpu")) is None
    assert dl.VICRegLoss(method="exact").next_permutation(D, torch.device("cpu")) is None


def test_the_default_seed_comes_from_torch_s_global_generator():
    torch.manual_seed(11)
    first = dl.BarlowTwinsLoss(method="fft").next_permutation(D, torch.device("cpu"))
    torch.manual_seed(11)
    assert torch.equal(dl.BarlowTwinsLoss(method="fft").next_permutation(D, torch.device("cpu")), first)


def test_state_dict_round_trip_resumes_the_permutation_sequence():
    module = dl.BarlowTwinsLoss(method="fft", block_size=5, seed=8)
    module.next_permutation(D, torch.device("cpu"))
    state = module.state_dict()
    expected = [module.next_permutation(D, torch.device("cpu")) for _ in range(2)]
    resumed = dl.BarlowTwinsLoss(method="fft", block_size=5, seed=1)
    resumed.load_state_dict(state)
    assert resumed.seed == 8
    assert all(torch.equal(resumed.next_permutation(D, torch.device("cpu")), e) for e in expected)


@pytest.mark.parametrize("module_class", [spec.module for spec in dl.LOSSES.values()], ids=list(dl.LOSSES))
@pytest.mark.parametrize(
    "seed,error",
    [
        (1.5, TypeError),  # was silently 1
        (2.0, TypeError),
        ("3", TypeError),  # was 3
        (True, TypeError),  # was 1
        (-1, ValueError),  # was taken, and torch maps it to 2**64 - 1
        (2**64, ValueError),  # was torch's "Overflow when unpacking long long", naming nothing
        (np.float64(4.0), TypeError),
    ],
    ids=repr,
)
def test_a_seed_must_be_an_integer_that_torch_can_take(module_class, seed, error):
    with pytest.raises(error, match="seed must be") as info:
        module_class(method="fft", seed=seed)
    assert "seed=3" in str(info.value) or "2**64" in str(info.value)


@pytest.mark.parametrize("seed", [0, 7, np.int64(7), 2**64 - 1], ids=repr)
def test_integer_seeds_are_taken_as_ints(seed):
    module = dl.BarlowTwinsLoss(method="fft", seed=seed)
    assert module.seed == int(seed) and type(module.seed) is int
    expected = torch.randperm(D, generator=torch.Generator().manual_seed(int(seed)))
    assert torch.equal(module.next_permutation(D, torch.device("cpu")), expected)


@pytest.mark.parametrize("module_class", [spec.module for spec in dl.LOSSES.values()], ids=list(dl.LOSSES))
@pytest.mark.parametrize("name", ["permute", "check_finite", "gather_distributed", "measure_all_terms"])
@pytest.mark.parametrize("value", ["False", 0, None], ids=repr)
def test_a_module_s_switches_must_be_true_or_false(module_class, name, value):
    """permute="False" was True (bool of a non-empty string), the others were kept as given."""
    with pytest.raises(TypeError, match=f"{name} must be True or False"):
        module_class(**{name: value})
    assert getattr(module_class(**{name: np.bool_(False)}), name) is False


@pytest.mark.parametrize("module_class", [spec.module for spec in dl.LOSSES.values()], ids=list(dl.LOSSES))
@pytest.mark.parametrize(
    "block_size,error", [(0, ValueError), (-2, ValueError), (2.5, TypeError), ("8", TypeError)], ids=repr
)
def test_a_module_s_block_size_is_checked_when_it_is_made(module_class, block_size, error):
    """Not at the first call, a training step later: what d allows is still checked there."""
    with pytest.raises(error, match="block_size"):
        module_class(method="fft", block_size=block_size)


def _permutations_of_a_rank(world: int, rank: int) -> dict:
    torch.manual_seed(100 + rank)  # deliberately different global seeds per rank
    module = dl.VICRegLoss(method="fft", exponent=1, gather_distributed=True)  # its seed drawn from them
    drawn = [module.next_permutation(D, torch.device("cpu")) for _ in range(3)]
    z1, z2 = views(seed=rank)
    loss = module(z1[:6], z2[:6])  # the loss compares the ranks' arguments: it raises if they differ
    return {"seed": module.seed, "drawn": drawn, "loss": loss.detach()}


def test_every_rank_uses_the_same_permutation_whatever_its_seed(tmp_path):
    from test_distributed import _free_port, _worker

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), _permutations_of_a_rank), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["seed"] != ranks[1]["seed"]
    for a, b in zip(ranks[0]["drawn"], ranks[1]["drawn"]):
        assert torch.equal(a, b)
    assert torch.equal(ranks[0]["loss"], ranks[1]["loss"])


# ------------------------------------------------------------------------------ the official formulas


def official_vicreg(z1, z2, sim=25.0, std=25.0, cov=1.0):
    """The VICReg paper's Algorithm 1, written out."""
    n, d = z1.shape
    repr_loss = ((z1 - z2) ** 2).mean()
    x, y = z1 - z1.mean(dim=0), z2 - z2.mean(dim=0)
    std_x, std_y = torch.sqrt(x.var(dim=0) + 1e-4), torch.sqrt(y.var(dim=0) + 1e-4)
    std_loss = torch.mean(torch.relu(1 - std_x)) / 2 + torch.mean(torch.relu(1 - std_y)) / 2
    cov_x, cov_y = (x.T @ x) / (n - 1), (y.T @ y) / (n - 1)
    off = lambda m: m - torch.diag(torch.diag(m))  # noqa: E731
    cov_loss = off(cov_x).pow(2).sum() / d + off(cov_y).pow(2).sum() / d
    return sim * repr_loss + std * std_loss + cov * cov_loss


def official_barlow_twins(z1, z2, lambd=0.0051):
    """The Barlow Twins paper's Algorithm 1 (BatchNorm1d without affine, in training mode)."""
    n = z1.shape[0]
    bn = torch.nn.BatchNorm1d(z1.shape[1], affine=False, dtype=z1.dtype)
    c = bn(z1).T @ bn(z2) / n
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = (c - torch.diag(torch.diagonal(c))).pow(2).sum()
    return on_diag + lambd * off_diag


@pytest.mark.parametrize("method", ["exact", "gram"])
def test_the_modules_equal_the_papers_formulas(method):
    z1, z2 = views(n=40, d=12, seed=4)
    for module, official in (
        (dl.VICRegLoss(method=method), official_vicreg),
        (dl.BarlowTwinsLoss(method=method), official_barlow_twins),
    ):
        got, want = value_and_grads(module, z1, z2), value_and_grads(official, z1, z2)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("impl", ["fused", "modular"])
@pytest.mark.parametrize("block_size", [None, 1, 3, 5])  # 5 divides d = 10, 3 does not
@pytest.mark.parametrize("exponent", [1, 2])
@pytest.mark.parametrize("permute", [False, True])
def test_both_implementations_of_the_relaxation_equal_the_reference(impl, block_size, exponent, permute):
    z1, z2 = views(seed=5)
    permutation = torch.randperm(D, generator=torch.Generator().manual_seed(2)) if permute else None
    options = dict(method="fft", block_size=block_size, exponent=exponent, permutation=permutation, impl=impl)

    def library_covariance(a, b):
        return dl.vicreg_terms(a, b, terms="covariance", **options)["covariance"]

    def reference_covariance(a, b):
        return sum(reference.relaxed_covariance(z, block_size, exponent, permutation) for z in (a, b))

    def library_off_diagonal(a, b):
        return dl.barlow_twins_terms(a, b, **options)["off_diagonal"]

    def reference_off_diagonal(a, b):
        return reference.relaxed_barlow_twins_off_diagonal(a, b, block_size, exponent, permutation)

    for library, ref in ((library_covariance, reference_covariance), (library_off_diagonal, reference_off_diagonal)):
        for a, b in zip(value_and_grads(library, z1, z2), value_and_grads(ref, z1, z2)):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-14)


def test_the_reference_is_differentiable_and_b_1_is_exact():
    z1, z2 = (z.detach()[:12, :6].requires_grad_() for z in views(seed=6))
    assert gradcheck(lambda a: reference.relaxed_covariance(a, 4, 2), (z1,))
    assert gradcheck(lambda a, b: reference.relaxed_barlow_twins_off_diagonal(a, b, 3, 2), (z1, z2))
    exact = dl.barlow_twins_terms(z1, z2)["off_diagonal"]
    torch.testing.assert_close(reference.relaxed_barlow_twins_off_diagonal(z1, z2, 1, 2), exact, rtol=1e-12, atol=0)


@pytest.mark.parametrize("loss, method", losses_and_methods())
def test_gradcheck_of_each_module(loss, method):
    options = dict(method=method, block_size=4 if method == "fft" else None)
    # permute=False: gradcheck evaluates the loss many times, and each call would draw a new permutation
    module = MODULES[loss][0](**options, permute=False)
    z1, z2 = (z.detach()[:10, :6].requires_grad_() for z in views(seed=7))
    assert gradcheck(module, (z1, z2))


def test_inputs_of_more_than_two_dimensions_are_refused_with_both_ways_to_flatten():
    """lightly's losses accept (batch, ..., dim); these refuse it, since which dimension holds the
    samples is the caller's choice, and the message gives both."""
    z = torch.randn(8, 3, 5)
    for module in (dl.VICRegLoss(), dl.BarlowTwinsLoss()):
        with pytest.raises(ValueError, match=r"flatten\(0, -2\) makes every token or patch a sample.*flatten\(1\)"):
            module(z, z)
    assert torch.isfinite(dl.VICRegLoss()(z.flatten(0, -2), z.flatten(0, -2)))


# ------------------------------------------------------------------------------ the impl switch


def test_impl_fused_where_it_cannot_apply_says_why_and_an_unknown_impl_is_refused():
    z1, z2 = views()
    with pytest.raises(ValueError, match='impl="fused" needs method="fft"'):
        dl.vicreg_loss(z1, z2, impl="fused")
    with pytest.raises(ValueError, match="impl must be one of"):
        dl.barlow_twins_loss(z1, z2, impl="fast")
    with pytest.raises(ValueError, match="impl must be one of"):
        dl.VICRegLoss(impl="fast")


# ------------------------------------------------------------------------------ one spec per loss


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_each_default_is_written_once_in_the_spec_and_read_everywhere(name):
    spec = losses.loss_spec(name)
    for function in (spec.loss_function, spec.module.__init__):
        parameters = inspect.signature(function).parameters
        for coefficient, default in spec.defaults.items():
            assert parameters[coefficient].default == default, (function, coefficient)
    config = TrainConfig(loss=name)
    assert dict(config.weights) == spec.defaults
    assert widgets.term_controls(name) == {t.coefficient: (t.label, t.default) for t in spec.terms}
    module = build_loss(config)
    assert isinstance(module, spec.module) and module.weights == spec.weights(spec.defaults)
    assert set(spec.terms_function(*views())) == {t.name for t in spec.terms}


def test_an_unknown_loss_is_refused_everywhere_with_the_known_names():
    for call in (
        lambda: losses.loss_spec("simclr"),
        lambda: toy.train_toy(loss="simclr"),
        lambda: widgets.toy_panel("simclr"),
        lambda: TrainConfig(loss="simclr"),
    ):
        with pytest.raises(ValueError, match="vicreg"):
            call()


def test_the_toy_trains_any_registered_loss(monkeypatch):
    """A third loss, registered as docs/extending.md says, is trained by code that never names it."""
    from decorr_lite.losses._spec import LossSpec, Term

    def only_variance_terms(z1, z2, **_):
        return {"variance": dl.vicreg_terms(z1, z2, terms="variance", check_finite=False)["variance"]}

    spec = LossSpec(
        name="variance-only",
        title="variance only",
        terms=(Term("variance", "std_coeff", 1.0, "variance"),),
        terms_function=only_variance_terms,
        loss_function=dl.vicreg_loss,
        module=dl.VICRegLoss,
        methods=("exact",),
    )
    monkeypatch.setitem(losses.LOSSES, "variance-only", spec)
    run = toy.train_toy(loss="variance-only", steps=20)
    assert list(run.history) == ["step", "median_std", "effective_rank", "variance"]
    with pytest.raises(ValueError, match="std_coeff"):
        toy.train_toy(loss="variance-only", cov_coeff=1.0)
