"""A run's record: what it computed (``TrainResult``), the key it is stored under (``run_key``) and
what produced it (``provenance``: the code, the data, the software and the machine).

Both the user's run cache (``runs``) and the run bank shipped with the package (``bank``) store
runs by this key and read them back as a ``TrainResult``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import diagnostics
from .config import TrainConfig
from .data import cifar10
from .models import model_for
from .settings import resolve_device, resolve_precision

# Part of every key: bump it when a change changes a run's numbers or the key's layout (the
# formats and what changed with each: docs/run_bank.md)
RUN_FORMAT = 7


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

    def __post_init__(self) -> None:
        # the verdicts by today's rule, relative to the run's untrained encoder (diagnostics.verdict):
        # a run stored under an older rule reads the same as one trained now
        if self.history and "dim" in self.config:
            self.history = diagnostics.judge_history(self.history, self.config["dim"])
            if "verdict" in self.final and "verdict" in self.history[-1]:
                self.final = {**self.final, "verdict": self.history[-1]["verdict"]}

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
        weights = self.path / "model.pt"
        if not weights.is_file():
            raise FileNotFoundError(
                f"{weights} is gone: the run cache replaced this run since it was loaded (the same "
                "settings trained again, e.g. with retrain=True). Load the run again with cached_run(...)"
            )
        model = model_for(self.config)
        model.load_state_dict(torch.load(weights, map_location=map_location, weights_only=True))
        return model.eval()


def run_key(config: TrainConfig, world_size: int = 1, *, portable: bool = False, precision: str | None = None) -> str:
    """The cache key: a hash of every setting that changes what a run computes, of the data it
    trains on (its checksum: a run trained on one copy of CIFAR-10 is never served for another)
    and of the number of processes, when several train one run together (their augmentations
    and BatchNorm statistics differ). Where the data lives is not part of it. ``portable``: the
    run bank's key, which leaves out the data, the device and the precision, so that every
    machine finds the bank's runs (each entry records what it was trained on and with).
    ``precision``: the precision the run uses, when the caller has resolved it already."""
    fields = {"format": RUN_FORMAT, **config.as_dict(), "data_root": None}
    if portable:
        fields["device"] = fields["precision"] = None
    else:  # the precision a run actually uses ("auto" is bf16 on one machine and fp32 on another)
        fields["precision"] = precision or resolve_precision(config.precision, resolve_device(config.device))
        fields["data"] = _data_checksum(config.data_root)
    if world_size > 1:
        fields["world_size"] = world_size
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _data_checksum(data_root: str | None) -> str | None:
    """The checksum of the data a run at ``data_root`` trains on; None where there is none yet
    (it is downloaded when the run trains, and the run is stored under the key computed then)
    or where it cannot be read: such a key finds no run, and training says what is wrong."""
    try:
        return cifar10.describe_source(data_root)["checksum"]
    except (OSError, ValueError):  # CorruptDataError is a ValueError
        return None


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
