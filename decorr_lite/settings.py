"""Run-time settings: quick mode (from the environment) and the device to use.

- ``DECORR_QUICK=1``: quick mode. Notebooks measure smaller grids and train shorter, so that the
  whole sequence runs under nbval in CI in minutes. ``make test`` (through the root
  ``conftest.py``) turns it on unless it is set; a reader running a notebook by hand gets the
  full mode, whose figures are the ones committed.
"""

from __future__ import annotations

import os

import torch


def quick_mode() -> bool:
    """True when ``DECORR_QUICK`` is set to 1/true/yes."""
    return os.environ.get("DECORR_QUICK", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_device(device: str) -> str:
    """``"auto"`` picks CUDA when it is available; any other name is returned as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
