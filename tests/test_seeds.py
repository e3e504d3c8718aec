"""Evidence across seeds: spreads, comparisons and the seeds' table, against hand-made runs."""

from __future__ import annotations

import pytest

from decorr_lite import seeds
from decorr_lite.record import TrainResult


def _runs(values, verdicts=None, key="knn_top1"):
    verdicts = verdicts or ["no collapse"] * len(values)
    return [TrainResult({}, [], {key: v, "verdict": w}, {}) for v, w in zip(values, verdicts)]


def test_a_spread_is_the_mean_and_the_range_of_the_seeds():
    s = seeds.spread(_runs([0.40, 0.43, 0.46]), "knn_top1")
    assert s.mean == pytest.approx(0.43) and (s.low, s.high) == (0.40, 0.46)
    assert s.format() == "0.430 (0.400-0.460)" and s.format(1) == "0.4 (0.4-0.5)"
    with pytest.raises(KeyError, match="'probe' is not a final result"):
        seeds.spread(_runs([0.1]), "probe")
    with pytest.raises(ValueError, match="at least one run"):
        seeds.spread([], "knn_top1")


def test_a_difference_is_claimed_only_where_the_seeds_ranges_do_not_overlap():
    a, b, c = _runs([0.44, 0.45, 0.47]), _runs([0.40, 0.41, 0.43]), _runs([0.42, 0.45, 0.48])
    ab = seeds.compare(a, b, "knn_top1")
    assert ab.separated and ab.a_above and not ab.b_above and ab.gap == pytest.approx(0.04)
    assert ab.sentence("A", "B", 100, " points") == "A is above B with every seed (by 4.0 points on average)"
    assert seeds.compare(b, a, "knn_top1").sentence("B", "A", 100, " points").startswith("A is above B")
    ac = seeds.compare(a, c, "knn_top1")  # the means differ, the ranges overlap: no claim
    assert not ac.separated and "no difference can be claimed" in ac.sentence("A", "C")
    touching = seeds.compare(_runs([0.43, 0.44]), _runs([0.41, 0.43]), "knn_top1")
    assert not touching.separated  # equal extremes are an overlap


def test_the_seed_table_prints_mean_range_and_every_seed_s_verdict():
    table = seeds.seed_table(
        {
            "agreeing": _runs([0.40, 0.42, 0.44]),
            "split": _runs([0.30, 0.31, 0.32], ["borderline", "no collapse", "no collapse"]),
        },
        keys=("knn_top1",),
    )
    lines = table.splitlines()
    assert lines[0].split() == ["setting", "seeds", "kNN", "verdicts"]
    assert "0.420 (0.400-0.440)" in lines[2] and lines[2].endswith("no collapse x3")
    assert lines[3].endswith("borderline, no collapse, no collapse")
    assert seeds.agreed_verdict(_runs([1, 2])) == "no collapse"
    assert seeds.agreed_verdict(_runs([1, 2], ["borderline", "no collapse"])) is None
