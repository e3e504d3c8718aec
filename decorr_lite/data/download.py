"""Download a file so that nothing half-written is ever left in place.

The bytes go to a temporary file next to the destination, their checksum is computed while
they stream in, and only a verified file is renamed into place (an atomic step on one file
system). Any failure, including Ctrl-C, removes the temporary file.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from .. import _atomic

CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A file's bytes do not match the checksum published for it."""


def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, dest: str | os.PathLike, *, md5: str, progress: bool = True, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest``, verifying its md5 before it appears under that name.

    Raises ``ChecksumError`` on a checksum mismatch and ``OSError`` (e.g. ``urllib.error.URLError``)
    when the download fails; in both cases no file is left behind. The destination's folder is
    created only once the server answers (a mistyped data folder is not made on disk by a
    download that cannot happen), and removed again if the download then fails and it is empty.
    """
    dest = Path(dest)
    with urllib.request.urlopen(url, timeout=timeout) as response:
        made = _make_folders(dest.parent)
        tmp = _atomic.temporary(dest.parent, dest.name)
        try:
            digest = hashlib.md5()
            total = int(response.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as out, _progress_bar(total, dest.name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if digest.hexdigest() != md5:
                raise ChecksumError(
                    f"downloaded {url} has md5 {digest.hexdigest()}, expected {md5}: the download is "
                    "corrupt or incomplete, and was deleted. Try again, or fetch the file by hand."
                )
            _atomic.publish(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            for folder in made:  # innermost first; only those this call made, and only if empty
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise
    return dest


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those created, innermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
    return missing


def _progress_bar(total: int | None, name: str, disable: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"downloading {name}", unit="B", unit_scale=True, disable=disable)
