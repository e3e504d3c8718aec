"""The run bank: every CIFAR-10 run the notebooks show, trained once and shipped with the package.

A classroom cannot wait a minute per run, and a student's laptop may have no copy of CIFAR-10.
So ``python -m decorr_lite bank`` trains, in full mode with ``classroom_settings()``, each run of
``bank_runs()``: every combination of terms that a ``TrainPanel`` offers (VICReg's 8, Barlow
Twins' 4), the untrained encoder, the exact-against-relaxed comparison of notebook 06 and
relaxed VICReg with q = 2. Each entry is the run's ``metrics.json`` (config, history, final,
and in ``final["provenance"]`` the code, data, software, machine and precision that produced
it) and its arrays in float32, without model weights, in ``decorr_lite/bank/``.

Every entry is trained with three seeds (``SEEDS``): the notebooks show seed 0, with its arrays;
the other seeds (entries ``NAME-seed1``, ``NAME-seed2``) are stored as metrics and history only
and are never served in place of a run: they are the evidence for the comparisons the notebooks
draw across seeds (``load_seeds(NAME)``).

``train_ssl`` and ``cached_run`` look in the user's run cache first, then here, then train. The
bank's key is ``run_key(config, portable=True)``: the data's location, the device and the
precision are left out, so that every machine finds the runs (a request for an explicit
precision other than the one an entry was trained in does not get it).

``python -m decorr_lite bank --check`` (and a test) says which entries are stale: trained by code
whose run format or key no longer matches what the current code computes for the entry's
configuration, so that a change to training cannot leave the notebooks showing old runs; or
whose arrays disagree with their history and configuration (what a figure draws must be what
the run measured).

An entry ``NAME`` is two files: ``NAME.json`` (the metrics, and the name of the arrays' file)
and ``NAME-<12 hex digits>.npz``, named by the first digits of its sha256. A rebuild writes the
new arrays under their own name, then the json that names them (each atomically), then removes
the entry's older arrays: a reader, which reads the json and then the file it names, sees
either the old pair or the new one, never half of each.

Each entry records the data it was trained on (``final["provenance"]["data"]``). When the bank
serves a run to someone whose copy of CIFAR-10 is another one (another checksum), it says so
once per entry and process, with a ``BankDataWarning``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from . import _atomic, diagnostics
from .config import TrainConfig, classroom_settings
from .losses import loss_spec
from .paths import data_dir
from .record import RUN_FORMAT, TrainResult, run_key

REBUILD = "python -m decorr_lite bank"  # the command that (re)builds entries: append --only NAME
DIGEST_CHARS = 12  # hex digits of the arrays' sha256 in their file name
# Scalars of the history that the arrays recompute, at float32 precision (the arrays are
# stored in float32, the history in float64): a few units in the last place of a float32.
FLOAT32_RTOL = 8 * float(np.finfo(np.float32).eps)
ARRAYS = ("eval_steps", "spectrum", "std_per_dim", "covariance", "cross_correlation")
SEEDS = (0, 1, 2)  # every entry is trained with each; the notebooks show the first
_REPLICA = re.compile(r"(.+)-seed(\d+)")  # NAME-seed1: entry NAME trained with another seed


class BankDataWarning(UserWarning):
    """The run bank served a run trained on another copy of CIFAR-10 than the user's."""


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
    ``classroom_settings()`` (full mode). The settings the notebooks show (seed 0) come first,
    then each again with every other seed of ``SEEDS`` (``NAME-seed1``, ...)."""
    shown = shown_runs()
    replicas = {
        replica_name(name, seed): dict(fields, seed=seed) for seed in SEEDS[1:] for name, fields in shown.items()
    }
    return {**shown, **replicas}


def shown_runs() -> dict[str, dict]:
    """The run settings the notebooks show (seed 0): name -> ``TrainConfig`` fields."""
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
        # relaxed VICReg with q = 2, at the covariance weight of the exact loss and at d times it:
        # the relaxed q = 2 penalty is about 1/d of the exact one (measured at step 0: 1/1072 on
        # average over three seeds), so the second run separates the term's size from its shape
        "vicreg-fft-b=d-q=2": dict(relaxed, exponent=2.0),
        "vicreg-fft-b=d-q=2-cov-x-d": dict(relaxed, exponent=2.0, cov_coeff=float(d)),
    }


def replica_name(name: str, seed: int) -> str:
    """The entry of setting ``name`` trained with ``seed``: ``name`` itself for the notebooks' seed."""
    return name if seed == SEEDS[0] else f"{name}-seed{seed}"


