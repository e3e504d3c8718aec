"""Where decorr-lite reads data and writes caches.

Every location can be moved with an environment variable, so that a classroom server, a CI
machine and a laptop can each keep data where it suits them:

- ``DECORR_DATA``: datasets (default: the project's ``data/`` folder).
- ``DECORR_CACHE``: decoded datasets and cached training runs (default: the project's
  ``.cache/`` folder).

"The project" is the checkout this package lives in (the folder holding ``pyproject.toml``).
For a non-editable install there is no checkout, and ``~/.cache/decorr_lite`` is used instead.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path | None:
    """The checkout this package was imported from, or None for a site-packages install."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def _user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "decorr_lite"


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder to read datasets from: ``root``, else ``$DECORR_DATA``, else ``data/``."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("DECORR_DATA"):
        return Path(os.environ["DECORR_DATA"]).expanduser()
    project = project_root()
    return project / "data" if project else _user_cache() / "data"


def cache_dir() -> Path:
    """The folder for decoded datasets and training runs: ``$DECORR_CACHE``, else ``.cache/``."""
    if os.environ.get("DECORR_CACHE"):
        return Path(os.environ["DECORR_CACHE"]).expanduser()
    project = project_root()
    return project / ".cache" if project else _user_cache()
