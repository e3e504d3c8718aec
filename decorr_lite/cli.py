"""Command line: ``python -m decorr_lite train [flags]`` and ``python -m decorr_lite bank``; ``--help``
documents every flag.

Each flag is a field of ``decorr_lite.train.TrainConfig`` (underscores become dashes), so the
command line, the Python API and the cache key always agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from .config import field_kinds
from .losses import LOSSES, METHODS, loss_spec
from .models import ENCODERS
from .settings import PRECISIONS
from .train import TrainConfig, check_runnable, train_ssl
from .training import build_bank

HELP = {
    "loss": f"which loss: {' | '.join(LOSSES)}",
    "method": f"how the decorrelation term is computed: {' | '.join(METHODS)}",
    "block_size": "block size b of the FFT relaxation (default: b = dim, fully relaxed)",
    "exponent": "exponent q of the decorrelation penalty (2 for the exact losses; the FFT paper trains relaxed VICReg with 1)",
    "permutation": "draw a fresh random feature permutation every step (fft only)",
    "encoder": f"backbone: {' | '.join(ENCODERS)} (resnet18 is for GPUs)",
    "width": "channels of the small encoder's first stage (features = 8 x width)",
    "dim": "embedding width d (projector output)",
    "hidden_dim": "projector hidden width (default: dim)",
    "epochs": "training length in epochs over the training subset (default 1)",
    "steps": "training length in optimiser steps (instead of --epochs)",
    "batch_size": "images per batch (each gives two views)",
    "lr": "peak learning rate of AdamW (linear warm-up, cosine decay)",
    "weight_decay": "AdamW weight decay",
    "warmup_fraction": "fraction of the steps spent warming up the learning rate",
    "train_subset": "train on this many images, class-balanced (0: all 50,000)",
    "eval_points": "number of evaluations during training (plus one at step 0)",
    "eval_bank": "kNN bank size at evaluation points (a subset of the final bank; all of it if as large)",
    "eval_queries": "test images evaluated at evaluation points (a subset of the final queries)",
    "final_bank": "kNN bank / linear-probe training size for the final evaluation",
    "final_queries": "test images in the final evaluation (default: all 10,000)",
    "bn_images": "images of the final bank on which BatchNorm statistics are re-estimated before each evaluation",
    "knn_k": "neighbours k of the kNN classifier (cosine similarity)",
    "probe_batch": "test images in the fixed probe batch for the matrices",
    "matrix_dims": "leading dimensions of the covariance / cross-correlation matrices saved",
    "data_root": "folder (or archive) holding CIFAR-10 (default: $DECORR_DATA, else data/)",
    "seed": "random seed (model, batches, augmentations, permutations, subsets)",
    "device": "auto | cpu | cuda[:i] (auto picks CUDA when present)",
    "precision": "auto | fp32 | bf16 | fp16: autocast of the model (auto: bf16 where the device computes it "
    "natively, else fp32; fp16 needs CUDA); the loss is always computed in float32",
}


def _weight_flags() -> dict[str, list[str]]:
    """Every registered loss's weights, by coefficient: the help text of each loss that has it."""
    flags: dict[str, list[str]] = {}
    for spec in LOSSES.values():
        for term in spec.terms:
            flags.setdefault(term.coefficient, []).append(f"{spec.title}: {term.describe()}")
    return flags


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m decorr_lite", description="decorr-lite command line")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="self-supervised training on CIFAR-10; writes metrics.json",
        description="Train an encoder with VICReg or Barlow Twins on CIFAR-10 and write metrics.json "
        "(config, final, history) to --out. Runs are cached in $DECORR_CACHE/runs by configuration. "
        "Under torchrun (torchrun --nproc-per-node N -m decorr_lite train ...) the global batch "
        "(--batch-size) is split over N processes (gloo on the CPU, NCCL on CUDA) and the loss is "
        "computed on the global batch; process 0 evaluates, saves and prints.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "weights":  # one flag per weight, below
            continue
        if f.name == "permutation":
            train.add_argument("--no-permutation", dest="permutation", action="store_false", help=HELP.get(f.name, ""))
            continue
        kind = {"str": str, "float": float, "int": int}[field_kinds(f)[0]]
        choices = {"loss": tuple(LOSSES), "method": METHODS, "encoder": ENCODERS, "precision": PRECISIONS}.get(f.name)
        train.add_argument(flag, type=kind, default=f.default, choices=choices, help=HELP.get(f.name, ""))
    weights = train.add_argument_group("weights", "each loss's weights, from its spec (the chosen loss's only)")
    for coefficient, helps in _weight_flags().items():
        weights.add_argument(
            "--" + coefficient.replace("_", "-"), dest=coefficient, type=float, default=None, help="; ".join(helps)
        )
    train.add_argument("--out", default=None, help="folder for metrics.json, arrays.npz and model.pt")
    train.add_argument(
        "--overwrite", action="store_true", help="let --out replace the run files a folder already holds"
    )
    train.add_argument(
        "--no-cache", action="store_true", help="train even if this configuration is cached, and replace the cached run"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument(
        "--no-bank", action="store_true", help="train even if the run bank shipped with the package holds this run"
    )
    bank = commands.add_parser(
        "bank",
        help="build or check the run bank (every run the notebooks show)",
        description="Train, in full mode with the classroom settings, every run the notebooks show or a "
        "widget can select, and write them (metrics and float32 arrays, no weights) into the package's "
        "bank folder ($DECORR_BANK to write elsewhere). Needs CIFAR-10 ($DECORR_DATA).",
    )
    what = bank.add_mutually_exclusive_group()  # each is its own task: a flag ignored silently would mislead
    what.add_argument("--only", action="append", metavar="NAME", help="rebuild this entry only (repeatable)")
    what.add_argument(
        "--check",
        action="store_true",
        help="verify the bank against the current code and each entry's arrays against its history; train nothing",
    )
    what.add_argument("--list", action="store_true", help="list the entries and their configurations")
    bank.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def bank_main(args: dict) -> int:
    from . import bank

    if args["list"]:
        for name, fields in bank.bank_runs().items():
            print(f"{name:32s} {json.dumps(fields)}")
        return 0
    if args["check"]:
        problems = bank.check()
        for line in problems:
            print(line)
        print(
            f"{len(bank.bank_runs())} entries, {len(problems)} problem(s), {bank.size_bytes() / 2**20:.1f} MB in "
            f"{bank.bank_dir()}"
        )
        return 1 if problems else 0
    try:
        names = args["only"]
        for name in names or []:
            bank.bank_config(name)
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    seconds = build_bank(names, progress=not args["quiet"])
    print(f"{len(seconds)} entries in {sum(seconds.values()):.0f} s; the bank is {bank.size_bytes() / 2**20:.1f} MB")
    return 0


def history_table(result) -> str:
    """A run's history, one row per evaluation point, and its final numbers (plain text)."""
    config, final = result.config, result.final
    terms = [term.name for term in loss_spec(config["loss"]).terms]
    header = ["step", "loss", *terms, "knn_top1", "eff_rank", "median_std"]
    rows = [header]
    for h in result.history:
        rows.append(
            [
                str(h["step"]),
                *(f"{h.get(k, float('nan')):.4g}" for k in ["loss", *terms]),
                f"{h['knn_top1']:.3f}",
                f"{h['effective_rank']:.1f}",
                f"{h['median_std']:.3g}",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append("")
    lines.append(
        f"final: kNN top-1 {final['knn_top1']:.3f}, linear probe top-1 {final['linear_probe_top1']:.3f}, "
        f"effective rank {final['effective_rank']:.1f}, median std {final['median_std']:.3g} "
        f"-> {final['verdict']}; {final['seconds']:.0f} s ({final.get('precision', 'fp32')})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    if args.pop("command") == "bank":
        return bank_main(args)
    out, no_cache, quiet, no_bank = args.pop("out"), args.pop("no_cache"), args.pop("quiet"), args.pop("no_bank")
    overwrite = args.pop("overwrite")
    weights = {c: value for c in _weight_flags() if (value := args.pop(c)) is not None}
    if args["train_subset"] == 0:
        args["train_subset"] = None
    try:  # every setting, the device and --out are checked before any data is read
        config = TrainConfig(**args, weights=weights)
        check_runnable(config, out, overwrite=overwrite)
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = train_ssl(config, retrain=no_cache, use_bank=not no_bank, out=out, overwrite=overwrite, progress=not quiet)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, process 0 reports and saves
        return 0
    print(history_table(result))
    if result.path is not None:
        print(f"written to {result.path}" + (" (from the cache)" if result.from_cache else ""))
    elif result.from_bank:
        print("from the run bank shipped with the package (--no-bank to train it here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