def replica_of(name: str) -> tuple[str, int]:
    """``("vicreg", 1)`` for ``"vicreg-seed1"``; ``(name, SEEDS[0])`` for an entry the notebooks show."""
    match = _REPLICA.fullmatch(name)
    if match and match.group(1) in shown_runs():
        return match.group(1), int(match.group(2))
    return name, SEEDS[0]


def stores_arrays(name: str) -> bool:
    """Whether the entry keeps its arrays (the notebooks' seed) or only its metrics and history."""
    return replica_of(name)[1] == SEEDS[0]


def seed_names(name: str) -> list[str]:
    """The entries of one setting, one per seed: ``["vicreg", "vicreg-seed1", "vicreg-seed2"]``."""
    if name not in shown_runs():
        raise KeyError(f"{name!r} is not a setting the notebooks show; they are: {', '.join(shown_runs())}")
    return [replica_name(name, seed) for seed in SEEDS]


def shown_name(config: TrainConfig) -> str | None:
    """The name of the setting the notebooks show (seed 0) whose configuration is ``config``, or
    None when the bank does not hold it."""
    key = run_key(config, portable=True)
    for name in shown_runs():
        if run_key(bank_config(name), portable=True) == key:
            return name
    return None


def load_seeds(name: str, folder: Path | None = None) -> list[TrainResult]:
    """The setting ``name`` as trained with each seed of ``SEEDS`` (the first with its arrays, the
    others with their metrics and history only): the evidence for a comparison across seeds."""
    return [load_entry(entry, folder) for entry in seed_names(name)]


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
    """The bank's run of ``config``, or None if the bank does not hold it.

    When the user has a copy of CIFAR-10 (``config.data_root``) that is not the one the entry
    was trained on, a ``BankDataWarning`` says so, once per entry (and data folder) per process."""
    folder = folder or bank_dir()
    key = run_key(config, portable=True)
    for name, entry in read_index(folder).get("entries", {}).items():
        if entry["key"] == key and config.precision in ("auto", entry["precision"]) and stores_arrays(name):
            run, stored, _ = _load_with_key(name, folder)
            if stored != key:  # rebuilt with another configuration since the index was read
                return None
            _warn_if_trained_on_other_data(name, run, config)
            return run
    return None


_DATA_COMPARED: set[tuple[str, str]] = set()  # (entry, data folder): compared once per process


def _warn_if_trained_on_other_data(name: str, run: TrainResult, config: TrainConfig) -> None:
    """Warn when the user's CIFAR-10 copy is not the one ``run`` was trained on. Without data
    (or with data that cannot be identified) there is nothing to compare, and nothing is said."""
    where = (name, str(data_dir(config.data_root)))
    if where in _DATA_COMPARED:
        return
    from .data import cifar10

    try:
        mine = cifar10.describe_source(config.data_root)  # hashes an archive once per file version
    except (OSError, ValueError) as err:  # a corrupt or unreadable copy: served the bank's run, told so
        _DATA_COMPARED.add(where)
        _warn_data(
            f"your copy of CIFAR-10 cannot be read ({err}); the run bank's entry {name!r} is served all "
            "the same (it was trained elsewhere), but a run trained here will fail until the copy is fixed."
        )
        return
    if mine["checksum"] is None:
        return  # no data here (yet): compared when there is some
    _DATA_COMPARED.add(where)
    theirs = run.final.get("provenance", {}).get("data") or {}
    if theirs.get("checksum") == mine["checksum"]:
        return
    _warn_data(
        f"the run bank's entry {name!r} was trained on {_describe_data(theirs)}, not on your copy of "
        f"CIFAR-10, {_describe_data(mine)}: its numbers are those of that data. Train on yours with "
        "use_bank=False (python -m decorr_lite train --no-bank)."
    )


