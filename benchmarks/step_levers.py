"""What each lever of the classroom recipe costs: one training step of the recipe and of its
variants, the augmentation of a step and the features of an evaluation point.

    .venv/bin/python benchmarks/step_levers.py
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python benchmarks/step_levers.py
        # an AVX-512 machine standing in for a laptop without it

A step is ``decorr_lite.train.training_step`` on fixed random views (2 x 256 images, VICReg's
exact loss at d = 1024, fp32, channels_last, AdamW), for the recipe's model and for one change
at a time: the projector's hidden width, the method, the encoder's width, a stride-2 first
convolution, 128 pairs, and the backbone alone (a single linear layer as projector). Every
variant is timed in turn (``benchmark.alternate``), the median of ``--passes`` steps. Prints
the machine first, then a table, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decorr_lite import train  # noqa: E402
from decorr_lite.augment import TwoViews  # noqa: E402
from decorr_lite.benchmark import alternate, describe_machine, machine_line  # noqa: E402
from decorr_lite.models import SmallConvNet, SSLModel, build_model  # noqa: E402


def variants(dim: int) -> dict[str, tuple[nn.Module, int, str]]:
    """name -> (model, pairs per step, method)."""
    torch.manual_seed(0)
    return {
        f"the recipe: width 16, projector 128 -> {dim} -> {dim} -> {dim}": (
            build_model("small", dim, None, 16),
            256,
            "exact",
        ),
        "projector's hidden width 512": (build_model("small", dim, 512, 16), 256, "exact"),
        'method="fft" instead of exact': (build_model("small", dim, None, 16), 256, "fft"),
        "width 12": (build_model("small", dim, None, 12), 256, "exact"),
        "the first convolution with stride 2": (build_model("small", dim, None, 16, stem_stride=2), 256, "exact"),
        "the backbone alone (a linear projector)": (SSLModel(SmallConvNet(16), nn.Linear(128, dim)), 256, "exact"),
        "128 pairs a step instead of 256": (build_model("small", dim, None, 16), 128, "exact"),
    }


def step(model: nn.Module, pairs: int, method: str, dim: int):
    model, as_input = train.prepare_model(model)
    model.train()
    config = train.TrainConfig(dim=dim, batch_size=pairs, precision="fp32", method=method)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    g = torch.Generator().manual_seed(1)
    views = [as_input(torch.randn(pairs, 3, 32, 32, generator=g)) for _ in range(2)]
    loss_fn = train.build_loss(config)
    return lambda: train.training_step(model, optimizer, scaler, loss_fn, config, "fp32", *views)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--passes", type=int, default=5, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "step_levers.json"))
    args = parser.parse_args(argv)
    host = describe_machine()
    print(machine_line(host), flush=True)
    cases = variants(args.dim)
    times, _ = alternate([step(*case, args.dim) for case in cases.values()], args.passes)
    rows = {name: statistics.median(t) for name, t in zip(cases, times)}

    augment = TwoViews()
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    (augmentation,), _ = alternate([lambda: augment(images, seed=0)], args.passes)
    rows["augmentation of 256 pairs (kornia)"] = statistics.median(augmentation)

    model, as_input = train.prepare_model(build_model("small", args.dim, None, 16).eval())
    thousand = as_input(torch.randn(1000, 3, 32, 32))
    with torch.no_grad():
        model.features(thousand)
        started = time.perf_counter()
        model.features(thousand)
        rows["features of 1,000 evaluation images"] = time.perf_counter() - started

    print(f"{'variant':62s} {'s / step':>9}")
    for name, seconds in rows.items():
        print(f"{name:62s} {seconds:9.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": host, "seconds": rows, "passes": args.passes}, indent=1))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
