"""Measurements of a representation: is it collapsed to a point, to a few directions, or not at all?

- ``singular_spectrum``: singular values of the centred embeddings (Jing et al., ICLR 2022, plot
  them on a log scale to show dimensional collapse).
- ``effective_rank``: RankMe (Garrido et al., ICML 2023), exp of the entropy of the normalised
  singular values. It is scale-free: a cloud shrunk towards a point keeps its rank.
- ``leading_share``: the share of the variance along the leading principal direction.
- ``std_per_dim``: per-dimension standard deviation, what VICReg's variance hinge looks at.
- ``collapse_report``: a verdict from both the scale and the spectrum, with the numbers behind it
  (``verdict`` is the rule alone, for numbers measured before).
- ``knn_accuracy``: weighted k-nearest-neighbour top-1 accuracy with cosine similarity
  (Wu et al., CVPR 2018), the usual online monitor of SSL training.
- ``linear_probe``: logistic regression (scikit-learn) on frozen features.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .losses._checks import check_embeddings


def _as_float64(z, name: str = "z") -> torch.Tensor:
    if isinstance(z, np.ndarray):
        z = torch.from_numpy(z)
    check_embeddings(z, name)
    return z.detach().to(dtype=torch.float64)


# Squares of float64 numbers whose largest magnitude lies in this range, and sums of a few
# million of them, are normal numbers: the measurements below square what they measure.
_SAFE = (2.0**-400, 2.0**400)


def _rescaled(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(x * 2^-e, e): e = 0 for x whose largest |entry| is in ``_SAFE`` (the same arithmetic as
    ever), else the exponent that brings it to [0.5, 1). Multiplying by a power of two is exact,
    so a scale-free measurement of x * 2^-e is that of x, and a scale is 2^e times it (``_unscaled``)."""
    peak = float(x.abs().max()) if x.numel() else 0.0
    if peak == 0.0 or _SAFE[0] <= peak <= _SAFE[1] or not math.isfinite(peak):
        return x, 0
    exponent = math.frexp(peak)[1]
    return x * math.ldexp(1.0, -exponent), exponent


def _unscaled(t: torch.Tensor, exponent: int) -> torch.Tensor:
    """t * 2^exponent, in two steps: 2^1024 itself is beyond float64."""
    if exponent == 0:
        return t
    half = exponent // 2
    return t * math.ldexp(1.0, half) * math.ldexp(1.0, exponent - half)


def singular_spectrum(z, *, center: bool = True) -> torch.Tensor:
    """Singular values of the (n, d) embeddings, centred over the batch, in descending order.

    Returns a float64 tensor of min(n, d) values.
    """
    return _unscaled(*_spectrum(_as_float64(z), center))


def _spectrum(z: torch.Tensor, center: bool = True) -> tuple[torch.Tensor, int]:
    """The singular values of float64 z as (s * 2^-e, e), at any finite magnitude (an SVD squares
    its input; the scale-free measurements take s * 2^-e, which never overflows)."""
    z, exponent = _rescaled(z)
    if center:
        z = z - z.mean(dim=0)
    return torch.linalg.svdvals(z), exponent


def effective_rank(z, *, eps: float = 1e-7, spectrum: torch.Tensor | None = None) -> float:
    """RankMe: exp(-sum p_k log p_k), p_k = s_k / sum(s) + eps, s the singular values.

    1 for a rank-1 cloud, k for k equal singular values, close to min(n, d) for isotropic noise,
    and unchanged when z is multiplied by any non-zero scalar. A cloud with no spread at all
    (every row equal) has rank 0 by convention. ``spectrum``: ``singular_spectrum(z)``, when the
    caller has it already (the SVD is the expensive part).
    """
    s = singular_spectrum(z) if spectrum is None else torch.as_tensor(spectrum, dtype=torch.float64)
    s, _ = _rescaled(s)  # scale-free: the same at 1e-200 and 1e200 as at 1
    total = s.sum()
    if total <= torch.finfo(s.dtype).tiny * s.numel():
        return 0.0
    p = s / total + eps
    return float(torch.exp(-(p * p.log()).sum()))


