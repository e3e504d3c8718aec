"""decorr_lite.losses.relaxed: the two normalisations of the relaxed penalty, against the exact
terms written out here in float64, and large exponents, whose sums are normalised before the
power."""

from __future__ import annotations

import pytest
import torch

import decorr_lite as dl
from decorr_lite.losses import relaxed

# every loss that has the relaxation
LOSSES = {name: spec.loss_function for name, spec in dl.LOSSES.items() if "fft" in spec.methods}


def _views(n=64, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("d", [2, 5, 12, 32])
def test_vicreg_at_block_size_1_is_2_over_d_minus_1_times_the_exact_covariance_term(d):
    z, _ = _views(d=d)
    zc = z - z.mean(0)
    cov = zc.T @ zc / (z.shape[0] - 1)
    exact = (cov.square().sum() - cov.diagonal().square().sum()) / d  # (1/d) sum_{i != j} K_ij^2
    relaxed_b1 = dl.covariance_loss(z, method="fft", block_size=1)
    torch.testing.assert_close(relaxed_b1, 2 / (d - 1) * exact, rtol=1e-12, atol=0)
    torch.testing.assert_close(dl.covariance_loss(z), exact, rtol=1e-12, atol=0)


@pytest.mark.parametrize("d", [2, 5, 12])
def test_barlow_twins_at_block_size_1_is_the_exact_off_diagonal_term(d):
    z1, z2 = _views(d=d)
    exact = dl.barlow_twins_terms(z1, z2, terms="off_diagonal")["off_diagonal"]
    relaxed_b1 = dl.barlow_twins_terms(z1, z2, terms="off_diagonal", method="fft", block_size=1)["off_diagonal"]
    torch.testing.assert_close(relaxed_b1, exact, rtol=1e-12, atol=0)


def test_the_two_normalisations_of_the_same_power_sums():
    pairs = torch.tensor([[1.0, 2.0, 3.0], [2.0, 5.0, 7.0], [3.0, 7.0, 11.0]], dtype=torch.float64)
    diagonal = torch.tensor([0.5, 0.25, 0.125], dtype=torch.float64)
    # VICReg: mean over the 3 diagonal blocks + twice the mean over the 3 pairs u < v
    assert relaxed.mean_over_block_pairs(pairs, diagonal).item() == pytest.approx(0.875 / 3 + 2 * (2 + 3 + 7) / 3)
    # Barlow Twins: every shift of every ordered pair of distinct blocks, plus the diagonal blocks'
    assert relaxed.sum_over_block_pairs(pairs, diagonal).item() == pytest.approx(0.875 + 2 * (2 + 3 + 7))
    one = torch.ones(1, 1, dtype=torch.float64)
    assert (
        relaxed.mean_over_block_pairs(one, diagonal[:1]).item()
        == relaxed.sum_over_block_pairs(one, diagonal[:1]).item()
    )


def test_vicreg_s_scale_uses_the_last_block_s_true_size():
    scale = relaxed.vicreg_block_scale(n=11, d=10, block_size=4, like=torch.zeros((), dtype=torch.float64))
    sizes = torch.tensor([4.0, 4.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(scale, 1 / (10 * torch.minimum(sizes[:, None], sizes[None, :])))
    torch.testing.assert_close(
        relaxed.barlow_twins_block_scale(n=11, d=10, block_size=4, like=scale),
        torch.full((3, 3), 1 / 11, dtype=torch.float64),
    )


# --------------------------------------------------------------------------- large exponents


def test_barlow_fft_with_a_large_integer_exponent():
    """n ** exponent on Python ints overflowed (OverflowError: int too big to convert) at q >= 8."""
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(256, 16, generator=g), torch.randn(256, 16, generator=g)
    as_int = dl.barlow_twins_loss(z1, z2, method="fft", exponent=8)
    as_float = dl.barlow_twins_loss(z1, z2, method="fft", exponent=8.0)
    torch.testing.assert_close(as_int, as_float, rtol=0, atol=0)
    torch.testing.assert_close(as_int, dl.barlow_twins_loss(z1.double(), z2.double(), method="fft", exponent=8).float())


# the decorrelation term of each loss, and what its relaxation at b = 1 is worth against the exact
# term at d features: VICReg's mean over block pairs is 2 / (d - 1) of it, Barlow Twins' sum all of it
DECORRELATION = {
    "vicreg": (lambda *a, **k: dl.vicreg_terms(*a, terms="covariance", **k)["covariance"], lambda d: 2 / (d - 1)),
    "barlow": (lambda *a, **k: dl.barlow_twins_terms(*a, terms="off_diagonal", **k)["off_diagonal"], lambda d: 1.0),
}


@pytest.mark.parametrize("loss", sorted(DECORRELATION))
@pytest.mark.parametrize("exponent", [16, 24])
def test_large_exponents_in_float32_match_exact(loss, exponent):
    """The sums were raised to q before they were normalised: NaN in float32 from q = 16. With
    b = 1 every wrapped diagonal is one entry, so the relaxed term is the exact one times the
    relaxation's normalisation at b = 1, for any q."""
    g = torch.Generator().manual_seed(6)
    z1 = torch.randn(256, 12, generator=g)
    z2 = z1 + 0.5 * torch.randn(256, 12, generator=g)
    term, factor = DECORRELATION[loss]
    relaxed = term(z1, z2, method="fft", block_size=1, exponent=exponent)
    exact = term(z1.double(), z2.double(), exponent=exponent)
    assert torch.isfinite(relaxed) and exact > 0
    torch.testing.assert_close(relaxed.double(), factor(12) * exact, rtol=1e-4, atol=0)
