"""Download a file so that nothing half-written is ever left in place.

The bytes go to a temporary file next to the destination, their checksum is computed while
they stream in, and only a verified file is renamed into place (an atomic step on one file
system). Any failure, including Ctrl-C, removes the temporary file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

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


def download_file(
    url: str, dest: str | os.PathLike, *, md5: str, progress: bool = True, timeout: float = 30.0
) -> Path:
    """Download ``url`` to ``dest``, verifying its md5 before it appears under that name.

    Raises ``ChecksumError`` on a checksum mismatch and ``OSError`` (e.g. ``urllib.error.URLError``)
    when the download fails; in both cases no file is left behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with _progress_bar(total, dest.name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise ChecksumError(
                f"downloaded {url} has md5 {digest.hexdigest()}, expected {md5}: the download is "
                "corrupt or incomplete, and was deleted. Try again, or fetch the file by hand."
            )
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _progress_bar(total: int | None, name: str, disable: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"downloading {name}", unit="B", unit_scale=True, disable=disable)
