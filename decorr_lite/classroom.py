"""What the CIFAR-10 notebooks share: their settings, training (or loading) labelled runs, and
a table of the results."""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from ._table import text_table
from .config import TrainConfig
from .memory import peak_memory_since, start_peak_memory
from .models import model_for
from .record import TrainResult
from .runs import cached_run
from .settings import resolve_device, resolve_precision
from .training import build_loss, prepare_model, train_ssl, training_step


def train_runs(runs: dict[str, dict], settings: dict) -> dict[str, TrainResult]:
    """Train (or load from the cache) each labelled run, ``settings`` updated by the run's own
    fields (``{"VICReg, variance off": {"std_coeff": 0}}``), and print one line per run: how
    long it took to train and evaluate when it was trained, and whether it came from the cache."""
    results = {}
    width = max(map(len, runs), default=0)
    for label, fields in runs.items():
        config = TrainConfig(**{**settings, **fields})
        run = cached_run(config)
        if run is None:  # say so before the wait: a new run trains from the data
            from .paths import data_dir

            print(
                f"{label:{width}s}  not in the run bank or your run cache: training it from CIFAR-10 in "
                f"{data_dir(config.data_root)} (how long a run takes on your kind of machine: docs/training.md)",
                flush=True,
            )
            run = train_ssl(config, progress=False)
        results[label] = run
        print(f"{label:{width}s}  {run.final['seconds']:4.0f} s to train and evaluate{_origin(run)}")
    return results


def seed_runs(runs: dict[str, dict], settings: dict) -> dict[str, list[TrainResult]]:
    """Each labelled run (as ``train_runs`` takes them) with every seed the run bank trained it
    with (``bank.SEEDS``; the first is the run the notebooks show): the evidence for comparisons
    across seeds. Only settings of the bank have seeds: another setting raises, naming it."""
    from . import bank

    evidence = {}
    for label, fields in runs.items():
        name = bank.shown_name(TrainConfig(**{**settings, **fields}))
        if name is None:
            raise KeyError(
                f"{label!r}: the run bank holds no seeds of this setting ({fields}); the bank's are {list(bank.shown_runs())}"
            )
        evidence[label] = bank.load_seeds(name)
    return evidence


def _origin(run: TrainResult) -> str:
    """Where a run came from, for the line a notebook prints about it."""
    if run.from_bank:
        p = run.final.get("provenance", {})
        data = p.get("data", {})
        # the bank was trained from a re-encoding of the images: a run retrained from the official
        # archive differs slightly, and the line says so where the run is shown
        what = {
            "image-archive": "CIFAR-10 re-encoded as image files",
            "official-archive": "the official CIFAR-10 archive",
        }
        return (
            f" (from the run bank: trained {p.get('date', '')[:10]} on {what.get(data.get('kind'), 'CIFAR-10')}"
            f" ({data.get('name', '?')}), {run.final.get('precision', '')})"
        )
    return " (loaded from the cache)" if run.from_cache else ""


def summary_table(runs: dict) -> str:
    """A plain-text table of the final numbers of labelled runs (``{label: TrainResult}``)."""
    rows = [("run", "steps", "s/step", "kNN", "probe", "eff. rank", "lead. share", "median std", "verdict")]
    for label, run in runs.items():
        f = run.final
        rows.append(
            (
                label,
                str(f["steps"]),
                f"{f['seconds_per_step']:.2f}",
                f"{f['knn_top1']:.3f}",
                f"{f['linear_probe_top1']:.3f}",
                f"{f['effective_rank']:.1f}",
                f"{f['leading_share']:.3f}",
                f"{f['median_std']:.3f}",
                f["verdict"],
            )
        )
    return text_table(rows)


def step_cost(config: TrainConfig, steps: int = 4, seed: int = 0) -> dict:
    """What one training step of ``config`` costs on this machine: the median seconds of
    ``steps`` steps (after one warm-up) and the largest growth of memory in a step (as
    ``train_ssl`` measures it), on random views, since the cost does not depend on what the
    images show. Needs no dataset, so notebooks can time d = 8192 anywhere."""
    device = torch.device(resolve_device(config.device))
    precision = resolve_precision(config.precision, device.type)
    torch.manual_seed(seed)
    model, as_input = prepare_model(model_for(config).to(device))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    g = torch.Generator().manual_seed(seed)
    loss_fn = build_loss(dataclasses.replace(config, seed=seed))
    views = [as_input(torch.randn(config.batch_size, 3, 32, 32, generator=g).to(device)) for _ in range(2)]
    seconds, peak = [], 0
    for step in range(steps + 1):
        baseline = start_peak_memory(device)
        t0 = time.perf_counter()
        training_step(model, optimizer, scaler, loss_fn, config, precision, *views)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:  # the first step warms up (allocations, kernel selection)
            seconds.append(time.perf_counter() - t0)
        peak = max(peak, peak_memory_since(device, baseline))
    return {"seconds_per_step": statistics.median(seconds), "peak_step_memory_mb": peak / 2**20, "precision": precision}
