"""Plain helpers the tests share: tiny CIFAR-10 splits and archives, and the run settings of a
run of seconds.

They live here rather than in conftest.py because a test run by a spawned process imports its
module afresh, and there the name ``conftest`` can resolve to the repository's root conftest.py.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from decorr_lite.data import cifar10
from decorr_lite.losses import LOSSES

PER_CLASS = {"train": 6, "test": 3}


def make_split(split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels, sorted by class, PER_CLASS[split] per class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), PER_CLASS[split])
    images = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)
    return images, labels


def png_bytes(image_chw: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image_chw.transpose(1, 2, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_members(splits, prefix: str = "cifar10/"):
    """(archive path, bytes) of every image: <prefix><split>/<class>/<index>.png."""
    for split, (x, y) in splits.items():
        for i, (image, label) in enumerate(zip(x, y)):
            yield f"{prefix}{split}/{cifar10.CLASSES[label]}/{i:04d}.png", png_bytes(image)


def write_tar(path: Path, members) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_zip(path: Path, members) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def write_tree(root: Path, members) -> Path:
    for name, data in members:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def losses_and_methods() -> list[tuple[str, str]]:
    """(loss, method): every registered loss by every method it supports, for tests of them all."""
    return [(name, method) for name, spec in sorted(LOSSES.items()) for method in spec.methods]


def tiny_run_settings(tiny_cifar, **changes) -> dict:
    """``train_ssl`` settings for a run of seconds on the tiny dataset; ``changes`` override them."""
    settings = dict(data_root=str(tiny_cifar), train_subset=None, dim=16, width=4, batch_size=20, steps=4,
                    eval_points=2, eval_bank=30, eval_queries=20, final_bank=60, probe_batch=20, matrix_dims=8,
                    knn_k=5)  # fmt: skip
    return {**settings, **changes}
