"""Time the losses of this working tree against those of another git revision, in one process.

    .venv/bin/python benchmarks/compare_revisions.py --base HEAD~3          # --n 256 --dims 1024 8192

The base revision's ``decorr_lite`` package is extracted (``git archive``) into a temporary folder
and imported under another name, beside the working tree's. Each case (both losses; exact, gram,
fft with b = d and b = 128, the fft cases with a permutation, as in training) is one
forward+backward pass on the same float32 inputs, and the two versions' passes are timed in
turn (``decorr_lite.benchmark.alternate``), so a busy spell of a shared host slows both alike. A
change that costs nothing shows ratios around 1 on both the medians and the minima. Prints a
table and writes JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decorr_lite.benchmark import alternate  # noqa: E402

CASES = [("exact", None), ("gram", None), ("fft", None), ("fft", 128)]


def import_revision(revision: str, folder: Path):
    """The package ``decorr_lite`` as it is at ``revision``, imported as ``decorr_lite_base``."""
    archive = subprocess.run(["git", "archive", revision, "decorr_lite"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    (folder / "decorr_lite").rename(folder / "decorr_lite_base")
    sys.path.insert(0, str(folder))
    return importlib.import_module("decorr_lite_base")


def step(package, loss: str, method: str, block_size, n: int, d: int):
    """One forward+backward pass of ``package``'s loss, on inputs made from a fixed seed."""
    fn = package.vicreg_loss if loss == "vicreg" else package.barlow_twins_loss
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(n, d, generator=g).requires_grad_()
    z2 = (z1.detach() + 0.5 * torch.randn(n, d, generator=g)).requires_grad_()
    permutation = torch.randperm(d, generator=g) if method == "fft" else None
    kwargs = dict(method=method, block_size=block_size, permutation=permutation, check_finite=False)
    return lambda: fn(z1, z2, **kwargs).backward()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the git revision to compare with (e.g. HEAD~1, main)")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--passes", type=int, default=30, help="timed passes of each version per case")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compare_revisions.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import decorr_lite as current

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        base = import_revision(args.base, Path(folder))
        print(
            f"this tree / {args.base}: forward+backward, n = {args.n}, float32, {torch.get_num_threads()} threads, "
            f"{args.passes} passes each, alternated"
        )
        print(
            f"{'loss':>7} {'method':>10} {'d':>6} {'base ms':>9} {'this ms':>9} {'median ratio':>13} {'min ratio':>10}"
        )
        for d in args.dims:
            for loss in ("vicreg", "barlow"):
                for method, block in CASES:
                    if method == "fft" and block is not None and block >= d:
                        continue
                    steps = [step(p, loss, method, block, args.n, d) for p in (base, current)]
                    (base_times, times), _ = alternate(steps, args.passes)
                    row = {
                        "loss": loss,
                        "method": method if block is None else f"{method} b={block}",
                        "d": d,
                        "n": args.n,
                        "base_ms": 1e3 * statistics.median(base_times),
                        "this_ms": 1e3 * statistics.median(times),
                        "min_ratio": min(times) / min(base_times),
                    }
                    row["median_ratio"] = row["this_ms"] / row["base_ms"]
                    rows.append(row)
                    print(
                        f"{loss:>7} {row['method']:>10} {d:>6} {row['base_ms']:9.2f} {row['this_ms']:9.2f} "
                        f"{row['median_ratio']:13.3f} {row['min_ratio']:10.3f}"
                    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"base": args.base, "threads": torch.get_num_threads(), "rows": rows}, indent=1))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
