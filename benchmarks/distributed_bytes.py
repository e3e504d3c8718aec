"""Bytes each process puts into collectives per training step, per method, with gather_distributed.

Two CPU processes (gloo on loopback) compute one forward+backward pass of each loss with
``gather_distributed=True`` on n rows each, for several d. The collectives are counted by
wrapping ``torch.distributed.all_reduce`` / ``all_gather``: the bytes of the tensor each process
contributes (an all-gather contributes its local rows and receives world_size times as many;
an all-reduce contributes and receives one tensor's worth). Prints a table, writes JSON.

    .venv/bin/python benchmarks/distributed_bytes.py            # --n 256 --dims 1024 4096 16384

"exact" and "gram" gather both views (forward) and all-reduce the gathered gradient (backward):
O(world * n * d). "fft" all-reduces per-feature sums (O(d)) and the sums of wrapped diagonals
(O(g*g*b), g = d/b): no embeddings at all. The fft cases pass a permutation, the same on every
rank, as training does.

Every call also starts with the agreement check (``losses/_distributed.agree``): one all-gather
of 16 int64 per process, a fingerprint of the arguments (the permutation hashed) and the row
count. The second table times it alone against a whole forward+backward pass (medians of
``--repeats`` passes, alternated in one process).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = [("exact", None), ("gram", None), ("fft", None), ("fft", 128)]


def _worker(rank, world, port, n, dims, out, repeats):
    from decorr_lite import barlow_twins_loss, vicreg_loss
    from decorr_lite.benchmark import alternate
    from decorr_lite.losses import _distributed

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    counted = {"bytes": 0, "calls": 0}
    real_reduce, real_gather = dist.all_reduce, dist.all_gather

    def all_reduce(tensor, *args, **kwargs):
        counted["bytes"] += tensor.numel() * tensor.element_size()
        counted["calls"] += 1
        return real_reduce(tensor, *args, **kwargs)

    def all_gather(tensors, tensor, *args, **kwargs):
        counted["bytes"] += tensor.numel() * tensor.element_size()
        counted["calls"] += 1
        return real_gather(tensors, tensor, *args, **kwargs)

    dist.all_reduce, dist.all_gather = all_reduce, all_gather
    rows = []
    try:
        for d in dims:
            g = torch.Generator().manual_seed(rank)
            z1 = torch.randn(n, d, generator=g, requires_grad=True)
            z2 = torch.randn(n, d, generator=g, requires_grad=True)
            permutation = torch.randperm(d, generator=torch.Generator().manual_seed(d))  # the same on every rank
            for loss_name, fn in (("vicreg", vicreg_loss), ("barlow", barlow_twins_loss)):
                for method, block in CASES:
                    exponent = 1 if (loss_name == "vicreg" and method == "fft") else 2
                    kwargs = dict(
                        method=method,
                        block_size=block,
                        exponent=exponent,
                        gather_distributed=True,
                        check_finite=False,
                        permutation=permutation if method == "fft" else None,
                    )

                    def step(fn=fn, kwargs=kwargs, z1=z1, z2=z2):
                        fn(z1, z2, **kwargs).backward()

                    arguments = dict(
                        method=method,
                        d=d,
                        block_size=block or d,
                        exponent=float(exponent),
                        permutation=kwargs["permutation"],
                        lambd=0.0051,
                    )

                    def check(loss_name=loss_name, arguments=arguments):
                        _distributed.agree(loss_name, arguments, n)

                    counted.update(bytes=0, calls=0)
                    step()
                    label = method if block is None else f"{method} b={block}"
                    row = {
                        "loss": loss_name,
                        "method": label,
                        "n_per_process": n,
                        "d": d,
                        "world": world,
                        "bytes": counted["bytes"],
                        "calls": counted["calls"],
                    }
                    counted.update(bytes=0, calls=0)
                    check()
                    row["check_bytes"] = counted["bytes"]
                    (passes, checks), _ = alternate([step, check], repeats)
                    row["pass_ms"], row["check_ms"] = 1e3 * statistics.median(passes), 1e3 * statistics.median(checks)
                    rows.append(row)
        if rank == 0:
            Path(out).write_text(json.dumps(rows))
    finally:
        dist.all_reduce, dist.all_gather = real_reduce, real_gather
        dist.destroy_process_group()


def _print_table(rows, dims, width, cell):
    """One line per loss and method, one column per d, each cell written by ``cell(row)``."""
    print(f"{'loss':>7} {'method':>10} " + " ".join(f"{'d=' + str(d):>{width}}" for d in dims))
    for loss_name in ("vicreg", "barlow"):
        for method in dict.fromkeys(r["method"] for r in rows):
            cells = [
                next(r for r in rows if r["loss"] == loss_name and r["method"] == method and r["d"] == d) for d in dims
            ]
            print(f"{loss_name:>7} {method:>10} " + " ".join(cell(c) for c in cells))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="rows per process")
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--world", type=int, default=2, help="number of processes")
    parser.add_argument("--repeats", type=int, default=9, help="timed passes per case (medians reported)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distributed_bytes.json"))
    args = parser.parse_args(argv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(args.world, port, args.n, args.dims, str(out), args.repeats), nprocs=args.world, join=True)
    rows = json.loads(out.read_text())
    print(
        f"bytes each process contributes to collectives per forward+backward, n = {args.n} per process, "
        f"{args.world} processes, float32"
    )
    _print_table(rows, args.dims, 14, lambda c: f"{c['bytes'] / 2**20:11.2f} MB")
    print(
        f"\nthe agreement check ({rows[0]['check_bytes']} bytes per process, one all-gather) against a whole "
        f"forward+backward pass, medians of {args.repeats}"
    )
    _print_table(
        rows,
        args.dims,
        24,
        lambda c: f"{c['check_ms']:6.3f} / {c['pass_ms']:7.1f} ms {100 * c['check_ms'] / c['pass_ms']:4.1f}%",
    )
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
