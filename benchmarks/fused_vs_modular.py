"""The fused single-process FFT path (losses/_fused.py) against the modular one, alternated.

    python benchmarks/fused_vs_modular.py                  # n = 256, d = 16384 and 8192, b = d and 128
    python benchmarks/fused_vs_modular.py --dims 4096 --pairs 10 --out /tmp/x.json

Both paths compute the same values and gradients (tests/test_fused.py); this measures what the
fused one buys. Each pass is one forward+backward of the loss with a fixed permutation, and the
two paths alternate pass by pass in one process, so that both see the same machine. Prints the
median and minimum times and their ratios, and the median number of minor page faults per pass
(first touches of fresh memory, which are expensive on a virtual machine), and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from decorr_lite import barlow_twins_loss, vicreg_loss
from decorr_lite.benchmark import alternate

LOSSES = {"barlow": barlow_twins_loss, "vicreg": vicreg_loss}


def time_pair(loss: str, n: int, d: int, block_size: int | None, pairs: int) -> dict:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(n, d, generator=g)
    z2 = (z1 + 0.5 * torch.randn(n, d, generator=g)).requires_grad_()
    z1.requires_grad_()
    permutation = torch.randperm(d, generator=g)

    def step(fused: bool):
        z1.grad = z2.grad = None
        LOSSES[loss](
            z1,
            z2,
            method="fft",
            block_size=block_size,
            permutation=permutation,
            check_finite=False,
            impl="fused" if fused else "modular",
        ).backward()

    (fused, modular), (fused_faults, modular_faults) = alternate([lambda: step(True), lambda: step(False)], pairs)
    times, faults = {"fused": fused, "modular": modular}, {"fused": fused_faults, "modular": modular_faults}
    return {
        "loss": loss,
        "n": n,
        "d": d,
        "block_size": block_size or d,
        "times": times,
        "median_faults": {k: statistics.median(v) for k, v in faults.items()},
        "median_speedup": statistics.median(times["modular"]) / statistics.median(times["fused"]),
        "min_speedup": min(times["modular"]) / min(times["fused"]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--dims", type=int, nargs="+", default=[8192, 16384])
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[0, 128], help="0 means b = d")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fused_vs_modular.json"))
    args = parser.parse_args(argv)

    rows = []
    print(f"forward+backward, n = {args.n}, CPU, {torch.get_num_threads()} threads; times in ms")
    print(
        f"{'loss':>7} {'d':>6} {'b':>6} {'fused median':>13} {'modular median':>15} {'speed-up':>9} "
        f"{'fused min':>10} {'modular min':>12} {'speed-up':>9} {'faults/pass fused':>18} {'modular':>8}"
    )
    for loss in LOSSES:
        for d in args.dims:
            for b in args.block_sizes:
                r = time_pair(loss, args.n, d, b or None, args.pairs)
                rows.append(r)
                f, m = r["times"]["fused"], r["times"]["modular"]
                print(
                    f"{loss:>7} {d:>6} {r['block_size']:>6} {statistics.median(f) * 1e3:13.1f} "
                    f"{statistics.median(m) * 1e3:15.1f} {r['median_speedup']:9.2f} {min(f) * 1e3:10.1f} "
                    f"{min(m) * 1e3:12.1f} {r['min_speedup']:9.2f} {r['median_faults']['fused']!s:>18} "
                    f"{r['median_faults']['modular']!s:>8}",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "n": args.n,
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
