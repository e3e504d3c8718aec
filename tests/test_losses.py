"""Every loss term, every method, against the brute-force formulas of reference.py.

float64 to 1e-10 relative, float32 to 1e-4 relative; block sizes that divide d and that do
not, both exponents, with and without a feature permutation, n < d and n > d.
"""

import numpy as np
import pytest
import reference as ref
import torch

import decorr_lite as dl

D = 12
BLOCK_SIZES = [1, 2, 3, 4, 5, 7, 11, 12]  # 3, 4, 12 divide d = 12; 5, 7, 11 do not
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def views(n, d=D, dtype=torch.float64, seed=0):
    """Two correlated views with feature correlations and uneven scales, so nothing is trivial."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5 + torch.eye(d, dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ mix
    z1 = x + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    z2 = x + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    scale = torch.linspace(0.3, 2.0, d, dtype=torch.float64)
    return (z1 * scale).to(dtype), (z2 * scale).to(dtype)


def perm_for(d, use, seed=1):
    return torch.randperm(d, generator=torch.Generator().manual_seed(seed)) if use else None


def close(actual, expected, dtype):
    assert isinstance(actual, torch.Tensor) and actual.dim() == 0
    np.testing.assert_allclose(float(actual), expected, rtol=TOL[dtype], atol=0)


DTYPES = [torch.float64, torch.float32]
SIZES = [5, 20]  # n < d and n > d


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_simple_terms(dtype, n):
    z1, z2 = views(n, dtype=dtype)
    a, b = z1.double().numpy(), z2.double().numpy()
    close(dl.invariance_loss(z1, z2), ref.invariance(a, b), dtype)
    close(dl.variance_loss(z1), ref.variance(a), dtype)
    close(dl.variance_loss(z1, gamma=2.0, eps=1e-2), ref.variance(a, gamma=2.0, eps=1e-2), dtype)
    c = dl.cross_correlation(z1, z2)
    np.testing.assert_allclose(c.double().numpy(), ref.cross_correlation(a, b), rtol=TOL[dtype], atol=TOL[dtype])


def test_cross_correlation_matches_batchnorm():
    """The standardisation is BatchNorm1d(affine=False) in training mode, as the official code."""
    z1, z2 = views(16)
    bn = torch.nn.BatchNorm1d(D, affine=False).double().train()
    expected = bn(z1).T @ bn(z2) / 16
    torch.testing.assert_close(dl.cross_correlation(z1, z2), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("q", [1, 2])
def test_exact_methods(dtype, n, q):
    z1, z2 = views(n, dtype=dtype)
    a, b = z1.double().numpy(), z2.double().numpy()
    methods = ["exact", "gram"] if q == 2 else ["exact"]
    for method in methods:
        close(dl.covariance_loss(z1, method=method, exponent=q), ref.covariance_exact(a, q), dtype)
        close(dl.barlow_twins_loss(z1, z2, method=method, exponent=q), ref.barlow_exact(a, b, q=q), dtype)
        close(dl.vicreg_loss(z1, z2, method=method, exponent=q), ref.vicreg(a, b, q=q), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_circular_correlation(dtype, block_size):
    z1, z2 = views(7, dtype=dtype)
    s = dl.circular_correlation(z1, z2, block_size)
    g = -(-D // block_size)
    assert s.shape == (g, g, block_size)
    expected = ref.circular(z1.double().numpy(), z2.double().numpy(), block_size)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(s.double().numpy(), expected, rtol=0, atol=TOL[dtype] * scale)


def test_circular_correlation_block_one_is_the_matrix_and_none_is_one_block():
    z1, z2 = views(6)
    torch.testing.assert_close(dl.circular_correlation(z1, z2, 1)[:, :, 0], z1.T @ z2)
    full = dl.circular_correlation(z1, z2)
    assert full.shape == (1, 1, D)
    # shift 0 of the single block is the trace of z1.T @ z2
    torch.testing.assert_close(full[0, 0, 0], torch.trace(z1.T @ z2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("q", [1, 2])
@pytest.mark.parametrize("use_perm", [False, True])
def test_relaxed_losses(dtype, n, block_size, q, use_perm):
    z1, z2 = views(n, dtype=dtype)
    perm = perm_for(D, use_perm)
    a, b = z1.double().numpy(), z2.double().numpy()
    p = None if perm is None else perm.numpy()
    kw = dict(method="fft", block_size=block_size, exponent=q, permutation=perm)
    close(dl.covariance_loss(z1, **kw), ref.covariance_relaxed(a, q, block_size, p), dtype)
    close(dl.barlow_twins_loss(z1, z2, **kw), ref.barlow_relaxed(a, b, q=q, b=block_size, perm=p), dtype)
    close(
        dl.vicreg_loss(z1, z2, **kw),
        ref.vicreg(a, b, q=q, b=block_size, perm=p, relaxed=True),
        dtype,
    )


@pytest.mark.parametrize("q", [1, 2])
def test_relaxed_barlow_with_block_one_equals_exact(q):
    z1, z2 = views(9)
    exact = dl.barlow_twins_loss(z1, z2, exponent=q)
    relaxed = dl.barlow_twins_loss(z1, z2, method="fft", block_size=1, exponent=q, permutation=perm_for(D, True))
    torch.testing.assert_close(relaxed, exact, rtol=1e-12, atol=0)


@pytest.mark.parametrize("n", SIZES)
def test_gram_equals_exact(n):
    for dtype in DTYPES:
        z1, z2 = views(n, d=40, dtype=dtype)
        for loss in (spec.loss_function for spec in dl.LOSSES.values() if "gram" in spec.methods):
            close(loss(z1, z2, method="gram"), float(loss(z1, z2, method="exact")), dtype)


def test_exact_methods_ignore_the_permutation():
    z1, z2 = views(8)
    perm = perm_for(D, True)
    for spec in dl.LOSSES.values():
        for method, loss in ((m, spec.loss_function) for m in spec.methods if m != "fft"):
            torch.testing.assert_close(loss(z1, z2, method=method, permutation=perm), loss(z1, z2, method=method))


def test_relaxed_loss_depends_on_the_permutation():
    """The permutation changes which entries share a wrapped diagonal, so the value changes."""
    z1, z2 = views(8)
    values = {float(dl.covariance_loss(z1, method="fft", permutation=perm_for(D, True, seed=s))) for s in range(4)}
    assert len(values) == 4


def test_zero_coefficients_switch_terms_off():
    z1, z2 = views(10)
    a, b = z1.numpy(), z2.numpy()
    assert float(dl.vicreg_loss(z1, z2, sim_coeff=0, std_coeff=0, cov_coeff=0)) == 0.0
    close(dl.vicreg_loss(z1, z2, std_coeff=0, cov_coeff=0), 25 * ref.invariance(a, b), torch.float64)
    close(dl.vicreg_loss(z1, z2, sim_coeff=0, cov_coeff=0), 25 * (ref.variance(a) + ref.variance(b)) / 2, torch.float64)
    close(
        dl.vicreg_loss(z1, z2, sim_coeff=0, std_coeff=0),
        ref.covariance_exact(a) + ref.covariance_exact(b),
        torch.float64,
    )
    c = ref.cross_correlation(a, b)
    close(dl.barlow_twins_loss(z1, z2, lambd=0), sum((1 - np.diag(c)) ** 2), torch.float64)


def test_single_feature_has_no_off_diagonal():
    z1, z2 = views(6, d=1)
    for method in dl.METHODS:
        assert float(dl.covariance_loss(z1, method=method)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    z1, z2 = views(16, dtype=dtype)
    expected = ref.barlow_relaxed(z1.double().numpy(), z2.double().numpy(), b=5)
    value = dl.barlow_twins_loss(z1, z2, method="fft", block_size=5)
    # standardisation runs in half precision: a loose check that the path works and is sane
    assert torch.isfinite(value)
    assert float(value) == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("method", dl.METHODS)
def test_terms_sum_to_the_losses(method):
    z1, z2 = views(20)
    kw = dict(method=method, block_size=None if method != "fft" else 5, permutation=perm_for(D, method == "fft"))
    t = dl.vicreg_terms(z1, z2, **kw)
    assert set(t) == {"invariance", "variance", "covariance"}
    close(
        dl.vicreg_loss(z1, z2, sim_coeff=3.0, std_coeff=2.0, cov_coeff=0.5, **kw),
        float(3 * t["invariance"] + 2 * t["variance"] + 0.5 * t["covariance"]),
        torch.float64,
    )
    assert set(dl.vicreg_terms(z1, z2, terms=["variance"], **kw)) == {"variance"}
    b = dl.barlow_twins_terms(z1, z2, **kw)
    close(
        dl.barlow_twins_loss(z1, z2, lambd=0.3, **kw), float(b["on_diagonal"] + 0.3 * b["off_diagonal"]), torch.float64
    )
    assert set(dl.barlow_twins_terms(z1, z2, terms="on_diagonal", **kw)) == {"on_diagonal"}
    with pytest.raises(ValueError, match="terms"):
        dl.barlow_twins_terms(z1, z2, terms=["off_diagonal", "whitening"])
    with pytest.raises(ValueError, match="terms"):
        dl.vicreg_terms(z1, z2, terms=["variance", "whitening"])


# --------------------------------------------------------------------------- terms and signs


def test_terms_accepts_a_single_name():
    """A string used to be iterated character by character ("i", "n", ...: unknown terms)."""
    z1, z2 = torch.randn(20, 6), torch.randn(20, 6)
    assert list(dl.vicreg_terms(z1, z2, terms="invariance")) == ["invariance"]
    torch.testing.assert_close(
        dl.vicreg_terms(z1, z2, terms="variance")["variance"], dl.vicreg_terms(z1, z2, terms=["variance"])["variance"]
    )


def test_gram_penalty_is_never_negative():
    """The Gram route subtracts the squared variances from a total that holds them: for exactly
    decorrelated input (d = 1: no off-diagonal entry at all) rounding could leave it below 0."""
    values = []
    for seed in range(40):
        z = 100 * torch.randn(512, 1, generator=torch.Generator().manual_seed(seed))
        values += [
            float(dl.covariance_loss(z, method="gram")),
            float(dl.barlow_twins_terms(z, z * 2, method="gram")["off_diagonal"]),
        ]
    assert min(values) >= 0
