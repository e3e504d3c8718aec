"""decorr_lite.diagnostics on constructed embeddings whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from decorr_lite import diagnostics as dg


def orthonormal(n, k, seed=0):
    """(n, k) with orthonormal, zero-mean columns."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g, dtype=torch.float64)
    x = x - x.mean(dim=0)
    return torch.linalg.qr(x).Q


def equal_spectrum(n, d, k, scale=1.0, seed=0):
    """(n, d) centred embeddings with exactly k equal non-zero singular values."""
    left = orthonormal(n, k, seed)
    right = orthonormal(d, k, seed + 1).T  # (k, d) orthonormal rows
    return scale * left @ right


def test_identity_like_cloud_has_full_rank():
    d = 16
    eye = torch.eye(d, dtype=torch.float64)
    z = torch.cat([eye, -eye])  # zero mean, singular values all sqrt(2)
    assert dg.effective_rank(z) == pytest.approx(d, rel=1e-5)
    np.testing.assert_allclose(dg.singular_spectrum(z).numpy(), math.sqrt(2), rtol=1e-12)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_rank_k_cloud_has_rank_k(k):
    z = equal_spectrum(200, 32, k)
    assert dg.effective_rank(z) == pytest.approx(k, rel=1e-4)


def test_rank_one_outer_product():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(100, 1, generator=g) * torch.randn(1, 40, generator=g) + 5.0  # plus a constant
    assert dg.effective_rank(z) == pytest.approx(1.0, abs=1e-3)


def test_isotropic_gaussian_is_close_to_full_rank():
    z = torch.randn(20000, 32, generator=torch.Generator().manual_seed(0))
    assert 0.97 * 32 < dg.effective_rank(z) <= 32


