"""Does torch.compile make the loss modules faster? Eager against compiled (inductor), alternated.

    .venv/bin/python benchmarks/compile_losses.py [--n 256] [--d 4096] [--pairs 15] [--device cpu]

Times one forward+backward pass of ``VICRegLoss`` and ``BarlowTwinsLoss`` for the exact, Gram and
relaxed (fft, b = d, q = 1 for VICReg) methods, eager and ``torch.compile``d, the two alternated
pass by pass so that a busy moment of the machine slows both. Compilation happens in warm-up
passes that are not timed. Prints the medians and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import decorr_lite as dl  # noqa: E402
from decorr_lite.memory import synchronize  # noqa: E402

CASES = {
    "exact": dict(method="exact"),
    "gram": dict(method="gram"),
    "fft b=d": dict(method="fft"),
}


def time_pair(module_class, options, z1, z2, pairs: int, device: str) -> dict:
    if module_class is dl.VICRegLoss and options["method"] == "fft":
        options = dict(options, exponent=1)
    eager = module_class(**options, seed=0)
    compiled = torch.compile(module_class(**options, seed=0))

    def step(fn):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        fn(a, b).backward()
        synchronize(device)

    for _ in range(3):  # warm-up: compilation, allocator, caches
        step(eager), step(compiled)
    times = {"eager": [], "compiled": []}
    for _ in range(pairs):
        for name, fn in (("eager", eager), ("compiled", compiled)):
            t0 = time.perf_counter()
            step(fn)
            times[name].append(time.perf_counter() - t0)
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {"median_ms": {k: 1000 * v for k, v in medians.items()}, "speedup": medians["eager"] / medians["compiled"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compile_losses.json"))
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.d, generator=g)
    z1, z2 = ((x + 0.3 * torch.randn(args.n, args.d, generator=g)).to(args.device) for _ in range(2))
    rows = []
    print(f"n = {args.n}, d = {args.d}, {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'loss':8s} {'method':8s} {'eager ms':>9s} {'compiled ms':>12s} {'speed-up':>9s}")
    for loss_name, module_class in (("vicreg", dl.VICRegLoss), ("barlow", dl.BarlowTwinsLoss)):
        for label, options in CASES.items():
            torch._dynamo.reset()
            result = time_pair(module_class, options, z1, z2, args.pairs, args.device)
            rows.append({"loss": loss_name, "method": label, **result})
            ms = result["median_ms"]
            print(f"{loss_name:8s} {label:8s} {ms['eager']:9.1f} {ms['compiled']:12.1f} {result['speedup']:8.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "n": args.n,
        "d": args.d,
        "device": args.device,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
    }
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
