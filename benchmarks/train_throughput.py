"""Training throughput: steps and images per second for each encoder, width, precision and
memory format, timed alternately in one process.

    .venv/bin/python benchmarks/train_throughput.py                 # the small encoder, widths 16 and 32
    .venv/bin/python benchmarks/train_throughput.py --encoders small:16 resnet18 --passes 3

A step is what ``train_ssl`` runs (``decorr_lite.train.training_step``): the model on two views
of a batch under autocast, VICReg's loss on the float32 embeddings (d = 1024, exact, the default
weights), the backward pass and an AdamW step. Augmentation and evaluation are left out. The
views are fixed random images, so every variant does the same arithmetic; each variant has its
own model and optimiser, built from the same seed. Every variant's passes are interleaved
(``decorr_lite.benchmark.alternate``), so a busy spell of a shared host slows all alike.
Prints a table (median seconds per step, images per second, speed-up over fp32 with the
default memory format) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decorr_lite import settings, train  # noqa: E402
from decorr_lite.benchmark import alternate, describe_machine  # noqa: E402
from decorr_lite.models import build_model  # noqa: E402


def variant_step(encoder: str, width: int, precision: str, channels_last: bool, batch: int, dim: int, device):
    torch.manual_seed(0)
    model, as_input = train.prepare_model(build_model(encoder, dim, None, width).to(device), channels_last)
    model.train()
    config = train.TrainConfig(encoder=encoder, width=width, dim=dim, batch_size=batch, precision=precision)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    g = torch.Generator().manual_seed(1)
    views = [as_input(torch.randn(batch, 3, 32, 32, generator=g).to(device)) for _ in range(2)]
    loss_fn = train.build_loss(config)
    return lambda: train.training_step(model, optimizer, scaler, loss_fn, config, precision, *views)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--encoders",
        nargs="+",
        default=["small:16", "small:32"],
        help="encoder[:width] for each encoder to measure (resnet18 is slow on a CPU)",
    )
    parser.add_argument(
        "--precisions", nargs="+", default=None, help="default: fp32 and what auto resolves to here (and fp16 on CUDA)"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="images per view")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--passes", type=int, default=6, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_throughput.json"))
    args = parser.parse_args(argv)
    device = torch.device(settings.resolve_device(args.device))
    auto = settings.resolve_precision("auto", device.type)
    precisions = args.precisions or list(dict.fromkeys(["fp32", auto] + (["fp16"] if device.type == "cuda" else [])))
    variants = []
    for spec in args.encoders:
        encoder, _, width = spec.partition(":")
        for precision in precisions:
            for channels_last in (False, True):
                variants.append(
                    dict(encoder=encoder, width=int(width or 32), precision=precision, channels_last=channels_last)
                )
    steps = [variant_step(**v, batch=args.batch_size, dim=args.dim, device=device) for v in variants]
    times, _ = alternate(steps, args.passes, device.type)
    machine = {
        **describe_machine(),
        "device": str(device),
        "cores": os.cpu_count(),
        "native_bf16": settings.native_bf16(device.type),
        "auto": auto,
    }
    print(
        f"training steps on {device} ({torch.get_num_threads()} threads, native bf16: {machine['native_bf16']}, "
        f"auto = {auto}); batch {args.batch_size} x 2 views, d = {args.dim}, VICReg exact; medians of {args.passes}"
    )
    print(
        f"{'encoder':>10} {'precision':>9} {'layout':>13} {'s/step':>8} {'steps/s':>8} {'images/s':>9} {'speed-up':>9}"
    )
    rows = []
    for v, t in zip(variants, times):
        seconds = statistics.median(t)
        base = next(
            statistics.median(tt)
            for vv, tt in zip(variants, times)
            if vv["encoder"] == v["encoder"]
            and vv["width"] == v["width"]
            and vv["precision"] == "fp32"
            and not vv["channels_last"]
        )
        row = {
            **v,
            "seconds_per_step": seconds,
            "steps_per_second": 1 / seconds,
            "images_per_second": 2 * args.batch_size / seconds,
            "speedup": base / seconds,
            "times": t,
        }
        rows.append(row)
        name = v["encoder"] if v["encoder"] == "resnet18" else f"small w{v['width']}"
        layout = "channels_last" if v["channels_last"] else "default"
        print(
            f"{name:>10} {v['precision']:>9} {layout:>13} {seconds:8.3f} {1 / seconds:8.2f} "
            f"{row['images_per_second']:9.0f} {row['speedup']:8.2f}x"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"machine": machine, "batch_size": args.batch_size, "dim": args.dim, "rows": rows}, indent=1)
    )
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