def test_effective_rank_is_scale_free_and_zero_for_a_point():
    z = torch.randn(500, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert dg.effective_rank(1e-4 * z) == pytest.approx(dg.effective_rank(z), rel=1e-9)
    assert dg.effective_rank(torch.ones(10, 4)) == 0.0


def test_spectrum_and_std_against_numpy():
    z = torch.randn(50, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * torch.arange(1, 9)
    x = z.numpy()
    np.testing.assert_allclose(
        dg.singular_spectrum(z).numpy(), np.linalg.svd(x - x.mean(0), compute_uv=False), rtol=1e-12
    )
    np.testing.assert_allclose(dg.std_per_dim(z).numpy(), x.std(axis=0, ddof=1), rtol=1e-12)
    # RankMe straight from its definition
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    p = s / s.sum() + 1e-7
    assert dg.effective_rank(z) == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-12)


def test_collapse_report_verdicts():
    g = torch.Generator().manual_seed(4)
    healthy = torch.randn(2000, 64, generator=g, dtype=torch.float64)
    report = dg.collapse_report(healthy)
    assert report.verdict == "no collapse" and report.median_std == pytest.approx(1, abs=0.05)

    shrunk = 0.01 * healthy  # complete collapse: a point, up to noise
    report = dg.collapse_report(shrunk)
    assert report.verdict == "complete collapse"
    assert report.fraction_below_margin == 1.0
    # the effective rank alone would miss it: it is scale-free
    assert report.effective_rank > 0.9 * 64

    flat = equal_spectrum(2000, 64, 2, scale=math.sqrt(2000 * 32))  # std ~1, but rank 2
    report = dg.collapse_report(flat)
    assert report.verdict == "dimensional collapse" and report.effective_rank == pytest.approx(2, rel=1e-3)
    assert report.median_std > 0.05
    assert "dimensional collapse" in str(report) and report.as_dict()["max_rank"] == 64


def shaped_cloud(n, d, variances, seed=0):
    """(n, d) centred embeddings whose principal variances are exactly ``variances`` (padded
    with zeros to d), in random orthonormal directions."""
    k = len(variances)
    left = orthonormal(n, k, seed) * math.sqrt(n - 1)  # unit-variance, uncorrelated columns
    right = orthonormal(d, k, seed + 1).T
    return left * torch.tensor(variances, dtype=torch.float64).sqrt() @ right


def test_leading_share_against_numpy_pca():
    z = torch.randn(300, 12, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * torch.arange(1, 13)
    x = z.numpy() - z.numpy().mean(0)
    eigenvalues = np.linalg.eigvalsh(x.T @ x / (len(x) - 1))  # the PCA of the textbook
    assert dg.leading_share(z) == pytest.approx(eigenvalues.max() / eigenvalues.sum(), rel=1e-10)
    assert dg.leading_share(7.5 * z) == pytest.approx(dg.leading_share(z), rel=1e-12)  # scale-free
    assert dg.leading_share(torch.ones(10, 3)) == 1.0  # no spread: a point


def test_dimensional_collapse_means_the_same_share_at_any_d():
    # The same spectrum shape (one direction with 60 % of the variance, the rest spread evenly)
    # is dimensional collapse at d = 8 and at d = 1024; a spectrum whose leading direction holds
    # 15 % is not collapsed at either, although at d = 1024 its effective rank is a few % of d.
    for d in (8, 1024):
        collapsed = shaped_cloud(4000, d, [0.6] + [0.4 / 6] * 6)
        healthy = shaped_cloud(4000, d, [0.15] + [0.85 / 6] * 6)
        report_c, report_h = dg.collapse_report(collapsed, margin=0.01), dg.collapse_report(healthy, margin=0.01)
        assert report_c.leading_share == pytest.approx(0.6, rel=1e-9) and report_c.verdict == "dimensional collapse"
        assert report_h.leading_share == pytest.approx(0.15, rel=1e-9) and report_h.verdict == "no collapse"
    assert report_h.rank_fraction < 0.01  # the rule a fraction of d would have flagged


def test_a_round_cloud_in_few_dimensions_is_not_collapsed_and_a_line_is():
    for d in (2, 3, 4):
        round_cloud = shaped_cloud(1000, d, [1.0] * d)
        assert dg.collapse_report(round_cloud).verdict == "no collapse", d  # share 1/d, above 0.4 for d <= 2
        line = shaped_cloud(1000, d, [1.0] + [1e-4] * (d - 1))
        assert dg.collapse_report(line).verdict == "dimensional collapse", d


def test_collapse_report_rejects_a_share_of_one_or_more():
    with pytest.raises(ValueError, match="dimensional_above is a share"):
        dg.collapse_report(torch.randn(20, 4), dimensional_above=1.0)


def test_collapse_report_margin_scales_the_threshold():
    z = 0.3 * torch.randn(1000, 16, generator=torch.Generator().manual_seed(5))
    assert dg.collapse_report(z, margin=1.0).verdict == "no collapse"
    assert dg.collapse_report(z, margin=10.0).verdict == "complete collapse"
    assert dg.collapse_report(z, margin=2.0).verdict == "borderline"  # 0.15 of the margin: within the band
    with pytest.raises(ValueError, match="margin"):
        dg.collapse_report(z, margin=0)


def knn_reference(train, train_y, test, test_y, k, temperature):
    """A loop per test point: cosine similarity, top k, exp(s / T) weighted votes."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    correct = 0
    for x, y in zip(test, test_y):
        sims = train @ x
        top = np.argsort(-sims, kind="stable")[:k]
        votes = np.zeros(train_y.max() + 1)
        for i in top:
            votes[train_y[i]] += 1.0 if temperature is None else math.exp(sims[i] / temperature)
        correct += int(np.argmax(votes) == y)
    return correct / len(test_y)


@pytest.mark.parametrize("temperature", [0.07, 0.5, None])
def test_knn_matches_reference(temperature):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 6))
    train_y, test_y = rng.integers(0, 4, 300), rng.integers(0, 4, 120)
    train = centres[train_y] + 1.2 * rng.normal(size=(300, 6))
    test = centres[test_y] + 1.2 * rng.normal(size=(120, 6))
    got = dg.knn_accuracy(train, train_y, test, test_y, k=20, temperature=temperature, chunk_size=50)
    assert got == pytest.approx(knn_reference(train, train_y, test, test_y, 20, temperature))
    assert 0.4 < got < 1.0  # neither trivial nor chance


def test_knn_extremes():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 2000)
    separated = np.eye(10)[y] + 0.01 * rng.normal(size=(2000, 10))
    assert dg.knn_accuracy(separated[:1000], y[:1000], separated[1000:], y[1000:]) == 1.0
    noise = rng.normal(size=(2000, 10))
    assert dg.knn_accuracy(noise[:1000], y[:1000], noise[1000:], y[1000:]) < 0.2
    with pytest.raises(ValueError, match="k must be"):
        dg.knn_accuracy(noise[:10], y[:10], noise[10:20], y[10:20], k=11)
    with pytest.raises(ValueError, match="width"):
        dg.knn_accuracy(noise[:10], y[:10], noise[10:20, :5], y[10:20], k=3)


def test_linear_probe():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(20, 3))
    x = rng.normal(size=(1200, 20))
    y = np.argmax(x @ w, axis=1)
    assert dg.linear_probe(x[:1000], y[:1000], x[1000:], y[1000:]) > 0.9
    # standardised features: the probe does not depend on the features' scale
    assert dg.linear_probe(1e3 * x[:1000], y[:1000], 1e3 * x[1000:], y[1000:]) == pytest.approx(
        dg.linear_probe(x[:1000], y[:1000], x[1000:], y[1000:]), abs=0.01
    )
    shuffled = rng.permutation(y[:1000])
    assert dg.linear_probe(x[:1000], shuffled, x[1000:], y[1000:]) < 0.5


@pytest.mark.parametrize(
    "bad", [torch.zeros(5), torch.zeros(2, 3, 4), torch.zeros(1, 3), torch.zeros(4, 3, dtype=torch.int64)]
)
def test_bad_embeddings_are_rejected(bad):
    with pytest.raises((ValueError, TypeError), match="z"):
        dg.effective_rank(bad)


def test_nan_is_rejected():
    z = torch.randn(5, 3)
    z[1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        dg.collapse_report(z)


# --------------------------------------------------------------------------- any finite magnitude


@pytest.mark.parametrize("scale", [1e160, 1e300, 1e-170, 1e-300], ids=lambda s: f"{s:g}")
def test_collapse_report_at_any_finite_magnitude(scale):
    """float64 embeddings near 1e160: their variances (1e320) overflow float64. The report used to
    give a NaN leading share, and NaN compares False with every threshold: "no collapse" for a cloud
    whose leading direction holds 60 % of the variance. Near 1e-170 the squares underflowed and
    the share read 1 (a point). Now every measurement equals the float64 formula's of the same
    cloud at scale 1, the stds in the cloud's own units."""
    collapsed = shaped_cloud(400, 8, [0.6] + [0.4 / 6] * 6)
    at_one, at_scale = (
        dg.collapse_report(collapsed, margin=0.01),
        dg.collapse_report(scale * collapsed, margin=0.01 * scale),
    )
    assert at_scale.verdict == at_one.verdict == "dimensional collapse"
    assert at_scale.leading_share == pytest.approx(0.6, rel=1e-9)
    assert at_scale.effective_rank == pytest.approx(at_one.effective_rank, rel=1e-9)
    assert at_scale.median_std == pytest.approx(scale * at_one.median_std, rel=1e-12)
    assert at_scale.min_std == pytest.approx(scale * at_one.min_std, rel=1e-12)
    x = collapsed.numpy()  # numpy's std and SVD at scale 1, times the scale
    np.testing.assert_allclose(dg.std_per_dim(scale * collapsed).numpy(), scale * x.std(axis=0, ddof=1), rtol=1e-12)
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    np.testing.assert_allclose(
        dg.singular_spectrum(scale * collapsed).numpy(), scale * s, rtol=1e-10, atol=1e-10 * scale * s[0]
    )
    spectrum = dg.singular_spectrum(scale * collapsed)  # a spectrum at that scale, passed in
    assert dg.leading_share(None, spectrum=spectrum) == pytest.approx(0.6, rel=1e-9)
    assert dg.effective_rank(None, spectrum=spectrum) == pytest.approx(at_one.effective_rank, rel=1e-9)


def test_a_round_cloud_near_1e160_is_not_collapsed_with_a_finite_share():
    healthy = shaped_cloud(400, 8, [1.0] * 8)
    report = dg.collapse_report(1e160 * healthy, margin=1e159)
    assert report.verdict == "no collapse" and report.leading_share == pytest.approx(1 / 8, rel=1e-9)


def test_a_non_finite_measurement_gives_no_verdict():
    """A spectrum with NaN (or a std beyond float64) is an error, never "no collapse"."""
    z = shaped_cloud(100, 4, [1.0] * 4)
    spectrum = dg.singular_spectrum(z)
    spectrum[1] = float("nan")
    with pytest.raises(ValueError, match="collapse_report cannot judge z.*leading share is nan.*spectrum passed in"):
        dg.collapse_report(z, spectrum=spectrum)
    edge = torch.tensor([[1.7e308], [-1.7e308]], dtype=torch.float64).repeat(1, 2)  # std 2.4e308: beyond float64
    with pytest.raises(ValueError, match="median std is inf"):
        dg.collapse_report(edge)


def test_ordinary_scales_are_measured_as_before():
    """The rescaling is only for magnitudes outside [2^-400, 2^400]: inside, the arithmetic is
    the plain formula's, bit for bit (the run bank's stored measurements are recomputed so)."""
    z = torch.randn(300, 12, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * torch.arange(1, 13)
    for scale in (1e-100, 1.0, 1e100):
        x = scale * z
        s = torch.linalg.svdvals(x - x.mean(dim=0))
        assert torch.equal(dg.singular_spectrum(x), s)
        assert torch.equal(dg.std_per_dim(x), x.std(dim=0))
        power = s.square()
        assert dg.leading_share(x) == float(power.max() / power.sum())
        report = dg.collapse_report(x)
        assert report.median_std == float(x.std(dim=0).median())


# --------------------------------------------------------------------------- kNN at small temperatures, bad arguments


def test_knn_at_a_small_temperature_does_not_overflow():
    """exp(s / T) overflowed at T = 1e-3: every neighbour weighed inf, the votes tied at nan and
    the lowest class won. Here the one nearest neighbour (similarity 1) is of the right class,
    the others are a bit farther and of class 0: a small T must follow the nearest."""
    train = torch.tensor([[1.0, 0.0], [0.9, 0.44], [0.9, -0.44], [0.88, 0.47]], dtype=torch.float64)
    labels = torch.tensor([1, 0, 0, 0])
    query = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert dg.knn_accuracy(train, labels, query, torch.tensor([1]), k=4, temperature=1e-3) == 1.0
    assert dg.knn_accuracy(train, labels, query, torch.tensor([1]), k=4, temperature=None) == 0.0


@pytest.mark.parametrize("temperature", [0, -0.1, float("nan"), float("inf")])
def test_knn_rejects_a_bad_temperature(temperature):
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="temperature must be"):
        dg.knn_accuracy(x, torch.arange(10) % 2, x, torch.arange(10) % 2, k=3, temperature=temperature)


def test_knn_rejects_nan_features():
    x = torch.randn(10, 3)
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="test_features contains NaN"):
        dg.knn_accuracy(x, torch.arange(10) % 2, bad, torch.arange(10) % 2, k=3)


@pytest.mark.parametrize("name", ["margin", "complete_below", "dimensional_above"])
def test_collapse_report_rejects_nan_thresholds(name):
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        dg.collapse_report(torch.randn(20, 4), **{name: float("nan")})


# --------------------------------------------------------------------------- the verdict's rule


@pytest.mark.parametrize("threshold", ["spread", "share"])
def test_no_small_difference_turns_a_verdict_into_its_opposite(threshold):
    """Two runs a hair apart on either side of a threshold: one collapsed, the other borderline,
    never "no collapse". Only a change by the band's factor reaches the opposite verdict."""
    eps = 1e-3
    if threshold == "spread":
        just_below = dg.verdict(dg.COMPLETE_BELOW * (1 - eps), 0.1, max_rank=1024)
        just_above = dg.verdict(dg.COMPLETE_BELOW * (1 + eps), 0.1, max_rank=1024)
        clear = dg.verdict(dg.COMPLETE_BELOW * dg.BAND * (1 + eps), 0.1, max_rank=1024)
        assert just_below == "complete collapse"
    else:
        just_below = dg.verdict(1.0, dg.DIMENSIONAL_ABOVE * (1 + eps), max_rank=1024)
        just_above = dg.verdict(1.0, dg.DIMENSIONAL_ABOVE * (1 - eps), max_rank=1024)
        clear = dg.verdict(1.0, dg.DIMENSIONAL_ABOVE / dg.BAND * (1 - eps), max_rank=1024)
        assert just_below == "dimensional collapse"
    assert just_above == "borderline" and clear == "no collapse"
    assert dg.verdict(0.5, 0.6, band=1.0) == "dimensional collapse" and dg.verdict(0.5, 0.3, band=1.0) == "no collapse"


def test_the_spread_is_judged_against_the_reference_the_same_for_every_scale():
    """A Barlow Twins run has no margin: its spread is judged against its untrained encoder's,
    so scaling a run and its reference together changes nothing."""
    for scale in (1e-3, 1.0, 1e3):
        assert dg.verdict(0.05 * scale, 0.1, reference_std=scale) == "complete collapse"
        assert dg.verdict(0.15 * scale, 0.1, reference_std=scale) == "borderline"
        assert dg.verdict(0.9 * scale, 0.1, reference_std=scale) == "no collapse"
    z = torch.randn(500, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for scale in (1e-6, 1e6):
        assert dg.collapse_report(scale * z, reference_std=scale).verdict == dg.collapse_report(z).verdict
    with pytest.raises(ValueError, match="reference_std"):
        dg.verdict(0.1, 0.1, reference_std=0.0)
    with pytest.raises(ValueError, match="band"):
        dg.verdict(0.1, 0.1, band=0.5)


def test_a_run_s_verdicts_are_judged_against_its_first_point():
    history = [
        {"step": 0, "median_std": 2.0, "leading_share": 0.1, "verdict": "whatever was stored"},
        {"step": 5, "median_std": 0.15, "leading_share": 0.1, "verdict": "healthy"},
        {"step": 9, "median_std": 0.3, "leading_share": 0.1},
    ]
    judged = dg.judge_history(history, dim=64)
    assert [p["verdict"] for p in judged] == ["no collapse", "complete collapse", "borderline"]
    assert history[1]["verdict"] == "healthy"  # the input is left as it was


# --------------------------------------------------------------------------- probing an encoder


def test_view_retrieval_is_chance_for_a_blind_encoder_and_counts_against_a_reference():
    from decorr_lite.evaluation import view_retrieval

    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    class Blind(torch.nn.Module):  # the same features for every image: the first column always wins
        def forward(self, x):
            return torch.ones(x.shape[0], 4)

    blind = view_retrieval(Blind(), images, draws=3)
    assert blind["accuracy"] == pytest.approx(1 / 8) and blind["similarity"].shape == (8, 8)

    class MeanColour(torch.nn.Module):  # a crude encoder: per-channel means and spreads
        def forward(self, x):
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    encoder = MeanColour()
    first, again = view_retrieval(encoder, images, draws=4, seed=3), view_retrieval(encoder, images, draws=4, seed=3)
    np.testing.assert_array_equal(first["per_draw"], again["per_draw"])  # seeded: the same views
    # the reference: view 1 of image i is matched to the most similar view 2, by hand
    from decorr_lite.augment import TwoViews

    v1, v2 = TwoViews()(images, seed=3)
    f1, f2 = (torch.nn.functional.normalize(encoder(v).double(), dim=1) for v in (v1, v2))
    expected = float(((f1 @ f2.T).argmax(dim=1) == torch.arange(8)).double().mean())
    assert first["per_draw"][0] == expected
    with pytest.raises(ValueError, match="N >= 2"):
        view_retrieval(encoder, images[:1])
    with pytest.raises(ValueError, match="draws"):
        view_retrieval(encoder, images, draws=0)
