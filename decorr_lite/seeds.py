"""Evidence across seeds: what a comparison of two run settings can claim.

One seed cannot rank two settings whose difference is smaller than the run-to-run noise: the
seed changes the initial weights, the data order, the augmentations and the evaluation sets.
The run bank trains every setting the notebooks show with three seeds (``bank.load_seeds``);
this module summarises them and says which differences the seeds support.

- ``Spread``: one number of one setting over its seeds: the values, their mean, min and max.
- ``spread(runs, key)``: that number's ``Spread`` from the runs' final results.
- ``compare(a, b, key)``: a ``Comparison`` of two settings. It claims a difference only where
  the two settings' ranges over the seeds do not overlap: every seed of one is above every
  seed of the other. With three seeds this is a plain, conservative rule (the chance that
  three draws of one and three of the other separate completely when the two are the same
  is 1 in 10), and it is the one a reader can check in the table by eye.
- ``seed_table(settings, keys)``: a plain-text table of mean and min-max per number, and the
  verdicts of all seeds.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._table import text_table
from .record import TrainResult


@dataclass(frozen=True)
class Spread:
    """One final number of one setting over its seeds."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def format(self, digits: int = 3) -> str:
        """``"0.435 (0.431-0.440)"``: the mean and the range over the seeds."""
        return f"{self.mean:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f})"


def spread(runs: Sequence[TrainResult], key: str) -> Spread:
    """``key`` of each run's final results (``"knn_top1"``, ``"effective_rank"``, ...)."""
    if not runs:
        raise ValueError("spread needs at least one run")
    missing = [i for i, run in enumerate(runs) if key not in run.final]
    if missing:
        raise KeyError(f"{key!r} is not a final result of run(s) {missing}; they have {sorted(runs[0].final)}")
    return Spread(tuple(float(run.final[key]) for run in runs))


@dataclass(frozen=True)
class Comparison:
    """Setting a against setting b on one number, over their seeds."""

    key: str
    a: Spread
    b: Spread

    @property
    def gap(self) -> float:
        """The difference of the means, a - b."""
        return self.a.mean - self.b.mean

    @property
    def a_above(self) -> bool:
        """Every seed of a above every seed of b."""
        return self.a.low > self.b.high

    @property
    def b_above(self) -> bool:
        return self.b.low > self.a.high

    @property
    def separated(self) -> bool:
        """The seeds support a difference: the two ranges do not overlap."""
        return self.a_above or self.b_above

    def sentence(self, a: str, b: str, scale: float = 1.0, unit: str = "") -> str:
        """What the seeds support, in words. ``scale`` and ``unit`` show the gap in the units of
        the text (``scale=100, unit=" kNN points"``)."""
        gap = abs(self.gap) * scale
        if self.separated:
            high, low = (a, b) if self.a_above else (b, a)
            return f"{high} is above {low} with every seed (by {gap:.1f}{unit} on average)"
        return (
            f"{a} and {b} overlap across the seeds ({self.a.format()} against {self.b.format()}): "
            f"no difference can be claimed at this budget"
        )


def compare(a: Sequence[TrainResult], b: Sequence[TrainResult], key: str) -> Comparison:
    """Settings ``a`` and ``b`` (each a list of runs, one per seed) on ``key``."""
    return Comparison(key, spread(a, key), spread(b, key))


COLUMNS = {  # key: (heading, digits)
    "knn_top1": ("kNN", 3),
    "linear_probe_top1": ("probe", 3),
    "effective_rank": ("eff. rank", 1),
    "leading_share": ("lead. share", 3),
    "median_std": ("median std", 3),
}


def seed_table(settings: Mapping[str, Sequence[TrainResult]], keys: Sequence[str] = tuple(COLUMNS)) -> str:
    """A plain-text table, one row per setting: each number as "mean (min-max)" over the seeds,
    and the verdict of each seed (``"no collapse x3"`` when they agree)."""
    rows = [("setting", "seeds", *(COLUMNS.get(k, (k, 3))[0] for k in keys), "verdicts")]
    for label, runs in settings.items():
        cells = [spread(runs, k).format(COLUMNS.get(k, (k, 3))[1]) for k in keys]
        rows.append((label, str(len(runs)), *cells, verdicts(runs)))
    return text_table(rows)


def verdicts(runs: Sequence[TrainResult]) -> str:
    """The seeds' verdicts: ``"no collapse x3"`` when they agree, else each in seed order."""
    said = [run.final["verdict"] for run in runs]
    if len(set(said)) == 1:
        return f"{said[0]} x{len(said)}"
    return ", ".join(said)


def agreed_verdict(runs: Sequence[TrainResult]) -> str | None:
    """The verdict every seed gives, or None where they differ."""
    said = {run.final["verdict"] for run in runs}
    return said.pop() if len(said) == 1 else None


__all__ = ["Spread", "Comparison", "spread", "compare", "seed_table", "verdicts", "agreed_verdict"]
