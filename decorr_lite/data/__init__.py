"""Datasets: CIFAR-10 loading (``cifar10``) and verified downloads (``download``)."""

from .cifar10 import CLASSES, CorruptDataError, balanced_subset, find_source, load_cifar10
from .download import ChecksumError, download_file

__all__ = [
    "CLASSES",
    "ChecksumError",
    "CorruptDataError",
    "balanced_subset",
    "download_file",
    "find_source",
    "load_cifar10",
]
