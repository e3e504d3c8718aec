"""Writing into the shared caches (decorr_lite._atomic): a cache that cannot be written only turns
caching off, and what a killed writer left behind is removed by the next write, in the dataset
cache and the run cache alike."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from decorr_lite import _atomic, runs, train
from decorr_lite.data import cifar10, load_cifar10


def test_a_read_only_cache_only_turns_caching_off(image_archive, tiny_run, monkeypatch):
    """A read-only file system (simulated: root ignores permission bits) aborted load_cifar10
    after decoding and train_ssl after training."""

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(_atomic, "temporary", read_only)
    with pytest.warns(cifar10.CacheWarning, match="caching is off"):
        load_cifar10("test", root=image_archive, download=False, progress=False)
    with pytest.warns(cifar10.CacheWarning, match="the run was not cached"):
        run = train.train_ssl(**tiny_run, progress=False)
    assert run.path is None and np.isfinite(run.final["knn_top1"])


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_are_removed_by_the_next_write(image_archive, tiny_run, isolated_cache):
    """A SIGKILL during a cache write left .part files and hidden run folders forever."""
    host = _atomic._host()
    datasets, runs_dir = isolated_cache / "datasets", isolated_cache / "runs"
    datasets.mkdir()
    runs_dir.mkdir()
    dead = datasets / f".cifar10-train-x.npz.tmp-{host}-{_dead_pid()}-abc"
    alive = datasets / f".cifar10-train-y.npz.tmp-{host}-{os.getpid()}-abc"  # a writer still at work
    elsewhere = datasets / ".cifar10-train-z.npz.tmp-otherhost-1-abc"  # another machine, recent
    old = datasets / ".cifar10-train-w.npz.tmp-otherhost-2-abc"  # another machine, two days old
    for path in (dead, alive, elsewhere, old):
        path.write_bytes(b"half")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    dead_run = runs_dir / f".0123456789abcdef.tmp-{host}-{_dead_pid()}-xyz"
    dead_run.mkdir()
    (dead_run / "metrics.json").write_text("{")
    load_cifar10("test", root=image_archive, download=False, progress=False)
    assert sorted(p.name for p in datasets.iterdir() if p.name.startswith(".")) == sorted([alive.name, elsewhere.name])
    train.train_ssl(**tiny_run, progress=False)
    assert not dead_run.exists()
    run = next(p for p in runs_dir.iterdir() if not p.name.startswith("."))
    version = runs._current_version(run)
    assert {oct(p.stat().st_mode & 0o777) for p in (run, version)} == {oct(0o755)}  # shared like the datasets
    assert {oct(p.stat().st_mode & 0o777) for p in (run / "current", *version.iterdir())} == {oct(0o644)}


def test_where_processes_cannot_be_asked_a_temporary_is_judged_by_its_age(isolated_cache, monkeypatch):
    """On Windows os.kill(pid, 0) ends the process (TerminateProcess) instead of asking whether it
    runs: there a temporary is removed only once it is old, as one of another machine."""
    monkeypatch.setattr(_atomic, "CAN_PROBE_PROCESSES", False)

    def kill(pid, signal):
        raise AssertionError(f"os.kill({pid}, {signal}) would end process {pid} on Windows")

    monkeypatch.setattr(os, "kill", kill)
    host = _atomic._host()
    recent = isolated_cache / f".a.npz.tmp-{host}-{_dead_pid()}-abc"
    old = isolated_cache / f".b.npz.tmp-{host}-{os.getpid()}-abc"
    for path in (recent, old):
        path.write_bytes(b"half")
    os.utime(old, (time.time() - 2 * _atomic.STALE_AFTER_SECONDS,) * 2)
    assert _atomic.remove_stale(isolated_cache) == [old]
    assert recent.exists() and not old.exists()