def _warn_data(message: str) -> None:
    # stacklevel: the line that called train_ssl or cached_run (through runs.find_run, lookup and
    # _warn_if_trained_on_other_data)
    warnings.warn(message, BankDataWarning, stacklevel=6)


def _describe_data(data: dict) -> str:
    if not data.get("checksum"):
        return "unrecorded data"
    return f"{data.get('name')} ({data.get('kind')}, {data['checksum']})"


def load_entry(name: str, folder: Path | None = None) -> TrainResult:
    """One bank entry as a ``TrainResult`` (``from_bank`` set; arrays as stored, float32)."""
    return _load_with_key(name, folder or bank_dir())[0]


def _arrays_file(name: str, metrics: dict) -> str:
    """The file name of an entry's arrays, as its json names them (``NAME.npz`` for an entry
    written before arrays were named by their digest)."""
    return metrics.get("arrays", f"{name}.npz")


def _arrays_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:DIGEST_CHARS]


def _load_with_key(name: str, folder: Path) -> tuple[TrainResult, str, str | None]:
    """The entry, the key it was stored under and its arrays' file name (None for a replica of
    another seed, which keeps metrics and history only)."""
    metrics, arrays, file = _read_entry(name, folder)
    arrays, _ = _split_encoder(arrays)
    run = TrainResult(metrics["config"], metrics["history"], metrics["final"], arrays, from_cache=True, from_bank=True)
    return run, metrics["key"], file


def _read_entry(name: str, folder: Path) -> tuple[dict, dict[str, np.ndarray], str | None]:
    """An entry's json, then every array of the file that the json names (checked against the
    digest in their name; the encoder's too), and that file's name. If a rebuild removed those
    arrays in between, the json is read again (once): it names the new ones."""
    for attempt in range(2):
        metrics = json.loads((folder / f"{name}.json").read_text())
        if metrics.get("arrays", "") is None:  # a replica of another seed: metrics and history only
            return metrics, {}, None
        file = _arrays_file(name, metrics)
        try:
            raw = (folder / file).read_bytes()
            break
        except FileNotFoundError:
            if attempt or "arrays" not in metrics:
                raise
    if "arrays" in metrics and file != f"{name}-{_arrays_digest(raw)}.npz":
        raise ValueError(
            f"{folder / file} does not hold the arrays {name}.json names (its sha256 begins "
            f"{_arrays_digest(raw)}): the entry is damaged"
        )
    with np.load(io.BytesIO(raw)) as arrays:
        return metrics, dict(arrays), file


