"""The run store: a run's key, its record, the user's run cache and the ``out`` folder.

A cached run is ``$DECORR_CACHE/runs/<key>/``, keyed by the configuration and the data (``run_key``),
so that asking again for a run already trained returns at once. ``find_run`` looks in the cache,
then in the run bank shipped with the package (``decorr_lite.bank``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from . import _atomic, bank
from .config import TrainConfig, migrate_settings
from .data.cifar10 import CacheWarning
from .paths import cache_dir
from .record import TrainResult, run_key


def cached_run(config: TrainConfig | None = None, *, use_bank: bool = True, **settings) -> TrainResult | None:
    """The run of this configuration from the user's run cache, else from the run bank, or None
    if neither has it (a damaged cache entry counts as missing)."""
    config = TrainConfig(**settings) if config is None else dataclasses.replace(config, **settings)
    return find_run(config, run_key(config), use_bank=use_bank)


def find_run(config: TrainConfig, key: str, *, cache: bool = True, use_bank: bool = True) -> TrainResult | None:
    """The run of ``config`` (whose key is ``key``) from the user's run cache (``cache``), else
    from the run bank (``use_bank``), or None."""
    found = _load(cache_dir() / "runs" / key) if cache else None
    if found is None and use_bank:
        found = bank.lookup(config)
    return found


def save_run(result: TrainResult, key: str) -> Path | None:
    """Put a run trained now into the user's run cache under ``key`` (``run_key`` of its
    configuration); sets and returns ``result.path``, None (with a warning) where the cache
    cannot be written."""
    result.path = _save_run(result, cache_dir() / "runs" / key)
    return result.path


def check_out(out: Path, *, overwrite: bool = False) -> None:
    """``out`` is a folder that can be written, or created, and holds no run files that a run
    would replace (unless ``overwrite``)."""
    _check_writable_folder(out, "out")
    taken = [name for name in RUN_FILES if os.path.lexists(out / name)]
    if taken and not overwrite:
        raise ValueError(
            f"out={str(out)!r} already holds {', '.join(taken)}, which this run would replace: choose "
            "another folder, or pass overwrite=True (--overwrite) to replace them (nothing else in it is touched)"
        )


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
    config = migrate_settings(metrics["config"])  # a run saved by an earlier version: this layout
    return TrainResult(config, metrics["history"], metrics["final"], arrays, path=path)


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
            run_dir.mkdir(parents=True, exist_ok=True)  # another process caching the same run may be first
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
        # dated before "current" moves on, so that no other writer's cleaning finds it old
        _retire(_current_version_or_none(run_dir))
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


def _current_version_or_none(run_dir: Path) -> Path | None:
    try:
        return _current_version(run_dir)
    except (OSError, ValueError):
        return None


def _retire(version: Path | None) -> None:
    """Date the version about to be replaced from now: its age, by which it is removed, counts
    from when "current" stopped naming it (a reader may have opened it a moment before), not
    from when it was written, maybe long ago."""
    if version is not None:
        try:
            os.utime(version)
        except OSError:
            pass  # gone already, or another user's: removed by age as it is


def _remove_old_versions(run_dir: Path, keep: str) -> None:
    """Delete the versions that "current" no longer names, once no reader can be at them
    (``OLD_VERSIONS_KEPT_SECONDS`` after they were replaced)."""
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
    """Write the run's three files into ``out`` (created if need be), all three before any
    replaces an old one, leaving everything else in the folder alone; a symbolic link in the
    way is replaced, never written through. Copied from the run's folder when it has one (a
    cached run), else written."""
    if result.path is None and result.state_dict is None:
        raise ValueError("this run has no model weights to write (a run from the run bank)")
    out.mkdir(parents=True, exist_ok=True)
    # every file is written in full before any replaces what ``out`` holds: a failure (a full
    # disk) leaves ``out`` as it was, not with a new metrics.json beside an old model.pt
    written = {}
    try:
        for name in RUN_FILES:
            written[name] = tmp = _atomic.temporary(out, name)
            if result.path is not None:
                shutil.copyfile(result.path / name, tmp)
            else:
                _write_run_file(result, name, tmp)
        for name, tmp in written.items():
            _atomic.publish(tmp, out / name)
    finally:
        for tmp in written.values():
            tmp.unlink(missing_ok=True)


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
