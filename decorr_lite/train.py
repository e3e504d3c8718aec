"""Self-supervised training on CIFAR-10 with any combination of loss terms, and its measurements.

``train_ssl(loss="vicreg", std_coeff=0, steps=300)`` trains a small encoder and projector on
two augmented views of CIFAR-10 images and records, at evaluation points, every loss term, the
per-dimension std, the effective rank and the spectrum of the embeddings, the covariance and
cross-correlation matrices of a fixed probe batch and the kNN accuracy of the backbone; at the
end also a linear probe. A weight of 0 switches a term off (it is still measured, without a
gradient, so that a plot can show what it would have been).

Runs are cached under ``$DECORR_CACHE/runs/<key>`` keyed by the full configuration, so asking
again for a run already trained returns at once. On CPU, reruns with the same seed give the same
numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import _atomic, diagnostics
from .augment import TwoViews, normalize
from .data import balanced_subset, cifar10, load_cifar10
from .data.cifar10 import CacheWarning
from .losses import (
    LOSSES,
    METHODS,
    barlow_twins_terms,
    batch_standardize,
    covariance_loss,
    cross_correlation,
    loss_spec,
)
from .losses._checks import check_exponent, check_method
from .losses._module import DecorrelationLoss
from .memory import peak_memory_since, start_peak_memory
from .models import ENCODERS, build_model
from .paths import cache_dir
from .settings import PRECISIONS, quick_mode, resolve_device, resolve_precision

_VICREG, _BARLOW = LOSSES["vicreg"].default, LOSSES["barlow"].default  # the weights' defaults
# every loss's coefficients: TrainConfig has one field for each (a weight of 0 switches its term off)
COEFFICIENTS = tuple(term.coefficient for spec in LOSSES.values() for term in spec.terms)
# Part of every cache key: bump it when a change to this file changes the numbers of a run.
# 4: the relaxed sums are normalised before the power (rounding-level changes); 5: the evaluation
# points use subsets of the final evaluation's sets, BatchNorm re-estimated on bn_images of its bank;
# 6: the dimensional-collapse verdict reads the leading direction's share of the variance
RUN_FORMAT = 6
MAX_SEED = 2**32 - 1  # scikit-learn's random_state and numpy's legacy seeds take at most this
MAX_EVAL_POINTS = 1000


def classroom_settings(quick: bool = False) -> dict:
    """The ``TrainConfig`` fields that the CIFAR-10 notebooks (02, 03, 06) share, so that a run
    trained by one notebook is a cache hit for the next, and the run bank (``decorr_lite.bank``)
    holds every run they show, trained with these settings in full mode.

    Full mode: the width-16 ``SmallConvNet`` (128 features; 3x faster than width 32, so it
    affords more steps), d = 1024, 300 steps of 256 image pairs drawn from all 50,000 training
    images, 6 evaluation points. ``quick=True`` (``quick=None``: when ``DECORR_QUICK=1``): d = 256,
    60 steps on a balanced 5,000-image subset and small evaluation sets, for tests that must
    train. Both train in the default precision (``auto``: bf16 where the CPU or GPU has it
    natively). How long a run takes, and what it reaches: docs/training.md.
    """
    if quick is None:
        quick = quick_mode()
    if quick:
        # Barlow Twins' lambda 0.0051 was tuned for d = 8192; at d = 256 and 60 steps it leaves
        # the features below the untrained encoder's, 0.02 lifts them above (docs/training.md)
        return dict(
            encoder="small",
            width=16,
            dim=256,
            steps=60,
            train_subset=5000,
            eval_points=3,
            eval_bank=2000,
            eval_queries=1000,
            final_bank=2000,
            final_queries=1000,
            lambd=0.02,
        )
    # every evaluation point on the final evaluation's sets: the curves start at the untrained
    # encoder's numbers and end at the run's final ones, as its table reports them
    return dict(
        encoder="small",
        width=16,
        dim=1024,
        steps=300,
        train_subset=None,
        eval_points=6,
        eval_bank=10000,
        eval_queries=5000,
        final_bank=10000,
        final_queries=5000,
    )


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
                f"{data_dir(config.data_root)} (about a minute on 2 CPU cores with native bf16)",
                flush=True,
            )
            run = train_ssl(config, progress=False)
        results[label] = run
        print(f"{label:{width}s}  {run.final['seconds']:4.0f} s to train and evaluate{_origin(run)}")
    return results


def _origin(run: TrainResult) -> str:
    """Where a run came from, for the line a notebook prints about it."""
    if run.from_bank:
        p = run.final.get("provenance", {})
        return f" (from the run bank: trained {p.get('date', '')[:10]} on {p.get('data', {}).get('name', 'CIFAR-10')}, {run.final.get('precision', '')})"
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
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    last = len(rows[0]) - 1
    lines = [
        "  ".join(c.ljust(w) if i in (0, last) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run. The cache key is a hash of all of them."""

    loss: str = "vicreg"  # a name of decorr_lite.losses.LOSSES
    # VICReg weights (a weight of 0 switches the term off)
    sim_coeff: float = _VICREG("sim_coeff")
    std_coeff: float = _VICREG("std_coeff")
    cov_coeff: float = _VICREG("cov_coeff")
    # Barlow Twins weights
    on_diag_coeff: float = _BARLOW("on_diag_coeff")
    lambd: float = _BARLOW("lambd")
    # how the decorrelation term is computed
    method: str = "exact"
    block_size: int | None = None
    exponent: float = 2.0
    permutation: bool = True  # a fresh random feature permutation every step ("fft" only)
    # model
    encoder: str = "small"
    width: int = 32
    dim: int = 1024
    hidden_dim: int | None = None
    # schedule and optimiser (AdamW, linear warm-up, cosine decay)
    epochs: float | None = None
    steps: int | None = None
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    # data and evaluation: the final evaluation's kNN bank (training images) and queries (test
    # images); the evaluation points use balanced subsets of them (all of them if as large)
    train_subset: int | None = 10000
    eval_points: int = 6
    eval_bank: int = 2000
    eval_queries: int = 1000
    final_bank: int = 10000
    final_queries: int | None = None
    bn_images: int = 2000  # images of the final bank on which BatchNorm is re-estimated (precise BN)
    knn_k: int = 20
    probe_batch: int = 256
    matrix_dims: int = 64
    data_root: str | None = None
    seed: int = 0
    device: str = "auto"
    # "auto": bf16 autocast where the device computes bf16 natively, else fp32 (settings.py)
    precision: str = "auto"

    def __post_init__(self) -> None:
        # sim_coeff=0 and sim_coeff=0.0 are the same run: store every float field as a float and
        # every int field as an int (numpy scalars from a sweep included), so that both give the
        # same cache key and the key can be written as JSON
        for f in dataclasses.fields(self):
            value, kinds = getattr(self, f.name), _kinds(f)
            if isinstance(value, bool) or value is None:
                continue
            if "float" in kinds and isinstance(value, numbers.Real):
                object.__setattr__(self, f.name, float(value))
            elif "int" in kinds and isinstance(value, numbers.Integral):
                object.__setattr__(self, f.name, int(value))
            elif "str" in kinds and isinstance(value, os.PathLike):
                object.__setattr__(self, f.name, os.fspath(value))
        _validate(self)

    def total_steps(self, train_size: int) -> int:
        per_epoch = max(train_size // self.batch_size, 1)
        if self.steps is not None:
            return self.steps
        return int(round((1.0 if self.epochs is None else self.epochs) * per_epoch))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _validate(c: TrainConfig) -> None:
    """Every setting, checked before any data is read, each error naming the field and the fix."""
    _check_types(c)
    if c.loss not in LOSSES:
        raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {c.loss!r}")
    if c.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {c.method!r}")
    if c.encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {c.encoder!r}")
    for name in (*COEFFICIENTS, "weight_decay", "warmup_fraction"):
        value = getattr(c, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not c.warmup_fraction <= 1:
        raise ValueError(f"warmup_fraction must be in [0, 1], got {c.warmup_fraction!r}")
    if not (math.isfinite(c.lr) and c.lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {c.lr!r}")
    check_method(c.method, check_exponent(c.exponent))  # q >= 1; gram needs q = 2
    if c.steps is not None and c.epochs is not None:
        raise ValueError("give steps or epochs, not both")
    if c.steps is not None and c.steps < 0 or c.epochs is not None and not (math.isfinite(c.epochs) and c.epochs >= 0):
        raise ValueError("steps and epochs must be >= 0")
    train_size, test_size = cifar10.SPLIT_SIZES["train"], cifar10.SPLIT_SIZES["test"]
    if c.train_subset is not None and not 1 <= c.train_subset <= train_size:
        raise ValueError(f"train_subset must be in [1, {train_size}] (None: all training images), got {c.train_subset}")
    images = train_size if c.train_subset is None else c.train_subset
    if not 2 <= c.batch_size <= images:
        raise ValueError(
            f"batch_size must be in [2, {images}] (batch statistics need two samples; at most the "
            f"{images} training images), got {c.batch_size}"
        )
    for name, low in (
        ("width", 1),
        ("dim", 2),
        ("eval_points", 1),
        ("matrix_dims", 1),
        ("knn_k", 1),
        ("probe_batch", 2),
        ("bn_images", 2),
    ):
        if getattr(c, name) < low:
            raise ValueError(f"{name} must be >= {low}, got {getattr(c, name)}")
    if not 0 <= c.seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**32 - 1] (numpy's and scikit-learn's range), got {c.seed}")
    if c.eval_points > MAX_EVAL_POINTS:
        raise ValueError(
            f"eval_points must be at most {MAX_EVAL_POINTS} (each point embeds the evaluation sets), got {c.eval_points}"
        )
    if c.hidden_dim is not None and c.hidden_dim < 1:
        raise ValueError(f"hidden_dim must be >= 1 or None (the same as dim), got {c.hidden_dim}")
    if c.block_size is not None and not 1 <= c.block_size <= c.dim:
        raise ValueError(f"block_size must be in [1, dim={c.dim}] or None, got {c.block_size}")
    if c.probe_batch > test_size:
        raise ValueError(f"probe_batch must be at most the {test_size} test images, got {c.probe_batch}")
    for name in ("eval_queries", "final_queries"):
        value = getattr(c, name)
        if value is not None and not 1 <= value:
            raise ValueError(
                f"{name} must be >= 1"
                + (" or None (every test image)" if name == "final_queries" else "")
                + f", got {value}"
            )
    for name in ("eval_bank", "final_bank"):  # the final bank from the training images, the other from it
        bank = min(getattr(c, name), c.final_bank, images)
        if c.knn_k > bank:
            raise ValueError(f"knn_k={c.knn_k} needs a kNN bank of at least {c.knn_k} images; {name} gives {bank}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", c.device):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {c.device!r}")
    if c.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {c.precision!r}")


def _kinds(f: dataclasses.Field) -> list[str]:
    """The types a field's annotation names: ``"int | None"`` -> ``["int", "None"]``."""
    return str(f.type).replace(" ", "").split("|")


def _check_types(c: TrainConfig) -> None:
    """Each field has the type its annotation says (a float for an int field is a typo, not a run)."""
    for f in dataclasses.fields(c):
        value, kinds = getattr(c, f.name), _kinds(f)
        if value is None and "None" in kinds:
            continue
        ok = {
            "int": isinstance(value, numbers.Integral) and not isinstance(value, bool),
            "float": isinstance(value, numbers.Real) and not isinstance(value, bool),
            "str": isinstance(value, str),
            "bool": isinstance(value, bool),
        }
        if not any(ok.get(kind, False) for kind in kinds):
            raise TypeError(f"{f.name} must be {' or '.join(kinds)}, got {value!r}")


def check_runnable(config: TrainConfig, out: str | os.PathLike | None = None, *, overwrite: bool = False) -> None:
    """What can only be checked on this machine, before any data is read: the device exists, and
    ``out`` (if given) is a folder that can be written, or can be created, and holds no run files
    that the run would replace (unless ``overwrite``)."""
    device = resolve_device(config.device)
    resolve_precision(config.precision, device)  # fp16 needs CUDA
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available():
            raise ValueError(f"device={config.device!r}, but CUDA is not available here: use device='cpu' or 'auto'")
        if index >= torch.cuda.device_count():
            raise ValueError(f"device={config.device!r}, but there are {torch.cuda.device_count()} CUDA device(s)")
    if out is not None:
        _check_writable_folder(Path(out), "out")
        taken = [name for name in RUN_FILES if os.path.lexists(Path(out) / name)]
        if taken and not overwrite:
            raise ValueError(
                f"out={str(out)!r} already holds {', '.join(taken)}, which this run would replace: choose "
                "another folder, or pass overwrite=True (--overwrite) to replace them (nothing else in it is touched)"
            )


def _check_writable_folder(path: Path, name: str) -> None:
    """``path`` is a folder that can be written, or does not exist and can be created (nothing is
    created here)."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name}={str(path)!r} is a file; give a folder for the run's files")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{name}={str(path)!r} cannot be created: {existing} is a file")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise ValueError(
            f"{name}={str(path)!r} cannot be written ({err.strerror or err}); choose another folder"
        ) from err


@dataclass
class TrainResult:
    """What a run produced. ``metrics`` is what ``metrics.json`` holds; ``arrays`` the matrices."""

    config: dict
    history: list[dict]
    final: dict
    arrays: dict[str, np.ndarray] = field(repr=False)
    path: Path | None = None
    from_cache: bool = False  # loaded, from the user's run cache or from the run bank
    state_dict: dict | None = field(default=None, repr=False)  # set for a run trained now
    from_bank: bool = False  # shipped with the package (decorr_lite.bank): metrics and arrays, no weights

    @property
    def metrics(self) -> dict:
        return {"config": self.config, "final": self.final, "history": self.history}

    def series(self, key: str) -> np.ndarray:
        """One recorded quantity over the evaluation points, e.g. ``series("knn_top1")``."""
        return np.array([entry[key] for entry in self.history], dtype=float)

    def load_model(self, map_location="cpu"):
        """The trained model (encoder + projector), rebuilt and loaded from the run folder."""
        if self.from_bank:
            raise ValueError(
                "a run from the run bank has no model weights (the bank ships metrics and arrays "
                "only): train it here with train_ssl(..., use_bank=False)"
            )
        if self.path is None:
            raise ValueError("this run was not saved (cache=False and no out=)")
        model = build_model(self.config["encoder"], self.config["dim"], self.config["hidden_dim"], self.config["width"])
        model.load_state_dict(torch.load(self.path / "model.pt", map_location=map_location, weights_only=True))
        return model.eval()


def run_key(config: TrainConfig, world_size: int = 1, *, portable: bool = False) -> str:
    """The cache key: a hash of every setting that changes what a run computes, of the data it
    trains on (its checksum: a run trained on one copy of CIFAR-10 is never served for another)
    and of the number of processes, when several train one run together (their augmentations
    and BatchNorm statistics differ). Where the data lives is not part of it. ``portable``: the
    run bank's key, which leaves out the data, the device and the precision, so that every
    machine finds the bank's runs (each entry records what it was trained on and with)."""
    fields = {"format": RUN_FORMAT, **config.as_dict(), "data_root": None}
    if portable:
        fields["device"] = fields["precision"] = None
    else:  # the precision a run actually uses ("auto" is bf16 on one machine and fp32 on another)
        fields["precision"] = resolve_precision(config.precision, resolve_device(config.device))
        fields["data"] = cifar10.describe_source(config.data_root)["checksum"]
    if world_size > 1:
        fields["world_size"] = world_size
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


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
    check_runnable(config, out, overwrite=overwrite)
    world, rank, started_group = _distributed_setup(config)
    try:
        if world > 1 and config.batch_size < 2 * world:
            raise ValueError(
                f"batch_size={config.batch_size} over {world} processes leaves a process fewer than 2 images "
                f"(BatchNorm and the batch statistics need 2): use batch_size >= {2 * world}"
            )
        run_dir = cache_dir() / "runs" / run_key(config, world)
        result = _load(run_dir) if cache and not retrain else None
        # the bank has no model weights, which out= writes; and no run of several processes
        if result is None and use_bank and not retrain and out is None and world == 1:
            from . import bank

            result = bank.lookup(config)
        if result is None:
            result = _train(config, progress and rank == 0, callback, world, rank)
            if rank != 0:  # the other processes helped train; process 0 evaluates and saves
                return result
            if cache:
                result.path = _save_run(result, run_dir)
    finally:
        if started_group:
            torch.distributed.destroy_process_group()
    if out is not None and rank == 0:  # one writer, also when every process found the run cached
        out = Path(out)
        if result.path is None or result.path.resolve() != out.resolve():
            write_run_files(result, out)
        result.path = out
    return result


def cached_run(config: TrainConfig | None = None, *, use_bank: bool = True, **settings) -> TrainResult | None:
    """The run of this configuration from the user's run cache, else from the run bank, or None
    if neither has it (a damaged cache entry counts as missing)."""
    from . import bank

    config = TrainConfig(**settings) if config is None else dataclasses.replace(config, **settings)
    found = _load(cache_dir() / "runs" / run_key(config))
    if found is None and use_bank:
        found = bank.lookup(config)
    return found


# --------------------------------------------------------------------------- the run cache
#
# A cached run is a folder runs/<key>/ holding finished versions (v-<16 hex>/, each with the
# three run files, never changed once written) and the file "current", which names the version
# to read. A writer writes a new version under a temporary name, renames it, then replaces
# "current" (one atomic step), so a reader sees the old run or the new one, never neither or a
# mix of both. Versions that "current" no longer names are removed by later writers once no
# reader can still be at them.

RUN_FILES = ("metrics.json", "arrays.npz", "model.pt")
CURRENT = "current"
_VERSION = re.compile(r"v-[0-9a-f]{16}")
OLD_VERSIONS_KEPT_SECONDS = 60.0  # a replaced version outlives any read that began before


def _current_version(run_dir: Path) -> Path:
    name = (run_dir / CURRENT).read_text().strip()
    if not _VERSION.fullmatch(name):
        raise ValueError(f"{run_dir / CURRENT} names no version ({name[:40]!r})")
    return run_dir / name


def _load(run_dir: Path) -> TrainResult | None:
    """The cached run, or None if there is none or it does not load completely: a run whose
    files are truncated, corrupt or missing is a cache miss (retrained, then replaced)."""
    if not os.path.lexists(run_dir / CURRENT):
        return None
    version = None
    for attempt in range(3):
        try:
            version = _current_version(run_dir)
            result = load_run(version)
            torch.load(version / "model.pt", map_location="cpu", weights_only=True)  # reads and checks every byte
        except Exception as err:  # a damaged file can raise almost anything
            try:  # a writer replaced the run meanwhile: read the new one
                if attempt < 2 and _current_version(run_dir) != version:
                    continue
            except Exception:
                pass
            warnings.warn(
                f"the cached run {run_dir} is damaged ({type(err).__name__}: {err}); it is trained again and replaced",
                CacheWarning,
                stacklevel=3,
            )
            return None
        result.from_cache = True
        return result
    return None  # unreachable: the last attempt returns


def load_run(path: str | os.PathLike) -> TrainResult:
    """A run saved by ``train_ssl``: its ``out`` folder, or its folder in the run cache."""
    path = Path(path)
    if (path / CURRENT).is_file():
        path = _current_version(path)
    metrics = json.loads((path / "metrics.json").read_text())
    with np.load(path / "arrays.npz") as arrays:
        arrays = dict(arrays)
    return TrainResult(metrics["config"], metrics["history"], metrics["final"], arrays, path=path)


def _write_run_file(result: TrainResult, name: str, path: Path) -> None:
    if name == "metrics.json":
        path.write_text(json.dumps(result.metrics, indent=1))
    elif name == "arrays.npz":
        with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a temporary's name
            np.savez(f, **result.arrays)
    else:
        torch.save(result.state_dict, path)


def _save_run(result: TrainResult, run_dir: Path) -> Path | None:
    """Cache the run as a new version of ``run_dir`` and make it the current one; return the
    version's folder. A cache that cannot be written (read-only, a full disk: ``torch.save``
    reports that as a RuntimeError) gives a warning and None: the run itself is not lost."""
    try:
        if not run_dir.is_dir():
            run_dir.mkdir(parents=True)
            os.chmod(run_dir, _atomic.FOLDER_MODE)  # a classroom shares one cache
        _atomic.remove_stale(run_dir.parent)  # what killed writers of any run left there
        tmp = _atomic.temporary(run_dir, "version", folder=True)
        version = run_dir / f"v-{os.urandom(8).hex()}"
        try:
            for name in RUN_FILES:
                _write_run_file(result, name, tmp / name)
            _atomic.publish(tmp, version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            _atomic.write_file(run_dir / CURRENT, lambda p: p.write_text(version.name + "\n"))
        except BaseException:
            shutil.rmtree(version, ignore_errors=True)
            raise
    except (OSError, RuntimeError) as err:
        warnings.warn(
            f"the run was not cached: {run_dir.parent} cannot be written ({type(err).__name__}: {err}). "
            "Free some space, or set DECORR_CACHE to a writable folder, to cache runs.",
            CacheWarning,
            stacklevel=3,
        )
        return None
    _remove_old_versions(run_dir, keep=version.name)
    return version


def _remove_old_versions(run_dir: Path, keep: str) -> None:
    """Delete the versions that "current" no longer names, once no reader can be at them."""
    now = time.time()
    for path in run_dir.iterdir():
        try:
            if (
                path.name != keep
                and _VERSION.fullmatch(path.name)
                and now - path.stat().st_mtime > OLD_VERSIONS_KEPT_SECONDS
                and _current_version(run_dir).name != path.name
            ):
                shutil.rmtree(path)
        except (OSError, ValueError):
            pass  # another writer's cleaning, or no permission: a later write tries again


def write_run_files(result: TrainResult, out: Path) -> None:
    """Write the run's three files into ``out`` (created if need be), each atomically, leaving
    everything else in the folder alone; a symbolic link in the way is replaced, never written
    through. Copied from the run's folder when it has one (a cached run), else written."""
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if result.path is not None:
            source = result.path / name
            _atomic.write_file(out / name, lambda p, source=source: shutil.copyfile(source, p))
        elif name == "model.pt" and result.state_dict is None:
            raise ValueError("this run has no model weights to write (a run from the run bank)")
        else:
            _atomic.write_file(out / name, lambda p, name=name: _write_run_file(result, name, p))


# --------------------------------------------------------------------------- the training loop


def build_loss(config: TrainConfig, distributed: bool = False) -> DecorrelationLoss:
    """The loss module of a run: its spec's module with the run's weights and method. It draws
    the feature permutation of ``method="fft"`` at every step from its own generator, seeded
    from the run's seed, and measures the terms that are off too (without a gradient), for the
    curves; with ``distributed``, of the global batch over every process."""
    spec = loss_spec(config.loss)
    return spec.module(
        **{coefficient: getattr(config, coefficient) for coefficient in spec.defaults},
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


@torch.inference_mode()
def recalibrated(model, images: torch.Tensor, device: torch.device, batch_size: int = 500, precision: str = "fp32"):
    """A copy of ``model`` whose BatchNorm statistics are re-estimated on ``images``.

    Evaluation needs BatchNorm's running statistics, and during training they lag behind the
    weights (momentum 0.1); at initialisation they are the defaults (mean 0, variance 1), which
    makes an untrained projector's eval-mode outputs tiny and every scale measurement
    meaningless. Re-estimating them exactly ("precise BN", Wu & Johnson 2021) on the same
    images at every evaluation point makes all points, step 0 included, comparable. The model
    being trained is left untouched. ``precision``: the autocast of the forward passes (the
    statistics themselves are kept in float32).
    """
    import copy

    model = copy.deepcopy(model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size]
        if chunk.shape[0] > 1:
            with autocast(device, precision):
                model(normalize(chunk.to(device)))
    return model.eval()


@torch.inference_mode()
def embed(
    model, images: torch.Tensor, device: torch.device, batch_size: int = 1000, precision: str = "fp32"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features and projector embeddings (float32, on the CPU) of uint8 images, in
    eval mode, the forward passes under the autocast of ``precision``."""
    was_training = model.training
    model.eval()
    features, embeddings = [], []
    for start in range(0, images.shape[0], batch_size):
        x = normalize(images[start : start + batch_size].to(device))
        with autocast(device, precision):
            f = model.features(x)
            z = model.projector(f)
        features.append(f.float().cpu())
        embeddings.append(z.float().cpu())
    model.train(was_training)
    return torch.cat(features), torch.cat(embeddings)


def _evaluate(model, config, device, bank, queries, calibration, probe_views, precision) -> tuple[dict, dict, dict]:
    """Scalars for the history and arrays (spectrum, std, matrices) at one evaluation point, and
    the backbone features and collapse report behind them (which the final evaluation reuses
    when it evaluates on the same sets). The forward passes run in the training's ``precision``;
    every measurement is float64."""
    bank_x, bank_y = bank
    query_x, query_y = queries
    model = recalibrated(model, calibration, device, precision=precision)
    bank_f, _ = embed(model, bank_x, device, precision=precision)
    query_f, query_z = embed(model, query_x, device, precision=precision)
    check_not_diverged(config, {"the backbone features": bank_f, "the embeddings": query_z})
    spectrum = diagnostics.singular_spectrum(query_z)  # once: the rank and the figure both need it
    report = diagnostics.collapse_report(query_z, spectrum=spectrum)
    scalars = {
        "knn_top1": diagnostics.knn_accuracy(bank_f, bank_y, query_f, query_y, k=config.knn_k),
        **_collapse_scalars(report),
    }
    # The probe batch: the same two augmented views of the same images at every evaluation.
    with torch.inference_mode(), autocast(device, precision):
        z1, z2 = (model(v.to(device)).double().cpu() for v in probe_views)
    d, m = z1.shape[1], min(config.matrix_dims, z1.shape[1])
    zc = z1 - z1.mean(dim=0)
    # Off-diagonal sums of squares of the full d x d matrices, without forming them (Gram route).
    cov_off = float(covariance_loss(z1, method="gram")) * d
    corr = barlow_twins_terms(z1, z2, method="gram")
    scalars["cov_offdiag_rms"] = math.sqrt(max(cov_off, 0.0) / (d * (d - 1)))
    scalars["corr_offdiag_rms"] = math.sqrt(max(float(corr["off_diagonal"]), 0.0) / (d * (d - 1)))
    scalars["corr_diag_rms_error"] = math.sqrt(float(corr["on_diagonal"]) / d)
    # The same off-diagonal RMS relative to the mean diagonal entry: scale-free, so that a matrix
    # whose diagonal grows (training makes dimensions spread and views agree) is judged by how
    # far from diagonal it is, not by its size. The diagonals are cheap: variances and the
    # per-dimension correlations of the two views.
    cov_diag = float(zc.square().sum(dim=0).mean()) / (zc.shape[0] - 1)
    corr_diag = float((batch_standardize(z1) * batch_standardize(z2)).mean(dim=0).mean())
    scalars["cov_offdiag_relative"] = scalars["cov_offdiag_rms"] / max(cov_diag, 1e-12)
    scalars["corr_offdiag_relative"] = scalars["corr_offdiag_rms"] / max(abs(corr_diag), 1e-12)
    arrays = {
        "spectrum": spectrum.numpy(),
        "std_per_dim": diagnostics.std_per_dim(query_z).numpy(),
        "covariance": (zc[:, :m].T @ zc[:, :m] / (zc.shape[0] - 1)).numpy(),
        "cross_correlation": cross_correlation(z1[:, :m], z2[:, :m]).numpy(),
    }
    return scalars, arrays, {"bank_f": bank_f, "query_f": query_f, "report": report, "knn": scalars["knn_top1"]}


def _distributed_setup(config: TrainConfig) -> tuple[int, int, bool]:
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
    cuda = resolve_device(config.device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_world_size(), dist.get_rank(), True


def _train(config: TrainConfig, progress: bool, callback=None, world: int = 1, rank: int = 0) -> TrainResult:
    from tqdm.auto import tqdm

    started = time.perf_counter()
    device = torch.device(resolve_device(config.device))
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
    precision = resolve_precision(config.precision, device.type)
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
    bar = tqdm(total=total, desc=_describe(config), unit="step", disable=not progress)
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
        provenance=provenance(config, device, precision),
    )
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    return TrainResult(config.as_dict(), history.entries, final, history.arrays(), state_dict=state)


@dataclass(frozen=True)
class _EvaluationSets:
    final_bank: tuple  # (images, labels) of training images: the final kNN bank and probe fit
    final_queries: tuple  # (images, labels) of test images
    bank: tuple  # the evaluation points' subsets of the two (the same objects when as large)
    queries: tuple
    calibration: torch.Tensor  # the images precise BN re-estimates BatchNorm on
    probe_views: tuple  # the two augmented views of the probe batch, the same at every point


def _evaluation_sets(config: TrainConfig, train: tuple, test: tuple, augment, device) -> _EvaluationSets:
    """Fixed evaluation sets, drawn once per seed: the final evaluation's kNN bank (training
    images) and queries (test images); the evaluation points use balanced subsets of them, all
    of them when as large (the classroom settings), so that a curve's last point is the final
    evaluation and its first the untrained encoder's; BatchNorm is re-estimated on the same
    bn_images of the bank at every point."""

    def pick(x, y, size, seed):
        if size is None or size >= len(y):
            return x, y
        index = torch.from_numpy(balanced_subset(y.numpy(), size, seed=seed))
        return x[index], y[index]

    final_bank = pick(*train, config.final_bank, config.seed + 6)
    final_queries = pick(*test, config.final_queries, config.seed + 7)
    probe_images = pick(*test, config.probe_batch, config.seed + 3)[0].to(device)
    return _EvaluationSets(
        final_bank=final_bank,
        final_queries=final_queries,
        bank=pick(*final_bank, config.eval_bank, config.seed + 1),
        queries=pick(*final_queries, config.eval_queries, config.seed + 2),
        calibration=pick(*final_bank, config.bn_images, config.seed + 1)[0],
        probe_views=augment(probe_images, seed=config.seed + 4),
    )


def _model(config: TrainConfig, device: torch.device, world: int):
    """The model in its memory format, what the training step calls (the model, or its DDP
    wrapper), and the function that lays out its input images."""
    torch.manual_seed(config.seed)
    model, as_input = prepare_model(build_model(config.encoder, config.dim, config.hidden_dim, config.width).to(device))
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


def _collapse_scalars(report: diagnostics.CollapseReport) -> dict:
    """What a run records of a collapse report, at every evaluation point and at the end."""
    return {name: getattr(report, name) for name in COLLAPSE_SCALARS}


COLLAPSE_SCALARS = ("effective_rank", "leading_share", "median_std", "min_std", "fraction_below_margin", "verdict")


def check_not_diverged(config: TrainConfig, tensors: dict[str, torch.Tensor]) -> None:
    """Training diverged if an update made the weights, or the embeddings they compute, NaN or
    Inf (the loss before it was finite): say so, and what to change, before evaluation meets them."""
    bad = [name for name, t in tensors.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise FloatingPointError(
            f"training diverged: after the last update {', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''} "
            f"became NaN or Inf; lower lr (now {config.lr})"
        )


def _final_evaluation(model, config, device, bank, queries, calibration, precision, reuse=None) -> dict:
    (bank_x, bank_y), (query_x, query_y) = bank, queries
    if reuse is None:
        model = recalibrated(model, calibration, device, precision=precision)
        bank_f, _ = embed(model, bank_x, device, precision=precision)
        query_f, query_z = embed(model, query_x, device, precision=precision)
        report = diagnostics.collapse_report(query_z)
        knn = diagnostics.knn_accuracy(bank_f, bank_y, query_f, query_y, k=config.knn_k)
    else:  # the same model, sets and re-estimated BatchNorm as the last evaluation point
        bank_f, query_f, report, knn = (reuse[k] for k in ("bank_f", "query_f", "report", "knn"))
    return {
        "knn_top1": knn,
        "linear_probe_top1": diagnostics.linear_probe(bank_f, bank_y, query_f, query_y, seed=config.seed),
        **_collapse_scalars(report),
        "bank_size": int(bank_x.shape[0]),
        "query_size": int(query_x.shape[0]),
    }


def provenance(config: TrainConfig, device: torch.device, precision: str) -> dict:
    """What produced a run: the code, the data, the software and the machine."""
    import datetime
    import platform

    from . import __version__

    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    else:
        machine = _cpu_name()
    return {
        "code_version": _code_version(__version__),
        "run_format": RUN_FORMAT,
        "data": cifar10.describe_source(config.data_root),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device.type,
        "machine": machine,
        "threads": torch.get_num_threads(),
        "precision": precision,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _code_version(version: str) -> str:
    """The package version, and in a git checkout its commit (``+dirty`` with local changes)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return version
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+{commit}" if commit else version


def _cpu_name() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


def step_cost(config: TrainConfig, steps: int = 4, seed: int = 0) -> dict:
    """What one training step of ``config`` costs on this machine: the median seconds of
    ``steps`` steps (after one warm-up) and the largest growth of memory in a step (as
    ``train_ssl`` measures it), on random views, since the cost does not depend on what the
    images show. Needs no dataset, so notebooks can time d = 8192 anywhere."""
    import statistics

    device = torch.device(resolve_device(config.device))
    precision = resolve_precision(config.precision, device.type)
    torch.manual_seed(seed)
    model, as_input = prepare_model(build_model(config.encoder, config.dim, config.hidden_dim, config.width).to(device))
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


def prepare_model(model, channels_last: bool = True):
    """The model in its memory format, and the function that lays out its input images the same
    way. channels_last is the NHWC layout that oneDNN's and cuDNN's convolutions prefer: on a CPU
    it measured faster for both encoders in fp32 and faster or equal in bf16
    (benchmarks/train_throughput.py, docs/training.md); on CUDA it is NVIDIA's recommendation for
    mixed precision, not yet measured here."""
    if channels_last:
        return model.to(memory_format=torch.channels_last), lambda x: x.contiguous(memory_format=torch.channels_last)
    return model, lambda x: x


def autocast(device: torch.device, precision: str):
    """The autocast region of a resolved precision ("fp32": none)."""
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES.get(precision), enabled=precision != "fp32")


def _describe(config: TrainConfig) -> str:
    terms = " ".join(f"{term.label} {getattr(config, term.coefficient):g}" for term in loss_spec(config.loss).terms)
    precision = resolve_precision(config.precision, resolve_device(config.device))
    return f"{config.loss} ({terms}, {config.method}, {precision})"
