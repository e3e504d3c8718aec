"""How far is every run from the collapse verdict's thresholds, over its seeds?

    .venv/bin/python benchmarks/collapse_rule.py [--out benchmarks/results/collapse_rule.json]

Reads every setting of the shipped run bank with each of its seeds (CIFAR-10, d = 1024,
measured on 5,000 test images) and trains the toy runs of notebook 01 (d = 8, in seconds), and
prints, for each: the spread (final median std over the untrained encoder's), the leading
share, the verdict of each seed, and the factor by which the closest seed stays away from the
nearest threshold of ``diagnostics.verdict`` (complete collapse below 0.1, borderline from 0.1
to 0.2 of the spread; borderline from 0.25 to 0.5 of the share, dimensional collapse above).
A verdict that flips between seeds shows as several verdicts. No data is needed. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decorr_lite import bank, diagnostics, toy  # noqa: E402

TOY_RUNS = {
    "toy: all terms": {},
    "toy: variance off": {"std_coeff": 0.0},
    "toy: covariance off": {"cov_coeff": 0.0},
    "toy: invariance off": {"sim_coeff": 0.0},
    "toy: Barlow Twins": {"loss": "barlow"},
    "toy: Barlow Twins, off-diagonal off": {"loss": "barlow", "lambd": 0.0},
    "toy: untrained (all terms off)": {"std_coeff": 0.0, "cov_coeff": 0.0, "sim_coeff": 0.0},
}


def thresholds() -> dict[str, list[float]]:
    low, high, band = diagnostics.COMPLETE_BELOW, diagnostics.DIMENSIONAL_ABOVE, diagnostics.BAND
    return {"spread": [low, low * band], "share": [high / band, high]}


def distance(value: float, lines: list[float]) -> float:
    """The factor between ``value`` and the nearest of ``lines`` (1.0: on a line)."""
    if value <= 0:
        return math.inf
    return min(max(value / line, line / value) for line in lines)


def rows() -> list[dict]:
    lines = thresholds()
    out = []
    for name in bank.shown_runs():
        seeds = bank.load_seeds(name)
        out.append(
            {
                "run": name,
                "d": seeds[0].config["dim"],
                "spread": [r.final["median_std"] / r.history[0]["median_std"] for r in seeds],
                "share": [r.final["leading_share"] for r in seeds],
                "verdicts": [r.final["verdict"] for r in seeds],
            }
        )
    data = toy.toy_data(seed=0)
    for name, kwargs in TOY_RUNS.items():
        report = toy.train_toy(data, **kwargs).report
        out.append(
            {
                "run": name,
                "d": 8,
                "spread": [report.median_std / report.reference_std],
                "share": [report.leading_share],
                "verdicts": [report.verdict],
            }
        )
    for row in out:
        # the share does not matter once the spread says complete collapse, nor the spread's far side
        row["margin"] = min(
            min(distance(s, lines["spread"]) for s in row["spread"]),
            min(distance(s, lines["share"]) for s, c in zip(row["share"], row["spread"]) if c >= lines["spread"][0])
            if any(c >= lines["spread"][0] for c in row["spread"])
            else math.inf,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "collapse_rule.json"))
    args = parser.parse_args()
    table = rows()
    print(f"thresholds: {thresholds()}")
    print(f"{'run':42s} {'d':>5s} {'spread / untrained':>22s} {'leading share':>15s} {'margin':>7s}  verdicts")
    for r in sorted(table, key=lambda r: max(r["share"])):
        spread = f"{min(r['spread']):.3g}-{max(r['spread']):.3g}"
        share = f"{min(r['share']):.3f}-{max(r['share']):.3f}"
        said = sorted(set(r["verdicts"]))
        verdicts = f"{said[0]} x{len(r['verdicts'])}" if len(said) == 1 else ", ".join(r["verdicts"])
        print(f"{r['run']:42s} {r['d']:5d} {spread:>22s} {share:>15s} {r['margin']:7.2f}  {verdicts}")
    split = [r["run"] for r in table if len(set(r["verdicts"])) > 1]
    close = [r["run"] for r in table if r["margin"] < 1.15]
    print(f"settings whose seeds disagree: {split or 'none'}")
    print(f"settings within 15 % of a threshold: {close or 'none'}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(table, indent=1, default=str))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