def _compact(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """float64 arrays as float32 (enough for every figure); integer arrays (steps) and float16
    ones (the encoder's weights) as they are."""
    return {k: v.astype(np.float32) if v.dtype in (np.float64, np.float32) else v for k, v in arrays.items()}


ENCODER_PREFIX = "encoder."  # the arrays' file also holds the trained encoder's weights, in float16
SAMPLE_FEATURES = "sample_features"  # and its features of the shipped sample images


def encoder_arrays(encoder_state: dict, sample_features) -> dict[str, np.ndarray]:
    """What an entry stores of its trained encoder (BatchNorm re-estimated as its evaluation did):
    the weights in float16 (about 0.2 MB a run) and its float32 features of the sample images,
    which ``load_encoder`` must reproduce."""
    stored = {}
    for key, value in encoder_state.items():
        value = value.detach().cpu().numpy()
        stored[ENCODER_PREFIX + key] = value.astype(np.float16) if np.issubdtype(value.dtype, np.floating) else value
    stored[SAMPLE_FEATURES] = np.asarray(sample_features, dtype=np.float32)
    return stored


def _split_encoder(arrays: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """(the run's figure arrays, its encoder's arrays)."""
    encoder = {k: v for k, v in arrays.items() if k.startswith(ENCODER_PREFIX) or k == SAMPLE_FEATURES}
    return {k: v for k, v in arrays.items() if k not in encoder}, encoder


def load_encoder(name: str, folder: Path | None = None, *, with_features: bool = False):
    """The trained encoder (backbone) of bank entry ``name``, in ``eval()`` mode, float32, on the
    CPU: a ``SmallConvNet`` that maps normalised (N, 3, 32, 32) images to features, its BatchNorm
    statistics as its evaluation re-estimated them. ``with_features``: also return the features
    of the shipped sample images that the run's evaluation computed (float32), for comparison.

    Only the entries the notebooks show (seed 0) keep their encoder."""
    from .models import SmallConvNet

    folder = folder or bank_dir()
    if not stores_arrays(name):
        raise ValueError(f"{name!r} is a replica of another seed and keeps no encoder; load {replica_of(name)[0]!r}")
    metrics, arrays, _ = _read_entry(name, folder)
    _, stored = _split_encoder(arrays)
    if not stored:
        raise ValueError(f"the bank's entry {name!r} holds no encoder weights; rebuild it: {REBUILD} --only {name}")
    config = metrics["config"]
    encoder = SmallConvNet(config["width"], config.get("stem_stride", 1))
    state = {
        k[len(ENCODER_PREFIX) :]: torch.from_numpy(v.astype(np.float32) if v.dtype == np.float16 else v)
        for k, v in stored.items()
        if k.startswith(ENCODER_PREFIX)
    }
    encoder.load_state_dict(state)
    encoder.eval()
    if with_features:
        return encoder, stored[SAMPLE_FEATURES]
    return encoder


def save_entry(name: str, run: TrainResult, folder: Path | None = None, encoder: dict | None = None) -> None:
    """Write one entry and record it in the index: its arrays under a new name (their digest),
    then its json naming them, each atomically; then remove the entry's older arrays. A reader
    sees the old entry or the new one, never the old json with the new arrays. ``encoder``:
    ``encoder_arrays(...)`` of the trained encoder, stored with the arrays."""
    folder = folder or bank_dir()
    folder.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(**run.config)
    arrays_file = None  # a replica of another seed keeps its metrics and history only
    if stores_arrays(name):
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **_compact(run.arrays), **(encoder or {}))
        raw = buffer.getvalue()
        arrays_file = f"{name}-{_arrays_digest(raw)}.npz"
        _write_atomically(folder, arrays_file, raw)
    metrics = {"key": run_key(config, portable=True), "arrays": arrays_file, **run.metrics}
    _write_atomically(folder, f"{name}.json", json.dumps(metrics, indent=1).encode())
    # another writer of the same entry may have published its json since: keep what that names
    keep = {arrays_file, _arrays_file(name, json.loads((folder / f"{name}.json").read_text()))}
    for old in _arrays_files_of(name, folder) - keep:
        try:
            (folder / old).unlink()
        except FileNotFoundError:
            pass  # another writer of the same entry removed it
    index = read_index(folder)
    index["run_format"] = RUN_FORMAT
    index["entries"][name] = {
        "key": metrics["key"],
        "precision": run.final["precision"],
        "seconds": round(run.final["seconds"], 1),
    }
    index["entries"] = dict(sorted(index["entries"].items()))
    _write_atomically(folder, "index.json", (json.dumps(index, indent=1) + "\n").encode())


def _write_atomically(folder: Path, name: str, data: bytes) -> None:
    """``folder / name`` holds ``data`` whole, or is as it was: a temporary renamed into place."""
    tmp = _atomic.temporary(folder, name)
    try:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)  # readable by everyone, as the package's other files
        os.replace(tmp, folder / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _arrays_files_of(name: str, folder: Path) -> set[str]:
    """The arrays' files of entry ``name`` in ``folder``: ``NAME-<digest>.npz``, and ``NAME.npz``
    of the layout before digests."""
    pattern = re.compile(re.escape(name) + rf"(-[0-9a-f]{{{DIGEST_CHARS}}})?\.npz")
    return {p.name for p in folder.iterdir() if pattern.fullmatch(p.name)}


def check(folder: Path | None = None) -> list[str]:
    """What is wrong with the bank, one line per entry, each with the command that fixes it
    (an empty list: every entry is there, matches what the current code computes, and its
    arrays agree with its history)."""
    folder = folder or bank_dir()
    problems = []
    index = read_index(folder).get("entries", {})
    for name in bank_runs():
        fix = f"rebuild it: {REBUILD} --only {name}"
        if name not in index:
            problems.append(f"{name}: missing from the bank; {fix}")
            continue
        try:
            run, stored, arrays_file = _load_with_key(name, folder)
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
        elif not stores_arrays(name):
            if arrays_file is not None:
                problems.append(f"{name}: a replica of another seed should keep no arrays; {fix}")
        elif arrays_file is None or (disagreements := arrays_disagreements(run)):
            what = (
                "it has no arrays"
                if arrays_file is None
                else f"its arrays do not match its history: {'; '.join(disagreements)}"
            )
            problems.append(f"{name}: {what}; {fix}")
        elif arrays_file == f"{name}.npz":
            problems.append(f"{name}: its arrays' file is not named by their digest (an older layout); {fix}")
    for name in sorted(set(index) - set(bank_runs())):
        files = ", ".join(sorted({f"{name}.json", *_arrays_files_of(name, folder)}))
        problems.append(
            f"{name}: no longer a bank entry (not in bank_runs()); delete {files} or rebuild the bank: {REBUILD}"
        )
    return problems


def arrays_disagreements(run: TrainResult) -> list[str]:
    """Where a run's arrays disagree with its history and configuration (an empty list: they
    agree): the evaluation steps, the arrays' shapes, and the history's scalars that the arrays
    recompute (median and smallest per-dimension std, effective rank and leading share of the
    spectrum) at every evaluation point, to float32 precision. Arrays swapped from another run
    or another rebuild disagree."""
    config, history, arrays = run.config, run.history, run.arrays
    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
        return [f"no {', '.join(missing)}"]
    steps = [int(h["step"]) for h in history]
    if [int(s) for s in np.ravel(arrays["eval_steps"])] != steps:
        return [f"eval_steps are {np.ravel(arrays['eval_steps']).tolist()}, the history's steps {steps}"]
    n, d = len(steps), config["dim"]
    m = min(config["matrix_dims"], d)
    problems = []
    expected = {"std_per_dim": (n, d), "covariance": (n, m, m), "cross_correlation": (n, m, m)}
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            problems.append(
                f"{key} has shape {arrays[key].shape}, expected {shape} (dim={d}, matrix_dims="
                f"{config['matrix_dims']}, {n} evaluation points)"
            )
    spectrum = arrays["spectrum"]
    if spectrum.ndim != 2 or spectrum.shape[0] != n or not 1 <= spectrum.shape[1] <= min(d, config["eval_queries"]):
        problems.append(
            f"spectrum has shape {spectrum.shape}, expected ({n}, at most {min(d, config['eval_queries'])})"
        )
    if problems:
        return problems
    for i, point in enumerate(history):
        std = np.sort(arrays["std_per_dim"][i].astype(np.float64))
        s = torch.from_numpy(spectrum[i].astype(np.float64))
        recomputed = {
            "median_std": std[(len(std) - 1) // 2],  # torch's median: the lower of the middle two
            "min_std": std[0],
            "effective_rank": diagnostics.effective_rank(None, spectrum=s),
            "leading_share": diagnostics.leading_share(None, spectrum=s),
        }
        for key, value in recomputed.items():
            if key in point and not np.isclose(value, point[key], rtol=FLOAT32_RTOL, atol=1e-30, equal_nan=True):
                problems.append(
                    f"at step {point['step']} the history's {key} is {point[key]:.4g}, the arrays give {value:.4g}"
                )
        if problems:
            return problems  # the first point that disagrees says enough
    return problems


def size_bytes(folder: Path | None = None) -> int:
    """The bank's size on disk."""
    return sum(p.stat().st_size for p in (folder or bank_dir()).glob("*") if p.is_file())


__all__ = [
    "BankDataWarning",
    "arrays_disagreements",
    "SEEDS",
    "bank_runs",
    "shown_runs",
    "seed_names",
    "load_seeds",
    "shown_name",
    "bank_config",
    "lookup",
    "load_entry",
    "load_encoder",
    "save_entry",
    "check",
    "term_combinations",
]
