"""Self-supervised training on CIFAR-10 with any combination of loss terms.

``train_ssl(loss="vicreg", steps=300)`` trains a small encoder and projector on two augmented
views of CIFAR-10 images and records, at evaluation points, every loss term and what
``evaluation`` measures; at the end also a linear probe. A weight of 0 switches a term off (it is
still measured, without a gradient, so that a plot can show what it would have been). A run is
looked up in the run store first (``runs.find_run``: your cache, then the run bank). On CPU,
reruns with the same seed give the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import bank, record, runs
from .augment import TwoViews
from .config import TrainConfig
from .data import load_cifar10
from .evaluation import (
    _evaluate,
    _evaluation_sets,
    _final_evaluation,
    check_not_diverged,
    embed,
    recalibrated,
)
from .losses import loss_spec
from .losses._module import DecorrelationLoss
from .memory import peak_memory_since, start_peak_memory
from .models import model_for
from .record import TrainResult, run_key
from .settings import autocast, resolve_device, resolve_precision


def check_runnable(
    config: TrainConfig, out: str | os.PathLike | None = None, *, overwrite: bool = False
) -> tuple[str, str]:
    """What can only be checked on this machine, before any data is read: the device exists, and
    ``out`` (if given) is a folder that can be written, or can be created, and holds no run files
    that the run would replace (unless ``overwrite``). Returns the device and precision the run
    uses (``"auto"`` resolved), which the rest of the run is given rather than resolving again."""
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)  # fp16 needs CUDA
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available():
            raise ValueError(f"device={config.device!r}, but CUDA is not available here: use device='cpu' or 'auto'")
        if index >= torch.cuda.device_count():
            raise ValueError(f"device={config.device!r}, but there are {torch.cuda.device_count()} CUDA device(s)")
    if out is not None:
        runs.check_out(Path(out), overwrite=overwrite)
    return device, precision


def train_ssl(
    config: TrainConfig | None = None,
    *,
    cache: bool = True,
    retrain: bool = False,
    use_bank: bool = True,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    callback: Callable[[int, int], None] | None = None,
    **settings,
) -> TrainResult:
    """Train (or load) one self-supervised run.

    A run is looked up first in the user's run cache, then in the run bank shipped with the
    package (``decorr_lite.bank``: every run the notebooks show), and trained only if neither
    has it.

    Args:
        config: a ``TrainConfig``; or pass its fields as keyword arguments (``settings``).
        cache: read and write ``$DECORR_CACHE/runs/<key>``. An entry that does not load
            completely (a damaged file) is trained again and replaced. A cache that cannot be
            written (read-only, full) only turns caching off, with a warning: the run is returned.
        retrain: train even if the run is cached or in the bank, and replace the cache entry.
        use_bank: serve the run from the bank when it holds it (trained elsewhere, with the data,
            device and precision its ``final["provenance"]`` records). The bank answers a
            request for ``precision="auto"`` or for the precision it was trained in.
        out: also write ``metrics.json``, ``arrays.npz`` and ``model.pt`` to this folder
            (checked before training: it must be a folder that can be written or created).
            Nothing else in it is touched.
        overwrite: let ``out`` replace those three files when it holds them already (without it,
            such a folder is refused before training).
        progress: tqdm progress bars (widgets in JupyterLab); False for silence.
        callback: called as ``callback(steps_done, total_steps)`` after every training step
            (a widget's progress bar); not called for a run loaded from the cache.

    Returns:
        a ``TrainResult``.
    """
    if config is None:
        config = TrainConfig(**settings)
    elif settings:
        config = dataclasses.replace(config, **settings)
    device, precision = check_runnable(config, out, overwrite=overwrite)
    world, rank, started_group = _distributed_setup(device)
    try:
        if world > 1 and config.batch_size < 2 * world:
            raise ValueError(
                f"batch_size={config.batch_size} over {world} processes leaves a process fewer than 2 images "
                f"(BatchNorm and the batch statistics need 2): use batch_size >= {2 * world}"
            )
        key = run_key(config, world, precision=precision)
        result = None
        if not retrain:  # the bank has no model weights, which out= writes; and no run of several processes
            result = runs.find_run(config, key, cache=cache, use_bank=use_bank and out is None and world == 1)
        if result is None:
            result = _train(config, device, precision, progress and rank == 0, callback, world, rank)
            if rank != 0:  # the other processes helped train; process 0 evaluates and saves
                return result
            if cache:  # the key again: the data may have been downloaded for this run
                runs.save_run(result, run_key(config, world, precision=precision))
    finally:
        if started_group:
            torch.distributed.destroy_process_group()
    if out is not None and rank == 0:  # one writer, also when every process found the run cached
        out = Path(out)
        if result.path is None or result.path.resolve() != out.resolve():
            runs.write_run_files(result, out)
        result.path = out
    return result


def build_loss(config: TrainConfig, distributed: bool = False) -> DecorrelationLoss:
    """The loss module of a run: its spec's module with the run's weights and method. It draws
    the feature permutation of ``method="fft"`` at every step from its own generator, seeded
    from the run's seed, and measures the terms that are off too (without a gradient), for the
    curves; with ``distributed``, of the global batch over every process."""
    spec = loss_spec(config.loss)
    return spec.module(
        **config.weights,
        method=config.method,
        block_size=config.block_size,
        exponent=config.exponent,
        permute=config.permutation,
        seed=config.seed + 5,
        check_finite=False,
        gather_distributed=distributed,
        measure_all_terms=True,
    )


def evaluation_steps(total: int, points: int) -> list[int]:
    """The steps at which a run of ``total`` steps is evaluated: ``points`` evenly spaced ones
    after step 0 (every step when there are at least as many points as steps)."""
    if points >= total:
        return list(range(total + 1))
    return sorted({round(i * total / points) for i in range(points + 1)})


def _lr_at(step: int, total: int, config: TrainConfig) -> float:
    warmup = int(config.warmup_fraction * total)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def _distributed_setup(device: str) -> tuple[int, int, bool]:
    """(world size, rank, whether this call started the process group).

    Under ``torchrun`` (WORLD_SIZE > 1 in the environment) the default process group is
    started here if the caller has not: NCCL when training on CUDA, gloo on the CPU. Without
    torchrun, or with one process, training is single-process.
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank(), False
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 1, 0, False
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_world_size(), dist.get_rank(), True


def _train(
    config: TrainConfig, device: str, precision: str, progress: bool, callback=None, world: int = 1, rank: int = 0
) -> TrainResult:
    from tqdm.auto import tqdm

    started = time.perf_counter()
    device = torch.device(device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # this process's GPU
    train_x, train_y = load_cifar10(
        "train", config.data_root, subset=config.train_subset, seed=config.seed, progress=progress
    )
    test_x, test_y = load_cifar10("test", config.data_root, progress=progress)
    if config.batch_size > train_x.shape[0]:
        raise ValueError(f"batch_size={config.batch_size} is larger than the training set ({train_x.shape[0]})")
    augment = TwoViews().to(device)
    sets = _evaluation_sets(config, (train_x, train_y), (test_x, test_y), augment, device)
    model, forward, as_input = _model(config, device, world)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # Mixed precision: the model runs under autocast; its weights, BatchNorm statistics and the
    # optimiser state stay float32, and the loss is computed on float32 embeddings. fp16 (CUDA
    # only) scales the loss so that small gradients survive its narrow range.
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    loss_fn = build_loss(config, distributed=world > 1)

    total = config.total_steps(train_x.shape[0])
    eval_at = evaluation_steps(total, config.eval_points)
    per_epoch = max(train_x.shape[0] // config.batch_size, 1)

    def evaluate():
        check_not_diverged(config, {f"the weights of {name}": p for name, p in model.named_parameters()})
        return _evaluate(model, config, device, sets.bank, sets.queries, sets.calibration, sets.probe_views, precision)

    # process 0 evaluates; the others wait for it at the next collective
    history = _History(evaluate if rank == 0 else None, per_epoch, eval_at)
    train_seconds, peak_bytes = 0.0, 0

    model.train()
    bar = tqdm(total=total, desc=_describe(config, precision), unit="step", disable=not progress)
    for step, batch, seed in _batches(train_x, config, total, world, rank):
        if step in eval_at:
            history.point(step, train_seconds)
        baseline = start_peak_memory(device)
        t0 = time.perf_counter()
        v1, v2 = augment(batch.to(device), seed=seed)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, total, config)
        loss, terms = training_step(
            forward, optimizer, scaler, loss_fn, config, precision, as_input(v1), as_input(v2), step
        )
        train_seconds += time.perf_counter() - t0
        peak_bytes = max(peak_bytes, peak_memory_since(device, baseline))
        history.step(step, loss.item(), terms)
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3g}")
        if callback is not None:
            callback(step + 1, total)
    bar.close()
    history.point(total, train_seconds)
    if rank != 0:
        return TrainResult(config.as_dict(), [], {"steps": total, "train_seconds": train_seconds}, {})

    # the last evaluation point measured the final sets already when they are its own sets
    reuse = history.last_features if sets.bank is sets.final_bank and sets.queries is sets.final_queries else None
    final = _final_evaluation(
        model, config, device, sets.final_bank, sets.final_queries, sets.calibration, precision, reuse
    )
    final.update(
        seconds=time.perf_counter() - started,
        train_seconds=train_seconds,
        seconds_per_step=train_seconds / total if total else 0.0,
        steps=total,
        world_size=world,
        precision=precision,
        # The largest growth of memory during one training step, above what was held before it
        # (the model, optimiser state and data): torch's allocator peak on CUDA; on the CPU the
        # growth of the resident set, a lower bound (memory the allocator reuses is not seen) in
        # which the d x d matrices of the exact loss at large d stand out.
        peak_step_memory_mb=peak_bytes / 2**20,
        provenance=record.provenance(config, device, precision),
    )
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    return TrainResult(config.as_dict(), history.entries, final, history.arrays(), state_dict=state)


def _model(config: TrainConfig, device: torch.device, world: int):
    """The model in its memory format, what the training step calls (the model, or its DDP
    wrapper), and the function that lays out its input images."""
    torch.manual_seed(config.seed)
    model, as_input = prepare_model(model_for(config).to(device))
    if world == 1:
        return model, model, as_input
    # Every process starts from the same weights (same seed) and DDP keeps them equal. The loss is
    # computed on the global batch (gather_distributed); its local gradients are world_size times
    # the true ones, which DDP's averaging undoes. BatchNorm statistics stay per process (no
    # SyncBatchNorm: it needs CUDA, and process 0's evaluation, which runs BatchNorm in training
    # mode alone, would wait for the others forever).
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model, ddp, as_input


def _batches(train_x: torch.Tensor, config: TrainConfig, total: int, world: int, rank: int):
    """(step, images, augmentation seed) of this process for every step: a fresh shuffle of the
    training set per epoch; with several processes, each takes its share of the global batch and
    draws its own augmentations."""
    n = train_x.shape[0]
    per_epoch = max(n // config.batch_size, 1)
    order_gen = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(n, generator=order_gen)
    for step in range(total):
        position = step % per_epoch
        if position == 0 and step > 0:
            order = torch.randperm(n, generator=order_gen)
        batch = train_x[order[position * config.batch_size : (position + 1) * config.batch_size]]
        seed = config.seed * 1_000_003 + step + 1
        if world > 1:
            batch, seed = batch.tensor_split(world)[rank], seed + 7919 * rank
        yield step, batch, seed


class _History:
    """A run's evaluation points: the scalars and arrays ``evaluate()`` measures at each (None on
    the processes that do not evaluate), with the mean of each loss term over the steps since the
    previous point; at step 0 the terms of the first batch before any update."""

    def __init__(self, evaluate, per_epoch: int, eval_at: list[int]) -> None:
        self.evaluate, self.per_epoch = evaluate, per_epoch
        self.entries: list[dict] = []
        self.collected: dict[str, list] = {"eval_steps": [np.array(eval_at)]}
        self.running: dict[str, list] = {}
        self.last_features = None  # what the latest point measured, for the final evaluation

    def point(self, step: int, train_seconds: float) -> None:
        if self.evaluate is None:
            self.running.clear()
            return
        scalars, arrays, self.last_features = self.evaluate()
        entry = {"step": step, "epoch": step / self.per_epoch, "seconds": train_seconds}
        entry.update({k: float(np.mean(v)) for k, v in self.running.items()})
        entry.update(scalars)
        self.entries.append(entry)
        self.running.clear()
        for k, v in arrays.items():
            self.collected.setdefault(k, []).append(v)

    def step(self, step: int, loss: float, terms: dict) -> None:
        self.running.setdefault("loss", []).append(loss)
        for k, v in terms.items():
            self.running.setdefault(k, []).append(v)
        if step == 0 and self.entries:  # step 0's point was measured before the first update
            self.entries[0].update({"loss": loss, **terms})

    def arrays(self) -> dict[str, np.ndarray]:
        steps = self.collected["eval_steps"][0]
        return {"eval_steps": steps, **{k: np.stack(v) for k, v in self.collected.items() if k != "eval_steps"}}


def training_step(
    forward, optimizer, scaler, loss_fn: DecorrelationLoss, config: TrainConfig, precision: str, v1, v2, step: int = 0
) -> tuple[torch.Tensor, dict]:
    """One optimiser step on two views: the model under autocast, the loss on its float32
    embeddings, the (fp16: scaled) backward pass. Returns the loss and every term's value."""
    with autocast(v1.device, precision):
        z1, z2 = forward(v1), forward(v2)
    loss = loss_fn(z1.float(), z2.float())
    terms = {name: float(value) for name, value in loss_fn.terms.items()}
    if not torch.isfinite(loss):
        values = ", ".join(f"{name} {value:.4g}" for name, value in terms.items())
        raise FloatingPointError(
            f"the loss became {loss.item()} at step {step} (unweighted terms: {values}): training diverged; "
            f"lower lr (now {config.lr})"
        )
    if loss.requires_grad:  # with every term off there is nothing to learn: the model stays as it is
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss, terms


def prepare_model(model, channels_last: bool = True):
    """The model in its memory format, and the function that lays out its input images the same
    way. channels_last is the NHWC layout that oneDNN's and cuDNN's convolutions prefer (what it
    buys on a CPU: benchmarks/train_throughput.py, docs/training.md); on CUDA it is NVIDIA's
    recommendation for mixed precision."""
    if channels_last:
        return model.to(memory_format=torch.channels_last), lambda x: x.contiguous(memory_format=torch.channels_last)
    return model, lambda x: x


def _describe(config: TrainConfig, precision: str) -> str:
    terms = " ".join(f"{term.label} {config.weights[term.coefficient]:g}" for term in loss_spec(config.loss).terms)
    return f"{config.loss} ({terms}, {config.method}, {precision})"


def build_bank(
    names: list[str] | None = None, *, folder: Path | None = None, progress: bool = True
) -> dict[str, float]:
    """Train the named entries of the run bank (``bank.bank_runs()``) (default: all) from the data and write them; returns the seconds
    each took. Every entry is trained anew (neither the run cache nor the old bank is read)."""
    folder = folder or bank.bank_dir()
    names = list(bank.bank_runs()) if names is None else names
    for name in names:
        bank.bank_config(name)  # an unknown name fails before anything trains
    seconds = {}
    for name in names:
        started = time.perf_counter()
        config = bank.bank_config(name)
        run = train_ssl(config, cache=False, use_bank=False, progress=progress)
        encoder = _evaluated_encoder(config, run) if bank.stores_arrays(name) else None
        bank.save_entry(name, run, folder, encoder=encoder)
        seconds[name] = time.perf_counter() - started
        print(f"{name:44s} {seconds[name]:5.1f} s  kNN {run.final['knn_top1']:.3f}  {run.final['verdict']}", flush=True)
    return seconds


def _evaluated_encoder(config: TrainConfig, run: TrainResult) -> dict:
    """The trained encoder as the run's evaluation measured it (BatchNorm re-estimated on the
    same images, the same precision), and its features of the shipped sample images."""
    from .data.samples import SAMPLES_FILE

    device = torch.device(resolve_device(config.device))
    precision = run.final["precision"]
    model = model_for(config)
    model.load_state_dict(run.state_dict)
    train = load_cifar10("train", config.data_root, subset=config.train_subset, seed=config.seed, progress=False)
    test = load_cifar10("test", config.data_root, progress=False)
    sets = _evaluation_sets(config, train, test, TwoViews().to(device), device)
    model = recalibrated(model.to(device), sets.calibration, device, precision=precision)
    with np.load(SAMPLES_FILE) as shipped:  # the shipped images, so that a test without data can compare
        images = torch.from_numpy(shipped["images"])
    features, _ = embed(model, images, device, precision=precision)
    return bank.encoder_arrays(model.encoder.state_dict(), features.float().cpu().numpy())
