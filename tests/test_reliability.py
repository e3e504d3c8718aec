"""Defects found by an adversarial pass over the library, one test (or a few) per defect.

Each test reproduces a wrong answer given without a word, or a state that stayed broken until
someone deleted files by hand, and checks the fix. Distributed mismatches are tested with real
processes in ``test_distributed.py``; the data and run caches further down.
"""

from __future__ import annotations

import pytest
import torch

import decorr_lite as dl

LOSSES = {"vicreg": dl.vicreg_loss, "barlow": dl.barlow_twins_loss}
METHODS = {"exact": {}, "gram": {}, "fft b=d": {"method": "fft"}, "fft b=8": {"method": "fft", "block_size": 8},
           "fft b=d q=1": {"method": "fft", "exponent": 1}}


def _kwargs(name: str) -> dict:
    return {"method": name, **METHODS[name]} if name in ("exact", "gram") else dict(METHODS[name])


# --------------------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [1.0, 50.0])
@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("method", list(METHODS))
def test_losses_inside_autocast_equal_the_float32_loss(dtype, scale, loss, method):
    """Embeddings made inside a CPU autocast region (half precision), and the loss called there
    too: the loss is float32, equals the float32 loss of the same embeddings to 1e-5, and its
    gradients are finite: with respect to the embeddings, in their dtype, and (bf16, whose range
    is float32's) through the layer. In fp16 the layer's own backward can overflow at scale 50
    (a sum over the batch of large gradients): that is what a gradient scaler is for.
    (Before: gram overflowed in float16 and the statistics ran in half precision.)"""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 32, generator=g)
    layer = torch.nn.Linear(32, 64)
    with torch.autocast("cpu", dtype=dtype):
        z1, z2 = layer(x) * scale, layer(x + 0.3 * torch.randn(x.shape, generator=g)) * scale
        assert z1.dtype == dtype
        value = LOSSES[loss](z1, z2, **_kwargs(method))
    f1, f2 = (z.detach().float().requires_grad_() for z in (z1, z2))
    reference = LOSSES[loss](f1, f2, **_kwargs(method))
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, reference, rtol=1e-5, atol=0)
    z1.retain_grad()
    value.backward()
    reference.backward()
    assert z1.grad.dtype == dtype and torch.isfinite(z1.grad).all()
    torch.testing.assert_close(z1.grad.float(), f1.grad, rtol=1e-2, atol=1e-2 * float(f1.grad.abs().max()))
    if dtype == torch.bfloat16:
        assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0


def test_gram_in_float16_is_finite():
    """n = d = 32 with unit-variance data: the squared Gram entries overflowed float16 (inf)."""
    z = torch.randn(32, 32, generator=torch.Generator().manual_seed(1))
    half = dl.covariance_loss(z.half(), method="gram")
    assert torch.isfinite(half)
    torch.testing.assert_close(half, dl.covariance_loss(z.half().float(), method="exact"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_function_returns_float32_and_gradients_in_the_input_dtype(dtype):
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(40, 12, generator=g).to(dtype).requires_grad_()
    z2 = torch.randn(40, 12, generator=g).to(dtype).requires_grad_()
    outputs = [
        dl.invariance_loss(z1, z2), dl.variance_loss(z1), dl.covariance_loss(z1, method="gram"),
        dl.covariance_loss(z1, method="fft", block_size=5), dl.cross_correlation(z1, z2).sum(),
        dl.circular_correlation(z1, z2, 4).sum(), *dl.vicreg_terms(z1, z2, method="fft").values(),
        *dl.barlow_twins_terms(z1, z2, method="gram").values(), dl.vicreg_loss(z1, z2, sim_coeff=0, std_coeff=0, cov_coeff=0),
    ]
    assert [o.dtype for o in outputs] == [torch.float32] * len(outputs)
    sum(o for o in outputs if o.requires_grad).backward()
    assert z1.grad.dtype == dtype and z2.grad.dtype == dtype and torch.isfinite(z1.grad.float()).all()


def test_float64_stays_float64_under_autocast():
    z1, z2 = (torch.randn(30, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(s)) for s in (3, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = [dl.vicreg_loss(z1, z2, method=m) for m in ("exact", "gram", "fft")]
    assert all(v.dtype == torch.float64 for v in values)
    torch.testing.assert_close(values[0], dl.vicreg_loss(z1, z2), rtol=1e-14, atol=0)


# --------------------------------------------------------------------------- large exponents


def test_barlow_fft_with_a_large_integer_exponent():
    """n ** exponent on Python ints overflowed (OverflowError: int too big to convert) at q >= 8."""
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(256, 16, generator=g), torch.randn(256, 16, generator=g)
    as_int = dl.barlow_twins_loss(z1, z2, method="fft", exponent=8)
    as_float = dl.barlow_twins_loss(z1, z2, method="fft", exponent=8.0)
    torch.testing.assert_close(as_int, as_float, rtol=0, atol=0)
    torch.testing.assert_close(as_int, dl.barlow_twins_loss(z1.double(), z2.double(), method="fft", exponent=8).float())


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("exponent", [16, 24])
def test_large_exponents_in_float32_match_exact(loss, exponent):
    """The sums were raised to q before they were normalised: NaN in float32 from q = 16. With
    b = 1 every wrapped diagonal is one entry, so the relaxation must equal the exact loss."""
    g = torch.Generator().manual_seed(6)
    z1 = torch.randn(256, 12, generator=g)
    z2 = z1 + 0.5 * torch.randn(256, 12, generator=g)
    relaxed = LOSSES[loss](z1, z2, method="fft", block_size=1, exponent=exponent)
    exact = LOSSES[loss](z1.double(), z2.double(), exponent=exponent)
    assert torch.isfinite(relaxed)
    torch.testing.assert_close(relaxed.double(), exact, rtol=1e-4, atol=1e-30)


# --------------------------------------------------------------------------- smaller items


def test_terms_accepts_a_single_name():
    """A string used to be iterated character by character ("i", "n", ...: unknown terms)."""
    z1, z2 = torch.randn(20, 6), torch.randn(20, 6)
    assert list(dl.vicreg_terms(z1, z2, terms="invariance")) == ["invariance"]
    torch.testing.assert_close(dl.vicreg_terms(z1, z2, terms="variance")["variance"],
                               dl.vicreg_terms(z1, z2, terms=["variance"])["variance"])


@pytest.mark.parametrize("make", [lambda: torch.randn(20, 6).to_sparse(), lambda: torch.randn(20, 6, device="meta")])
def test_sparse_and_meta_tensors_get_a_clear_error(make):
    with pytest.raises(TypeError, match="dense tensors on a real device"):
        dl.vicreg_loss(make(), make())


def test_gram_penalty_is_never_negative():
    """The Gram route subtracts the squared variances from a total that holds them: for exactly
    decorrelated input (d = 1: no off-diagonal entry at all) rounding could leave it below 0."""
    values = []
    for seed in range(40):
        z = 100 * torch.randn(512, 1, generator=torch.Generator().manual_seed(seed))
        values += [float(dl.covariance_loss(z, method="gram")), float(dl.barlow_twins_terms(z, z * 2, method="gram")["off_diagonal"])]
    assert min(values) >= 0


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
    torch.testing.assert_close(torch.func.grad(lambda z: dl.vicreg_loss(z, z2.detach(), check_finite=False))(z1.detach()),
                               torch.autograd.grad(dl.vicreg_loss(z1, z2), z1)[0])