def leading_share(z, *, spectrum: torch.Tensor | None = None) -> float:
    """The share of the variance along the leading principal direction: s_1^2 / sum(s_k^2), the
    first principal component's explained-variance ratio. 1/min(n, d) for an isotropic cloud, 1 for
    a line; it does not depend on the scale, and it means the same whatever d is. ``spectrum``:
    ``singular_spectrum(z)``, when the caller has it already."""
    s = singular_spectrum(z) if spectrum is None else torch.as_tensor(spectrum, dtype=torch.float64)
    s, _ = _rescaled(s)  # scale-free, and s^2 overflows float64 from s = 1.3e154
    power = s.square()
    total = power.sum()
    if total <= torch.finfo(s.dtype).tiny * s.numel():
        return 1.0  # no spread at all: every row equal, a point, which is (at most) one direction
    return float(power.max() / total)


def std_per_dim(z) -> torch.Tensor:
    """Unbiased standard deviation of each of the d dimensions over the n samples (float64), at
    any finite magnitude (the variance of entries of 1e160 would overflow float64)."""
    return _std(_as_float64(z))


def _std(z: torch.Tensor) -> torch.Tensor:
    z, exponent = _rescaled(z)
    return _unscaled(z.std(dim=0), exponent)


VERDICTS = ("complete collapse", "dimensional collapse", "borderline", "no collapse")
COMPLETE_BELOW = 0.1  # the spread: median std below this fraction of the reference
DIMENSIONAL_ABOVE = 0.5  # the spectrum: more than half of the variance along the leading direction
BAND = 2.0  # within this factor of a threshold, on the side that is not collapsed: borderline


def verdict(
    median_std: float,
    leading_share: float,
    *,
    reference_std: float = 1.0,
    max_rank: int | None = None,
    complete_below: float = COMPLETE_BELOW,
    dimensional_above: float = DIMENSIONAL_ABOVE,
    band: float = BAND,
) -> str:
    """The rule of ``collapse_report`` on numbers already measured (the run bank's history, say).

    - "complete collapse": ``median_std < complete_below * reference_std``, the spread has shrunk
      to a tenth of the reference's or less;
    - "dimensional collapse": ``leading_share > dimensional_above``, one direction holds more than
      half of the variance;
    - "borderline": neither, but within a factor ``band`` of a threshold (a spread below
      ``band * complete_below`` of the reference, or a share above ``dimensional_above / band``):
      too close to call, so that no small difference between two runs (or seeds) flips one
      verdict into the opposite one;
    - "no collapse": neither. It says nothing about whether the representation is useful: read
      kNN accuracy or the linear probe for that.

    ``reference_std``: the scale the spread is judged against, the same for every loss: a run's
    untrained encoder's median std (what training starts from), or a scale the loss asks for
    (VICReg's margin gamma). ``max_rank``: min(n, d); below 5 the share threshold is raised to
    1.5 / max_rank and has no borderline zone, so that a round cloud (share 1 / max_rank) is
    never flagged.
    """
    for name, value in (("complete_below", complete_below), ("dimensional_above", dimensional_above)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if dimensional_above >= 1:
        raise ValueError(f"dimensional_above is a share of the variance and must be below 1, got {dimensional_above!r}")
    if not (isinstance(band, numbers.Real) and math.isfinite(band) and band >= 1):
        raise ValueError(f"band must be a finite number >= 1 (1: no borderline zone), got {band!r}")
    if not (isinstance(reference_std, numbers.Real) and math.isfinite(reference_std) and reference_std > 0):
        raise ValueError(f"reference_std must be a finite number > 0, got {reference_std!r}")
    if not (math.isfinite(median_std) and math.isfinite(leading_share)):
        raise ValueError(
            f"no verdict follows from a non-finite measurement: median std {median_std}, share {leading_share}"
        )
    few = max_rank is not None and max_rank < 5  # a round cloud's share, 1 / max_rank, is large there
    share_bar = max(dimensional_above, 1.5 / max_rank) if few else dimensional_above
    scale = median_std / reference_std
    if scale < complete_below:
        return "complete collapse"
    if leading_share > share_bar:
        return "dimensional collapse"
    if scale < complete_below * band or (not few and leading_share > share_bar / band):
        return "borderline"
    return "no collapse"


def judge_history(history: list[dict], dim: int) -> list[dict]:
    """A run's evaluation points with each ``verdict`` (re)computed by ``verdict`` from the
    point's median std and leading share, the reference being the run's first point (its
    untrained encoder, step 0): so the verdict of a stored run is always today's rule, and
    means the same for every loss. Points without those numbers are left as they are."""
    if not history or "median_std" not in history[0] or "leading_share" not in history[0]:
        return history
    reference = history[0]["median_std"] if history[0].get("step") == 0 and history[0]["median_std"] > 0 else 1.0
    judged = []
    for point in history:
        point = dict(point)
        if "median_std" in point and "leading_share" in point:
            point["verdict"] = verdict(
                point["median_std"], point["leading_share"], reference_std=reference, max_rank=dim
            )
        judged.append(point)
    return judged


@dataclass(frozen=True)
class CollapseReport:
    """``verdict`` is one of ``VERDICTS``; the stds are in the units of the embeddings."""

    verdict: str
    median_std: float
    min_std: float
    fraction_below_margin: float
    effective_rank: float
    max_rank: int
    rank_fraction: float
    leading_share: float
    margin: float
    reference_std: float

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.verdict}: median std {self.median_std:.3g} ({self.median_std / self.reference_std:.2g} of the "
            f"reference {self.reference_std:.3g}; {self.fraction_below_margin:.0%} of dims below the margin "
            f"{self.margin:g}), effective rank {self.effective_rank:.1f} of {self.max_rank} "
            f"({self.rank_fraction:.1%}), leading direction {self.leading_share:.0%} of the variance"
        )


