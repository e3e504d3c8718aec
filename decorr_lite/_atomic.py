"""Writing files so that nothing half-written is ever read, and nothing is left behind forever.

A writer puts its bytes in a temporary next to the destination, ``.NAME.tmp-HOST-PID-XXXX``, and
renames it into place when it is complete (an atomic step on one file system). A writer killed
before the rename (SIGKILL, a power cut) leaves its temporary behind; the next write into that
folder removes every such temporary whose process is gone (same host) or that is older than a
day (another host: a classroom cache on a network file system).

Files and folders are made readable by everyone (0644 / 0755): a classroom shares one cache.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

FILE_MODE, FOLDER_MODE = 0o644, 0o755
STALE_AFTER_SECONDS = 24 * 3600
_TEMPORARY = re.compile(r"^\..+\.tmp-(?P<host>[^-]+)-(?P<pid>\d+)-")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def temporary(directory: Path, name: str, *, folder: bool = False) -> Path:
    """A new temporary file (or folder) in ``directory`` for a write that will become ``name``,
    after removing the stale temporaries of earlier writers there."""
    remove_stale(directory)
    prefix = f".{name}.tmp-{_host()}-{os.getpid()}-"
    if folder:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=directory))
    fd, path = tempfile.mkstemp(prefix=prefix, dir=directory)
    os.close(fd)
    return Path(path)


def remove_stale(directory: Path) -> list[Path]:
    """Delete the temporaries in ``directory`` whose writer cannot finish them any more; return them."""
    removed = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for path in entries:
        match = _TEMPORARY.match(path.name)
        if match is None or not _abandoned(path, match["host"], int(match["pid"])):
            continue
        try:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed.append(path)
        except OSError:
            pass  # another cleaner got there first, or no permission: not ours to fix
    return removed


# Whether a process can be asked if it runs: on Windows os.kill(pid, 0) would end it
# (TerminateProcess), so there a temporary is judged by its age alone, as one of another host.
CAN_PROBE_PROCESSES = os.name != "nt"


def _abandoned(path: Path, host: str, pid: int) -> bool:
    if host == _host() and CAN_PROBE_PROCESSES:
        return not _running(pid)
    try:
        return time.time() - path.stat().st_mtime > STALE_AFTER_SECONDS
    except OSError:
        return False


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, running
        return True
    return True


def publish(temporary_path: Path, destination: Path) -> None:
    """Make the finished temporary readable by everyone and rename it into place.

    A file replaces whatever ``destination`` was, a symbolic link included (the link itself,
    never the file it points to). A folder is only ever renamed to a name that is free: nothing
    is deleted to make room (``FileExistsError`` otherwise), so a reader never meets a folder
    that is half old and half new.
    """
    mode = FOLDER_MODE if temporary_path.is_dir() else FILE_MODE
    os.chmod(temporary_path, mode)
    if temporary_path.is_dir():
        for child in temporary_path.iterdir():
            os.chmod(child, FILE_MODE)
        if os.path.lexists(destination):
            raise FileExistsError(f"{destination} exists; a finished folder is only renamed to a free name")
    os.replace(temporary_path, destination)


def write_file(destination: Path, write) -> None:
    """Write one file atomically: ``write(path)`` fills a temporary beside ``destination``, which
    then replaces it (a symbolic link at ``destination`` is replaced, not written through). On
    any error, the disk full included, the temporary is removed and ``destination`` is as it was."""
    tmp = temporary(destination.parent, destination.name)
    try:
        write(tmp)
        publish(tmp, destination)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
