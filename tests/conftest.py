"""Shared fixtures: tiny CIFAR-10 copies in every format the loader reads, and isolated caches.

The tiny datasets hold random images (few per class) whose pixels the tests know, so every
decoding path is checked value for value. The official format's md5 table is patched to the
tiny files' checksums, as the real values only fit the real files.
"""

from __future__ import annotations

import collections
import hashlib
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import PER_CLASS, image_members, make_split, tiny_run_settings, write_tar

from decorr_lite.data import cifar10


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own DECORR_CACHE and no DECORR_DATA unless it sets one, and the
    loader expects the tiny copies' images per class (a test of the real data restores them)."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("DECORR_CACHE", str(cache))
    monkeypatch.setattr(cifar10, "PER_CLASS", dict(PER_CLASS))
    return cache


@pytest.fixture
def splits():
    return {"train": make_split("train", 0), "test": make_split("test", 1)}


def write_official_folder(root: Path, splits) -> Path:
    """cifar-10-batches-py/ with 5 train batches and a test batch, Python-2 style pickles."""
    folder = root / cifar10.BATCHES_DIR
    folder.mkdir(parents=True)
    meta = {b"label_names": [c.encode() for c in cifar10.CLASSES]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    x, y = splits["train"]
    order = np.random.default_rng(2).permutation(len(y))  # official batches are not class-sorted
    for i, part in enumerate(np.array_split(order, 5), start=1):
        batch = {b"data": x[part].reshape(len(part), -1), b"labels": y[part].tolist()}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    x, y = splits["test"]
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": x.reshape(len(y), -1), b"labels": y.tolist()}))
    return folder


def official_md5s(folder: Path) -> dict:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.fixture
def official(tmp_path, splits, monkeypatch):
    """(folder with cifar-10-batches-py/, folder with cifar-10-python.tar.gz), md5s patched."""
    folder_root = tmp_path / "official-folder"
    folder = write_official_folder(folder_root, splits)
    monkeypatch.setattr(cifar10, "BATCH_MD5", official_md5s(folder))
    archive_root = tmp_path / "official-archive"
    archive_root.mkdir()
    archive = archive_root / cifar10.ARCHIVE_NAME
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=cifar10.BATCHES_DIR)
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    return folder_root, archive_root


@pytest.fixture
def image_archive(tmp_path, splits) -> Path:
    """A folder holding cifar10-tiny.tar.gz (PNG, so decoding is lossless)."""
    root = tmp_path / "image-archive"
    root.mkdir()
    write_tar(root / "cifar10-tiny.tar.gz", image_members(splits))
    return root


@pytest.fixture
def tiny(tiny_cifar):
    """The settings of a run of seconds on the tiny dataset (``tiny_run_settings``)."""
    return tiny_run_settings(tiny_cifar)


@pytest.fixture
def tiny_run(tiny_cifar):
    """A smaller run still (d = 8, 2 steps, one evaluation): for tests of what is stored, not learned."""
    return tiny_run_settings(tiny_cifar, dim=8, steps=2, eval_points=1)


@pytest.fixture
def tiny_cifar(tmp_path_factory) -> Path:
    """A session-wide tiny image-folder dataset for training tests (PNG tree)."""
    root = tmp_path_factory.mktemp("tiny-cifar")
    splits = {"train": make_split("train", 10), "test": make_split("test", 11)}
    write_tar(root / "cifar10-tiny.tar.gz", image_members(splits))
    return root


@pytest.fixture
def train_refused(capsys, tmp_path, monkeypatch):
    """``train_refused(flags)`` runs ``python -m decorr_lite train --quiet FLAGS`` here, with no data
    anywhere, and checks that it refused at once: exit 2, within 2 s, an "error: ..." message (which
    it returns), and no data folder made. A check that comes after the data would find none."""
    from decorr_lite import cli

    no_data = tmp_path / "no-data-here"
    monkeypatch.setenv("DECORR_DATA", str(no_data))

    def run(flags: list[str]) -> str:
        started = time.perf_counter()
        assert cli.main(["train", "--quiet", *flags]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: "), error
        assert time.perf_counter() - started < 2
        assert not no_data.exists()
        return error

    return run


class FakeLoop:
    """The kernel's event loop: callbacks queue up, in the order they were added, until the test
    runs them on its main thread; one added while another runs goes to the back of the queue,
    behind a message the student sent meanwhile."""

    def __init__(self) -> None:
        self.ready: collections.deque = collections.deque()

    def add_callback(self, fn, *args) -> None:
        self.ready.append((fn, args))

    def call_later(self, delay: float, fn, *args) -> None:  # the test runs the queue when it likes
        self.ready.append((fn, args))

    def run(self) -> None:
        while self.ready:
            fn, args = self.ready.popleft()
            fn(*args)


@pytest.fixture
def fake_loop(monkeypatch) -> FakeLoop:
    """A kernel's event loop for ``decorr_lite.jobs`` (and the panels that use it)."""
    from decorr_lite import jobs

    loop = FakeLoop()
    monkeypatch.setattr(jobs, "kernel_loop", lambda: loop)
    return loop
