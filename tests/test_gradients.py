"""Autograd: gradcheck in float64 for every differentiable path, and training really descends."""

import pytest
import torch
from helpers import losses_and_methods
from torch.autograd import gradcheck

import decorr_lite as dl

N, D = 6, 7  # d prime, so b = 3 does not divide it and the last block is padded


def leaf(seed, scale=0.5, n=N, d=D):
    # scale 0.5 keeps every std well below the margin 1, away from the hinge's kink
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_()


PERM = torch.randperm(D, generator=torch.Generator().manual_seed(3))
CONFIGS = [
    dict(method="exact"),
    dict(method="exact", exponent=1),
    dict(method="gram"),
    dict(method="fft"),
    dict(method="fft", block_size=3, permutation=PERM),
    dict(method="fft", block_size=3, exponent=1),
    dict(method="fft", block_size=1),
]
IDS = [",".join(f"{k}={v if k != 'permutation' else 'perm'}" for k, v in c.items()) for c in CONFIGS]


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_gradcheck_combined_losses(config):
    z1, z2 = leaf(0), leaf(1)
    assert gradcheck(lambda a, b: dl.vicreg_loss(a, b, **config), (z1, z2))
    assert gradcheck(lambda a, b: dl.barlow_twins_loss(a, b, **config), (z1, z2))


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_gradcheck_covariance(config):
    assert gradcheck(lambda z: dl.covariance_loss(z, **config), (leaf(2),))


def test_gradcheck_other_terms():
    z1, z2 = leaf(4), leaf(5)
    assert gradcheck(dl.invariance_loss, (z1, z2))
    assert gradcheck(dl.variance_loss, (z1,))
    assert gradcheck(dl.cross_correlation, (z1, z2))
    for b in (1, 3, D):
        assert gradcheck(lambda a, c, b=b: dl.circular_correlation(a, c, b), (z1, z2))


@pytest.mark.parametrize("loss, method", losses_and_methods())
def test_sgd_decreases_the_loss(loss, method):
    """A linear encoder on Gaussian data with noisy views: a few SGD steps lower the loss."""
    torch.manual_seed(0)
    n, d_in, d = 64, 16, 16
    x = torch.randn(n, d_in)
    encoder = torch.nn.Linear(d_in, d)
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.02 if loss == "vicreg" else 0.2)
    fn = dl.loss_spec(loss).loss_function
    views = x + 0.1 * torch.randn(n, d_in), x + 0.1 * torch.randn(n, d_in)
    block = 4 if method == "fft" else None
    fixed_perm = torch.randperm(d)

    def value(permutation):
        return fn(encoder(views[0]), encoder(views[1]), method=method, block_size=block, permutation=permutation)

    with torch.no_grad():
        before = float(value(fixed_perm))
    for _ in range(30):
        optimizer.zero_grad()
        # a fresh permutation per step, as training with the relaxation does
        value(torch.randperm(d)).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(value(fixed_perm))
    assert after < 0.9 * before, (before, after)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_gradcheck_of_the_downscaled_standardisation(monkeypatch, config):
    """Barlow Twins' path for inputs whose variance would overflow (``losses/_magnitude.py``),
    made to run at scale 1 by counting every variance as beyond range."""
    from decorr_lite.losses import _magnitude

    monkeypatch.setattr(_magnitude, "_LIMIT", {torch.float32: 0.0, torch.float64: 0.0})
    z1, z2 = ((4 * leaf(seed)).detach().requires_grad_() for seed in (6, 7))  # largest |entries| > 1: downscaled
    assert gradcheck(lambda a, b: dl.barlow_twins_loss(a, b, **config), (z1, z2))
    assert gradcheck(dl.cross_correlation, (z1, z2))


# --------------------------------------------------------------------------- higher-order derivatives


@pytest.mark.parametrize(
    "call",
    [
        lambda z1, z2: dl.barlow_twins_loss(z1, z2),
        lambda z1, z2: dl.barlow_twins_loss(z1, z2, method="gram"),
        lambda z1, z2: dl.barlow_twins_loss(z1, z2, method="fft"),
        lambda z1, z2: dl.vicreg_loss(z1, z2, method="fft"),
        lambda z1, z2: dl.vicreg_loss(z1, z2, method="fft", block_size=3),
    ],
)
def test_higher_order_derivatives_are_refused_with_a_clear_error(call):
    z1 = torch.randn(16, 6, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(16, 6, dtype=torch.float64)
    with pytest.raises(NotImplementedError, match="first derivatives only"):
        torch.autograd.grad(call(z1, z2), z1, create_graph=True)
    with pytest.raises(NotImplementedError, match="first derivatives only"):
        torch.func.grad(lambda z: call(z, z2))(z1.detach())


def test_vicreg_exact_supports_higher_order_derivatives():
    z1 = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, b: dl.vicreg_loss(a, b, check_finite=False), (z1, z2))
    torch.testing.assert_close(
        torch.func.grad(lambda z: dl.vicreg_loss(z, z2.detach(), check_finite=False))(z1.detach()),
        torch.autograd.grad(dl.vicreg_loss(z1, z2), z1)[0],
    )
