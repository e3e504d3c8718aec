"""The run bank: every CIFAR-10 run the notebooks show, trained once and shipped with the package.

A classroom cannot wait a minute per run, and a student's laptop may have no copy of CIFAR-10.
So ``python -m decorr_lite bank`` trains, in full mode with ``classroom_settings()``, each run of
``bank_runs()``: every combination of terms that a ``TrainPanel`` offers (VICReg's 8, Barlow
Twins' 4), the untrained encoder, the exact-against-relaxed comparison of notebook 06 and
relaxed VICReg with q = 2. Each entry is the run's ``metrics.json`` (config, history, final,
and in ``final["provenance"]`` the code, data, software, machine and precision that produced
it) and its arrays in float32, without model weights, in ``decorr_lite/bank/``.

``train_ssl`` and ``cached_run`` look in the user's run cache first, then here, then train. The
bank's key is ``run_key(config, portable=True)``: the data's location, the device and the
precision are left out, so that every machine finds the runs (a request for an explicit
precision other than the one an entry was trained in does not get it).

``python -m decorr_lite bank --check`` (and a test) says which entries are stale: trained by code
whose run format or key no longer matches what the current code computes for the entry's
configuration, so that a change to training cannot leave the notebooks showing old runs.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import numpy as np

from . import _atomic
from .losses import loss_spec
from .train import RUN_FORMAT, TrainConfig, TrainResult, classroom_settings, run_key, train_ssl

REBUILD = "python -m decorr_lite bank"  # the command that (re)builds entries: append --only NAME


def bank_dir() -> Path:
    """The bank's folder: ``$DECORR_BANK`` if set (tests point it elsewhere), else the package's."""
    return Path(os.environ.get("DECORR_BANK") or Path(__file__).parent / "bank")


def term_combinations(loss: str) -> dict[str, dict]:
    """Every on/off combination of a loss's terms, at the default weights, named by the terms
    switched off: ``{"vicreg": {}, "vicreg-without-variance": {"std_coeff": 0.0}, ...}``."""
    terms = loss_spec(loss).terms
    runs = {}
    for off in itertools.chain.from_iterable(itertools.combinations(terms, k) for k in range(len(terms) + 1)):
        name = loss + ("-without-" + "+".join(t.name.replace("_", "-") for t in off) if off else "")
        runs[name] = {"loss": loss, **{t.coefficient: 0.0 for t in off}}
    return runs


def bank_runs() -> dict[str, dict]:
    """The bank's entries: name -> the ``TrainConfig`` fields that differ from
    ``classroom_settings()`` (full mode)."""
    d = classroom_settings()["dim"]
    relaxed = dict(loss="vicreg", method="fft", exponent=1.0)
    return {
        "untrained": dict(loss="vicreg", steps=0),
        **term_combinations("vicreg"),
        **term_combinations("barlow"),
        # notebook 06: the exact loss against its Gram route and the relaxation (q = 1, the
        # paper's exponent for VICReg), with b = d and b = d / 8, with and without the permutation
        "vicreg-gram": dict(loss="vicreg", method="gram"),
        "vicreg-fft-b=d": dict(relaxed),
        "vicreg-fft-b=d-not-permuted": dict(relaxed, permutation=False),
        f"vicreg-fft-b={d // 8}": dict(relaxed, block_size=d // 8),
        f"vicreg-fft-b={d // 8}-not-permuted": dict(relaxed, block_size=d // 8, permutation=False),
        # relaxed VICReg with q = 2: penalising squared sums collapses it
        "vicreg-fft-b=d-q=2": dict(relaxed, exponent=2.0),
    }


def bank_config(name: str) -> TrainConfig:
    """The configuration of the bank entry ``name``."""
    runs = bank_runs()
    if name not in runs:
        raise KeyError(f"{name!r} is not a bank entry; the entries are: {', '.join(runs)}")
    return TrainConfig(**{**classroom_settings(), **runs[name]})


def _index_path(folder: Path) -> Path:
    return folder / "index.json"


def read_index(folder: Path | None = None) -> dict:
    """``{"run_format": ..., "entries": {name: {"key", "precision", "seconds"}}}``, or an empty
    index for a folder without one."""
    path = _index_path(folder or bank_dir())
    if not path.is_file():
        return {"run_format": RUN_FORMAT, "entries": {}}
    return json.loads(path.read_text())


def lookup(config: TrainConfig, folder: Path | None = None) -> TrainResult | None:
    """The bank's run of ``config``, or None if the bank does not hold it."""
    folder = folder or bank_dir()
    key = run_key(config, portable=True)
    for name, entry in read_index(folder).get("entries", {}).items():
        if entry["key"] == key and config.precision in ("auto", entry["precision"]):
            return load_entry(name, folder)
    return None


