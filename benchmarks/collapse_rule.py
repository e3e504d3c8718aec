"""Which rule tells collapsed runs from healthy ones at d = 8 and at d = 1024 alike?

    .venv/bin/python benchmarks/collapse_rule.py [--out benchmarks/results/collapse_rule.json]

Reads every run of the shipped run bank (CIFAR-10, d = 1024, measured on 5,000 test images) and
trains the toy runs of notebook 01 (d = 8, in seconds), and prints, for each, the two candidate
measures of dimensional collapse: the effective rank as a fraction of min(n, d), and the share of
the variance along the leading principal direction. "expected" is what the notebooks teach about
the run. No data is needed. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decorr_lite import bank, diagnostics, toy  # noqa: E402

# What the notebooks teach about each run (complete collapse is decided by the std first).
EXPECTED_COLLAPSED = {
    "vicreg-without-covariance",
    "vicreg-without-invariance+covariance",
    "barlow-without-off-diagonal",
    "barlow-without-on-diagonal",
    "vicreg-fft-b=d-not-permuted",
    "vicreg-fft-b=128-not-permuted",
    "vicreg-fft-b=d-q=2",
    "toy: covariance off",
    "toy: Barlow Twins, off-diagonal off",
}
TOY_RUNS = {
    "toy: all terms": {},
    "toy: variance off": {"std_coeff": 0.0},
    "toy: covariance off": {"cov_coeff": 0.0},
    "toy: invariance off": {"sim_coeff": 0.0},
    "toy: Barlow Twins": {"loss": "barlow"},
    "toy: Barlow Twins, off-diagonal off": {"loss": "barlow", "lambd": 0.0},
    "toy: untrained (all terms off)": {"std_coeff": 0.0, "cov_coeff": 0.0, "sim_coeff": 0.0},
}


def rows() -> list[dict]:
    out = []
    for name in bank.bank_runs():
        run = bank.load_entry(name)
        spectrum = torch.as_tensor(run.arrays["spectrum"][-1], dtype=torch.float64)
        d, n = run.config["dim"], run.final["query_size"]
        out.append(
            {
                "run": name,
                "d": d,
                "rank_fraction": run.final["effective_rank"] / min(n, d),
                "leading_share": diagnostics.leading_share(None, spectrum=spectrum),
                "median_std": run.final["median_std"],
                "verdict": run.final["verdict"],
            }
        )
    data = toy.toy_data(seed=0)
    for name, kwargs in TOY_RUNS.items():
        report = toy.train_toy(data, **kwargs).report
        out.append(
            {
                "run": name,
                "d": 8,
                "rank_fraction": report.rank_fraction,
                "leading_share": report.leading_share,
                "median_std": report.median_std,
                "verdict": report.verdict,
            }
        )
    for row in out:
        if row["median_std"] < 0.05:
            row["expected"] = "complete"
        elif row["run"] == "toy: untrained (all terms off)":
            row["expected"] = "untrained"  # a random 8 x 16 projection: not a lesson of the notebooks
        else:
            row["expected"] = "collapsed" if row["run"] in EXPECTED_COLLAPSED else "healthy"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "collapse_rule.json"))
    args = parser.parse_args()
    table = rows()
    print(
        f"{'run':42s} {'d':>5s} {'rank / d':>9s} {'leading share':>13s} {'median std':>10s}  {'expected':10s} verdict"
    )
    for r in sorted(table, key=lambda r: (r["expected"], r["leading_share"])):
        print(
            f"{r['run']:42s} {r['d']:5d} {r['rank_fraction']:9.1%} {r['leading_share']:13.3f} "
            f"{r['median_std']:10.3g}  {r['expected']:10s} {r['verdict']}"
        )
    for measure in ("rank_fraction", "leading_share"):
        healthy = [r[measure] for r in table if r["expected"] == "healthy"]
        collapsed = [r[measure] for r in table if r["expected"] == "collapsed"]
        print(
            f"{measure}: healthy runs {min(healthy):.3f}..{max(healthy):.3f}, "
            f"dimensionally collapsed runs {min(collapsed):.3f}..{max(collapsed):.3f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(table, indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
