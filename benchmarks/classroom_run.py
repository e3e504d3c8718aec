"""One classroom run, timed whole and stage by stage: where a notebook's training time goes.

    DECORR_DATA=/path/to/cifar10 .venv/bin/python benchmarks/classroom_run.py                # full mode, default precision
    .venv/bin/python benchmarks/classroom_run.py --quick --precision fp32
    .venv/bin/python benchmarks/classroom_run.py --set '{"loss": "barlow", "lambd": 0.02}'   # a trial of the recipe

Trains ``train_ssl(**classroom_settings(quick), precision=..., **set)`` without the run cache and
prints its seconds, its final metrics, and the wall time of each stage. The stages are timed by
wrapping the functions that do them (data loading, augmentation, the training step, precise-BN
re-estimation, feature extraction, the kNN classifier, the collapse report, the linear probe, the
evaluation points and the final evaluation). Nested stages are indented; "other" is what no
timer covers. Writes JSON.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decorr_lite import config, diagnostics, evaluation, training  # noqa: E402
from decorr_lite.augment import TwoViews  # noqa: E402
from decorr_lite.benchmark import describe_machine, machine_line  # noqa: E402

# (owner, function name, label); indented labels are parts of the stage above them
STAGES = [
    (training, "load_cifar10", "data loading"),
    (TwoViews, "forward", "augmentation"),
    (training, "training_step", "training steps (forward, loss, backward, AdamW)"),
    (training, "_evaluate", "evaluation points"),
    (training, "_final_evaluation", "final evaluation"),
    (evaluation, "recalibrated", "  precise BN re-estimation"),
    (evaluation, "embed", "  feature extraction"),
    (diagnostics, "knn_accuracy", "  kNN"),
    (diagnostics, "collapse_report", "  collapse report (SVD)"),
    (diagnostics, "linear_probe", "  linear probe"),
]


def timed(spent: dict, owner, name: str, label: str):
    """Wrap ``owner.name`` so that its calls add their wall time to ``spent[label]``; returns the
    original, to put back."""
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - started

    setattr(owner, name, wrapper)
    return fn


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="quick mode's settings (default: full mode)")
    parser.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16")
    parser.add_argument("--set", default="{}", help="JSON of TrainConfig fields to change, e.g. '{\"lr\": 0.001}'")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "classroom_run.json"))
    args = parser.parse_args(argv)
    host = describe_machine()
    print(machine_line(host), flush=True)
    spent: dict[str, float] = collections.defaultdict(float)
    settings = {**config.classroom_settings(quick=args.quick), "precision": args.precision, **json.loads(args.set)}
    originals = [(owner, name, timed(spent, owner, name, label)) for owner, name, label in STAGES]
    try:
        started = time.perf_counter()
        run = training.train_ssl(**settings, cache=False, use_bank=False, progress=False)
        total = time.perf_counter() - started
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)
    f = run.final
    print(
        f"{'quick' if args.quick else 'full'} mode, {f['precision']}, {json.loads(args.set) or 'the recipe'}: "
        f"{total:.1f} s; kNN {f['knn_top1']:.3f}, linear probe {f['linear_probe_top1']:.3f}, effective rank "
        f"{f['effective_rank']:.1f}, median std {f['median_std']:.3f}, {f['verdict']}"
    )
    top = sum(v for k, v in spent.items() if not k.startswith(" "))
    for _, _, label in STAGES:
        print(f"{label:50s} {spent[label]:7.1f} s {100 * spent[label] / total:5.1f} %")
    print(f"{'other':50s} {total - top:7.1f} s {100 * (total - top) / total:5.1f} %")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"machine": host, "settings": settings, "seconds": total, "final": f, "stages": dict(spent)}, indent=1
        )
    )
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