def load_entry(name: str, folder: Path | None = None) -> TrainResult:
    """One bank entry as a ``TrainResult`` (``from_bank`` set; arrays as stored, float32)."""
    return _load_with_key(name, folder or bank_dir())[0]


def _load_with_key(name: str, folder: Path) -> tuple[TrainResult, str]:
    """The entry and the key it was stored under, from one read of its files."""
    metrics = json.loads((folder / f"{name}.json").read_text())
    with np.load(folder / f"{name}.npz") as arrays:
        arrays = dict(arrays)
    return TrainResult(
        metrics["config"], metrics["history"], metrics["final"], arrays, from_cache=True, from_bank=True
    ), metrics["key"]


def _compact(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """float64 arrays as float32 (enough for every figure); integer arrays (steps) as they are."""
    return {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v for k, v in arrays.items()}


def save_entry(name: str, run: TrainResult, folder: Path | None = None) -> None:
    """Write one entry (its json, then its arrays, each atomically) and record it in the index."""
    folder = folder or bank_dir()
    folder.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(**run.config)
    metrics = {"key": run_key(config, portable=True), **run.metrics}

    def write_arrays(path: Path) -> None:
        with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a temporary's name
            np.savez_compressed(f, **_compact(run.arrays))

    for suffix, write in ((".npz", write_arrays), (".json", lambda f: f.write_text(json.dumps(metrics, indent=1)))):
        tmp = _atomic.temporary(folder, name + suffix)
        try:
            write(tmp)
            _atomic.publish(tmp, folder / (name + suffix))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    index = read_index(folder)
    index["run_format"] = RUN_FORMAT
    index["entries"][name] = {
        "key": metrics["key"],
        "precision": run.final["precision"],
        "seconds": round(run.final["seconds"], 1),
    }
    index["entries"] = dict(sorted(index["entries"].items()))
    tmp = _atomic.temporary(folder, "index.json")
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    _atomic.publish(tmp, _index_path(folder))


def check(folder: Path | None = None) -> list[str]:
    """What is wrong with the bank, one line per entry, each with the command that fixes it
    (an empty list: every entry is there and matches what the current code computes)."""
    folder = folder or bank_dir()
    problems = []
    index = read_index(folder).get("entries", {})
    for name in bank_runs():
        fix = f"rebuild it: {REBUILD} --only {name}"
        if name not in index:
            problems.append(f"{name}: missing from the bank; {fix}")
            continue
        try:
            run, stored = _load_with_key(name, folder)
        except (OSError, ValueError, KeyError) as err:
            problems.append(f"{name}: does not load ({type(err).__name__}: {err}); {fix}")
            continue
        expected = bank_config(name)
        fmt = run.final.get("provenance", {}).get("run_format")
        if fmt != RUN_FORMAT:
            problems.append(f"{name}: trained with run format {fmt}, the code's is {RUN_FORMAT}; {fix}")
        elif run.config != expected.as_dict():
            changed = sorted(k for k in expected.as_dict() if run.config.get(k) != getattr(expected, k))
            problems.append(f"{name}: its configuration differs from the current one in {', '.join(changed)}; {fix}")
        elif stored != run_key(expected, portable=True) or index[name]["key"] != stored:
            problems.append(f"{name}: its key is not the one the current code computes for its configuration; {fix}")
    for name in sorted(set(index) - set(bank_runs())):
        problems.append(
            f"{name}: no longer a bank entry (not in bank_runs()); delete {name}.json and {name}.npz "
            f"or rebuild the bank: {REBUILD}"
        )
    return problems


def build(names: list[str] | None = None, *, folder: Path | None = None, progress: bool = True) -> dict[str, float]:
    """Train the named entries (default: all) from the data and write them; returns the seconds
    each took. Every entry is trained anew (neither the run cache nor the old bank is read)."""
    folder = folder or bank_dir()
    names = list(bank_runs()) if names is None else names
    for name in names:
        bank_config(name)  # an unknown name fails before anything trains
    seconds = {}
    for name in names:
        started = time.perf_counter()
        run = train_ssl(bank_config(name), cache=False, use_bank=False, progress=progress)
        save_entry(name, run, folder)
        seconds[name] = time.perf_counter() - started
        print(f"{name:44s} {seconds[name]:5.1f} s  kNN {run.final['knn_top1']:.3f}  {run.final['verdict']}", flush=True)
    return seconds


def size_bytes(folder: Path | None = None) -> int:
    """The bank's size on disk."""
    return sum(p.stat().st_size for p in (folder or bank_dir()).glob("*") if p.is_file())


__all__ = ["bank_runs", "bank_config", "lookup", "load_entry", "check", "build", "term_combinations"]
