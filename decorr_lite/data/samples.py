"""A few CIFAR-10 images to look at, with or without the dataset.

The package ships ``samples.npz``: the first two test images of each class (20 images, 60 KB),
so that a notebook can show what the data looks like on a machine that has not downloaded
CIFAR-10. ``sample_images()`` reads them from the dataset itself when a copy is found, and from
the shipped file otherwise; ``write_samples()`` rebuilds the file from a copy of the dataset.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .. import _atomic
from ..paths import data_dir
from .cifar10 import CLASSES, find_source, load_cifar10

SAMPLES_FILE = Path(__file__).with_name("samples.npz")


def _first_per_class(images: torch.Tensor, labels: torch.Tensor, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = [int(i) for c in range(len(CLASSES)) for i in torch.nonzero(labels == c).flatten()[:per_class]]
    return images[order], labels[order]


def sample_images(per_class: int = 2, root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``per_class`` test images of each class, class by class.

    Returns ``images`` (uint8, (10 * per_class, 3, 32, 32)), ``labels`` (int64) and where they came
    from: ``"dataset"`` when a copy of CIFAR-10 is found under ``root`` (default ``$DECORR_DATA``,
    else ``data/``; nothing is downloaded), else ``"shipped samples"`` (at most 2 per class).
    """
    if not 1 <= per_class <= 1000:
        raise ValueError(f"per_class must be in [1, 1000], got {per_class!r}")
    if find_source(data_dir(root)) is not None:
        images, labels = load_cifar10("test", root, download=False, progress=False)
        return (*_first_per_class(images, labels, per_class), "dataset")
    with np.load(SAMPLES_FILE) as shipped:
        images, labels = torch.from_numpy(shipped["images"]), torch.from_numpy(shipped["labels"])
    have = int((labels == 0).sum())
    if per_class > have:
        raise ValueError(
            f"per_class={per_class}, but only {have} images per class ship with the package; "
            "download CIFAR-10 (decorr_lite.data.load_cifar10()) for more"
        )
    return (*_first_per_class(images, labels, per_class), "shipped samples")


def write_samples(root: str | os.PathLike | None = None, per_class: int = 2, path: Path = SAMPLES_FILE) -> Path:
    """Rebuild the shipped samples from a copy of CIFAR-10 (atomically)."""
    images, labels = load_cifar10("test", root, download=False, progress=False)
    images, labels = _first_per_class(images, labels, per_class)
    tmp = _atomic.temporary(path.parent, path.name)
    try:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez_compressed(f, images=images.numpy(), labels=labels.numpy())
        _atomic.publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