def collapse_report(
    z,
    *,
    reference_std: float | None = None,
    margin: float = 1.0,
    complete_below: float = COMPLETE_BELOW,
    dimensional_above: float = DIMENSIONAL_ABOVE,
    band: float = BAND,
    spectrum: torch.Tensor | None = None,
) -> CollapseReport:
    """Diagnose (n, d) embeddings from their scale and their spectrum (the rule: ``verdict``).

    - complete collapse: the median per-dimension std is below ``complete_below`` of
      ``reference_std``: the embeddings have shrunk to (nearly) a point. Looking at scale is
      essential here: the spectrum is scale-free and a shrunken cloud of noise still looks spread
      out. The reference is what the spread is compared with: for a trained encoder, the same
      encoder's spread before training (the run's first evaluation point), which means the same
      for every loss; by default ``margin``.
    - dimensional collapse: the spread is there but one direction dominates it: the leading
      principal direction holds more than ``dimensional_above`` of the variance
      (``leading_share``). A share means the same at d = 8 as at d = 1024, where a fraction of
      d would not: a toy encoder can use all 8 of its dimensions, a CIFAR-10 encoder trained
      for minutes a tenth of its 1024. docs/collapse.md justifies the thresholds with the
      measured runs.
    - borderline: within a factor ``band`` of either threshold.
    - no collapse: neither (which is not to say useful).

    Every measurement is made at any finite magnitude (the stds in the units of z); one that still
    comes out non-finite (a ``spectrum`` with NaN, a std beyond float64) raises: it gives no verdict.

    ``margin`` is the scale the training asked for (VICReg's gamma, 1 by default), for
    ``fraction_below_margin``; ``spectrum`` is ``singular_spectrum(z)`` if the caller has computed
    it. The report also carries the effective rank, the continuous measure to compare runs by.
    """
    for name, value in (("margin", margin), ("reference_std", margin if reference_std is None else reference_std)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    reference_std = float(margin if reference_std is None else reference_std)
    z = _as_float64(z)
    std = _std(z)
    passed = spectrum is not None
    if spectrum is None:
        spectrum, _ = _spectrum(z)  # in units of 2^e: the rank and the share are scale-free
    erank = effective_rank(z, spectrum=spectrum)
    share = leading_share(z, spectrum=spectrum)
    max_rank = min(z.shape)
    median_std = float(std.median())
    # a verdict needs numbers: NaN compares False with every threshold and would read "no collapse"
    measured = {"median std": median_std, "min std": float(std.min()), "effective rank": erank, "leading share": share}
    bad = {name: value for name, value in measured.items() if not math.isfinite(value)}
    if bad:
        given = " (from the spectrum passed in)" if passed and any("std" not in name for name in bad) else ""
        raise ValueError(
            f"collapse_report cannot judge z: its {', '.join(f'{k} is {v}' for k, v in bad.items())}{given}, "
            f"and no verdict follows from a non-finite measurement. z is finite (largest |entry| "
            f"{float(z.abs().max()):.3g}); at the edge of float64's range, scale it down first."
        )
    return CollapseReport(
        verdict=verdict(
            median_std,
            share,
            reference_std=reference_std,
            max_rank=max_rank,
            complete_below=complete_below,
            dimensional_above=dimensional_above,
            band=band,
        ),
        median_std=median_std,
        min_std=float(std.min()),
        fraction_below_margin=float((std < margin).double().mean()),
        effective_rank=erank,
        max_rank=max_rank,
        rank_fraction=erank / max_rank,
        leading_share=share,
        margin=float(margin),
        reference_std=reference_std,
    )


def knn_accuracy(
    train_features,
    train_labels,
    test_features,
    test_labels,
    *,
    k: int = 20,
    temperature: float | None = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> float:
    """Top-1 accuracy (a fraction) of a k-nearest-neighbour classifier with cosine similarity.

    Each test point takes its k most similar training points; a neighbour with similarity s
    votes for its label with weight exp(s / temperature) (Wu et al. 2018; ``temperature=None``
    gives every neighbour one vote). Ties go to the lower class index.
    """
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"temperature must be a finite number > 0 (0.07 is usual) or None, got {temperature!r}")
    train, test = torch.as_tensor(train_features).double(), torch.as_tensor(test_features).double()
    for name, features in (("train_features", train), ("test_features", test)):
        if features.dim() != 2:
            raise ValueError(f"{name} must be 2-D (samples, features), got shape {tuple(features.shape)}")
        if not bool(torch.isfinite(features).all()):
            raise ValueError(f"{name} contains NaN or Inf: check the encoder (a diverged run?)")
    train = torch.nn.functional.normalize(train, dim=1)
    test = torch.nn.functional.normalize(test, dim=1)
    train_labels = torch.as_tensor(train_labels).long()
    test_labels = torch.as_tensor(test_labels).long()
    if train.shape[0] != train_labels.shape[0] or test.shape[0] != test_labels.shape[0]:
        raise ValueError("features and labels must have the same number of rows")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train and test features differ in width: {train.shape[1]} vs {test.shape[1]}")
    if not 1 <= k <= train.shape[0]:
        raise ValueError(f"k must be in [1, {train.shape[0]}] (the number of training points), got {k}")
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    correct = 0
    for start in range(0, test.shape[0], chunk_size):
        sims, index = (test[start : start + chunk_size] @ train.T).topk(k, dim=1)
        # exp((s - s_max) / T): the same votes up to a factor per row, without overflow at small T
        weights = torch.ones_like(sims) if temperature is None else ((sims - sims[:, :1]) / temperature).exp()
        votes = torch.zeros(sims.shape[0], num_classes, dtype=torch.float64)
        votes.scatter_add_(1, train_labels[index], weights)
        correct += int((votes.argmax(dim=1) == test_labels[start : start + chunk_size]).sum())
    return correct / test.shape[0]


def linear_probe(
    train_features, train_labels, test_features, test_labels, *, C: float = 1.0, max_iter: int = 1000, seed: int = 0
) -> float:
    """Top-1 test accuracy (a fraction) of a logistic regression on frozen, standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, x_test = (np.asarray(torch.as_tensor(f).double()) for f in (train_features, test_features))
    y_train, y_test = np.asarray(train_labels), np.asarray(test_labels)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    probe.fit(x_train, y_train)
    return float(probe.score(x_test, y_test))
