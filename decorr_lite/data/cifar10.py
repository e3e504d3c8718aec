"""CIFAR-10 (Krizhevsky 2009): find it, verify it, decode it once, cache the arrays.

Where ``load_cifar10`` looks: ``root``, else ``$DECORR_DATA``, else the project's ``data/``.
What it reads there, in this order of preference (the official formats are lossless):

1. ``cifar-10-batches-py/``: the extracted official archive; every batch's md5 is checked.
2. ``cifar-10-python.tar.gz``: the official archive, read without extracting; md5 checked.
3. an image-folder archive (``*.tar.gz``, ``*.tgz``, ``*.tar``, ``*.zip`` with "cifar" in its
   name) holding ``train|test/<class>/*.{png,jpg}``, e.g. a JPEG copy for offline machines.
4. an image-folder tree ``train|test/<class>/*.{png,jpg}``, in the folder itself or in a
   sub-folder with "cifar" in its name.

Image-folder copies are not checksummed (except a known archive's), so they are read as
untrusted: an image file larger than ``MAX_IMAGE_BYTES`` (1 MiB; a CIFAR-10 image is a few KB)
is refused before it is read, and no read takes more than that, whatever an archive declares.

If none is there and ``download`` is true, the official archive is downloaded into the folder
(to a temporary file, md5-verified, then renamed). A split must hold exactly CIFAR-10's images,
5,000 (train) or 1,000 (test) per class: a partial copy is refused with the classes it lacks.
The decoded arrays are cached under ``$DECORR_CACHE/datasets`` keyed by the source's checksum,
so later loads skip decoding; a cache file that does not load completely is rebuilt, and a cache
folder that cannot be written only turns caching off (with a warning).
"""

from __future__ import annotations

import functools
import hashlib
import io
import numbers
import os
import pickle
import tarfile
import urllib.error
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import _atomic
from ..paths import cache_dir, data_dir
from .download import ChecksumError, download_file, file_digest

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCHES_DIR = "cifar-10-batches-py"
# Published md5 of every file in the official archive (the values torchvision checks too).
BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
SPLIT_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
SPLIT_SIZES = {"train": 50_000, "test": 10_000}  # CIFAR-10's, what a configuration is checked against
# Images per class in each split: every copy must hold exactly these (the tests' tiny copies
# set their own).
PER_CLASS = {split: size // len(CLASSES) for split, size in SPLIT_SIZES.items()}
# Image-folder archives whose checksum is known: a mismatch means a corrupt copy.
KNOWN_IMAGE_ARCHIVES = {
    "cifar10-jpeg.tar.gz": "0f1a9cc5ca52fcbd0d9dcfc8dbf3be9cc3e57a4bbad87990a4f63bd36f8c766c",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# The most bytes one image file of an image-folder copy may hold: a 32x32 image is a few KB as
# PNG or JPEG, so anything near this is not a CIFAR-10 image and is refused unread.
MAX_IMAGE_BYTES = 1 << 20
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
# Bump when the decoded layout changes, so stale caches are not read.
CACHE_FORMAT = 1


class CorruptDataError(ValueError):
    """A dataset file exists but cannot be used: bad checksum, truncated, malformed or incomplete."""


class CacheWarning(UserWarning):
    """A cache could not be written (or a damaged one was replaced); the data still loads."""


@dataclass(frozen=True)
class Source:
    """One place CIFAR-10 can be read from."""

    kind: str  # "official-folder" | "official-archive" | "image-archive" | "image-folder"
    path: Path


def load_cifar10(
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = True,
    *,
    subset: int | None = None,
    seed: int = 0,
    cache: bool = True,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a CIFAR-10 split as tensors.

    Args:
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        root: folder (or archive file) to read from; default ``$DECORR_DATA``, else ``data/``.
        download: fetch the official archive into that folder when no copy is found there.
        subset: if given, this many images, balanced over the classes (the first
            ``subset % 10`` classes get one more) and drawn with ``seed``; kept in source order.
        seed: seed of the subset draw.
        cache: read/write the decoded arrays under ``$DECORR_CACHE/datasets``.
        progress: show progress bars for downloading and decoding.

    Returns:
        ``images``, a uint8 tensor (N, 3, 32, 32), and ``labels``, an int64 tensor (N,) with
        values 0..9 in the standard class order ``CLASSES``.

    Raises:
        FileNotFoundError: no copy found (and none could be downloaded); the message says where
            it looked and how to fix it.
        CorruptDataError: a copy was found but failed its checksum or could not be decoded.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, numbers.Integral) or subset < 1):
        raise ValueError(f"subset must be a positive int or None, got {subset!r}")
    subset = None if subset is None else int(subset)

    directory = data_dir(root)
    source = find_source(directory)
    if source is None:
        source = _download_or_explain(directory, download, progress)

    images, labels = _load_source(source, split, cache=cache, progress=progress)
    if subset is not None:
        index = balanced_subset(labels, subset, seed=seed)
        images, labels = images[index], labels[index]
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64))


def balanced_subset(labels: np.ndarray, size: int, *, seed: int = 0) -> np.ndarray:
    """Indices of ``size`` items balanced over classes, drawn with ``seed``, in ascending order."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if size > len(labels):
        raise ValueError(f"subset={size} is larger than the split ({len(labels)} images)")
    rng = np.random.default_rng(seed)
    per_class, extra = divmod(size, len(classes))
    chosen = []
    for rank, c in enumerate(classes):
        members = np.flatnonzero(labels == c)
        want = per_class + (rank < extra)
        if want > len(members):
            raise ValueError(f"subset={size} needs {want} images of class {c}, the split has {len(members)}")
        chosen.append(rng.choice(members, size=want, replace=False))
    return np.sort(np.concatenate(chosen))


# --------------------------------------------------------------------------- finding a copy


def find_source(directory: Path) -> Source | None:
    """The preferred CIFAR-10 copy in ``directory`` (or ``directory`` itself if it is a file)."""
    directory = Path(directory)
    if directory.is_file():
        return Source(_classify_archive(directory), directory)
    if not directory.is_dir():
        return None
    if (directory / BATCHES_DIR).is_dir():
        return Source("official-folder", directory / BATCHES_DIR)
    if (directory / ARCHIVE_NAME).is_file():
        return Source("official-archive", directory / ARCHIVE_NAME)
    for path in sorted(directory.iterdir()):
        if path.is_file() and "cifar" in path.name.lower() and path.name.lower().endswith(ARCHIVE_SUFFIXES):
            return Source("image-archive", path)
    for candidate in [directory, *sorted(p for p in directory.iterdir() if "cifar" in p.name.lower())]:
        if (candidate / "train").is_dir() or (candidate / "test").is_dir():
            return Source("image-folder", candidate)
    return None


def _classify_archive(path: Path) -> str:
    if path.name == ARCHIVE_NAME:
        return "official-archive"
    if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise ValueError(
            f"root={str(path)!r} is a file but not an archive ({', '.join(ARCHIVE_SUFFIXES)}): "
            "pass the folder that holds the data, or the archive itself"
        )
    return "image-archive"


def _download_or_explain(directory: Path, download: bool, progress: bool) -> Source:
    looked = (
        f"{directory}: no {BATCHES_DIR}/, no {ARCHIVE_NAME}, no image-folder archive "
        "(*cifar*.tar.gz|tgz|tar|zip) and no train|test/<class>/ image tree"
    )
    fixes = (
        "Fix it in one of two ways: set DECORR_DATA (or pass root=) to a folder that holds one "
        f"of these formats, or place the official archive {ARCHIVE_NAME} ({URL}, md5 "
        f"{ARCHIVE_MD5}) in {directory}."
    )
    if not download:
        raise FileNotFoundError(f"CIFAR-10 not found in {looked}; download=False. {fixes}")
    dest = directory / ARCHIVE_NAME
    try:
        download_file(URL, dest, md5=ARCHIVE_MD5, progress=progress)
    except (OSError, ChecksumError) as err:  # URLError is an OSError
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        raise FileNotFoundError(
            f"CIFAR-10 not found in {looked}, and downloading {URL} failed ({reason}); "
            f"no partial file was left. {fixes}"
        ) from err
    return Source("official-archive", dest)


def _digest(path: Path, algorithm: str) -> str:
    """``file_digest``, computed once per file version: loading both splits and recording a
    run's provenance would otherwise hash the same archive three times."""
    stat = path.stat()
    return _digest_of_version(str(path), stat.st_size, stat.st_mtime_ns, algorithm)


@functools.lru_cache(maxsize=16)
def _digest_of_version(path: str, size: int, mtime_ns: int, algorithm: str) -> str:
    return file_digest(Path(path), algorithm)


def describe_source(root: str | os.PathLike | None = None) -> dict:
    """Which copy of CIFAR-10 ``root`` (default ``$DECORR_DATA``, else ``data/``) holds, for a
    run's record: its kind, its file or folder name, and a checksum of its content (sha256 of an
    archive; for a folder, of its batch files' md5s or of its image listing). No path: where the
    data lives is the reader's business, what it is is the run's."""
    source = find_source(data_dir(root))
    if source is None:
        return {"kind": None, "name": None, "checksum": None}
    if source.kind in ("official-archive", "image-archive"):
        checksum = "sha256:" + _digest(source.path, "sha256")
    else:
        checksum = "listing:" + _source_key(source, "train")[:32]
    return {"kind": source.kind, "name": source.path.name, "checksum": checksum}


# --------------------------------------------------------------------------- decoding + cache


def _load_source(source: Source, split: str, *, cache: bool, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    key = _source_key(source, split)
    cached = cache_dir() / "datasets" / f"cifar10-{split}-{key[:20]}.npz"
    if cache:
        arrays = _read_cache(cached, split)
        if arrays is not None:
            return arrays
    reader = {
        "official-folder": _read_official_folder,
        "official-archive": _read_official_archive,
        "image-archive": _read_image_archive,
        "image-folder": _read_image_folder,
    }[source.kind]
    images, labels = reader(source.path, split, progress)
    check_counts(labels, split, source)  # nothing partial goes into the cache
    if cache:
        _write_cache(cached, images=images, labels=labels)
    return images, labels


def check_counts(labels: np.ndarray, split: str, source: Source) -> None:
    """Refuse a split that does not hold exactly ``PER_CLASS[split]`` images of every class,
    naming the classes that are short (or over) and by how many, and how to fix the copy."""
    expected = PER_CLASS[split]
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(CLASSES))[: len(CLASSES)]
    wrong = [(CLASSES[i], int(c)) for i, c in enumerate(counts) if c != expected]
    if not wrong:
        return
    details = "; ".join(
        f"{name}: {count:,} of {expected:,} ({expected - count:,} missing)"
        if count < expected
        else f"{name}: {count:,}, {count - expected:,} more than {expected:,}"
        for name, count in wrong
    )
    fix = {
        "official-folder": f"extract {ARCHIVE_NAME} again, or delete {source.path} so that the archive is used",
        "official-archive": f"delete {source.path} and download it again ({URL})",
        "image-archive": f"replace {source.path.name} with a complete copy",
        "image-folder": f"restore the missing files under {source.path / split}, or point DECORR_DATA at a complete copy",
    }[source.kind]
    raise CorruptDataError(
        f"{source.path}: the {split} split has {int(counts.sum()):,} images where CIFAR-10 has "
        f"{expected * len(CLASSES):,} ({expected:,} per class): {details}. The copy is incomplete "
        f"(an interrupted extraction, copy or download?): {fix}."
    )


def _read_cache(path: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays, or None if there are none or they do not load completely and
    consistently; a damaged file is removed (and rebuilt by the caller), never trusted."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as arrays:
            images, labels = arrays["images"], arrays["labels"]  # reading all of both checks their CRCs
        counts = np.bincount(labels, minlength=len(CLASSES))
        if (
            images.dtype != np.uint8
            or images.shape != (len(labels), 3, 32, 32)
            or counts.shape != (len(CLASSES),)
            or not bool((counts == PER_CLASS[split]).all())
        ):
            raise ValueError("arrays of the wrong shape, type or size")
        return images, labels
    except Exception as err:  # a truncated or bit-flipped file can raise almost anything
        warnings.warn(
            f"the dataset cache {path} was damaged ({type(err).__name__}: {err}); it is rebuilt",
            CacheWarning,
            stacklevel=4,
        )
        try:
            path.unlink()
        except OSError:
            pass
        return None


def _write_cache(path: Path, **arrays: np.ndarray) -> None:
    """Write the cache atomically; where that is not possible (a read-only or unusable cache
    folder), warn and go on without it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _atomic.temporary(path.parent, path.name)
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            _atomic.publish(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as err:
        warnings.warn(
            f"caching is off: the dataset cache {path.parent} cannot be written ({type(err).__name__}: {err}). "
            "The data still loads, decoded anew each time; set DECORR_CACHE to a writable folder to cache it.",
            CacheWarning,
            stacklevel=2,  # one place for every split: Python shows it once
        )


def _source_key(source: Source, split: str) -> str:
    """A checksum that changes whenever the source's content does.

    Files are hashed (sha256) and checked against known checksums here, so a corrupt archive is
    reported even when an old cache exists. An image tree is keyed by its listing (names, sizes,
    modification times): hashing 60,000 small files would cost more than decoding them.
    """
    h = hashlib.sha256(f"format={CACHE_FORMAT};kind={source.kind};split={split};".encode())
    path = source.path
    if source.kind == "official-archive":
        md5 = _digest(path, "md5")
        if md5 != ARCHIVE_MD5:
            raise CorruptDataError(
                f"{path} has md5 {md5}, expected {ARCHIVE_MD5}: the archive is corrupt or "
                f"incomplete. Delete it and download again ({URL}), or point DECORR_DATA at a good copy."
            )
        h.update(md5.encode())
    elif source.kind == "image-archive":
        digest = _digest(path, "sha256")
        expected = KNOWN_IMAGE_ARCHIVES.get(path.name)
        if expected is not None and digest != expected:
            raise CorruptDataError(
                f"{path} has sha256 {digest}, expected {expected}: the archive is corrupt or "
                "incomplete. Replace it with a good copy, or point DECORR_DATA elsewhere."
            )
        h.update(digest.encode())
    elif source.kind == "official-folder":
        for name in ["batches.meta", *SPLIT_BATCHES[split]]:
            h.update(_checked_batch_md5(path / name).encode())
    else:
        for file in sorted(_image_files(path / split)):
            stat = file.stat()
            h.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return h.hexdigest()


def _checked_batch_md5(path: Path) -> str:
    if not path.is_file():
        raise CorruptDataError(
            f"{path} is missing: the {BATCHES_DIR}/ folder is incomplete. Extract {ARCHIVE_NAME} "
            "again, or delete the folder so that the archive is used or downloaded."
        )
    md5 = _digest(path, "md5")  # once per file version: describe_source asks for it at every bank lookup
    if md5 != BATCH_MD5[path.name]:
        raise CorruptDataError(
            f"{path} has md5 {md5}, expected {BATCH_MD5[path.name]}: the file is corrupt. Extract "
            f"{ARCHIVE_NAME} again, or delete {path.parent} so that the archive is downloaded."
        )
    return md5


# --------------------------------------------------------------------------- official format


def _unpickle_batch(raw: bytes, name: str) -> dict:
    try:
        return pickle.loads(raw, encoding="bytes")  # the official batches are Python 2 pickles
    except Exception as err:
        raise CorruptDataError(f"{name} could not be unpickled ({err}): the file is corrupt") from err


def _decode_batches(raws: dict[str, bytes], split: str) -> tuple[np.ndarray, np.ndarray]:
    meta = _unpickle_batch(raws["batches.meta"], "batches.meta")
    names = tuple(n.decode() for n in meta[b"label_names"])
    if names != CLASSES:
        raise CorruptDataError(f"batches.meta lists classes {names}, expected {CLASSES}")
    images, labels = [], []
    for name in SPLIT_BATCHES[split]:
        batch = _unpickle_batch(raws[name], name)
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _read_official_folder(path: Path, split: str, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    # md5s were checked by _source_key
    raws = {name: (path / name).read_bytes() for name in ["batches.meta", *SPLIT_BATCHES[split]]}
    return _decode_batches(raws, split)


def _read_official_archive(path: Path, split: str, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    wanted = {f"{BATCHES_DIR}/{name}": name for name in ["batches.meta", *SPLIT_BATCHES[split]]}
    raws = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name in wanted:
                    raws[wanted[member.name]] = tar.extractfile(member).read()
    except (tarfile.TarError, zlib.error, EOFError, OSError) as err:
        raise CorruptDataError(f"{path} could not be read ({err}): delete it and download again") from err
    for name in wanted.values():
        if name not in raws:
            raise CorruptDataError(f"{path} has no {BATCHES_DIR}/{name}: not the official archive")
        md5 = hashlib.md5(raws[name]).hexdigest()
        if md5 != BATCH_MD5[name]:
            raise CorruptDataError(f"{path}: {name} has md5 {md5}, expected {BATCH_MD5[name]}")
    return _decode_batches(raws, split)


# --------------------------------------------------------------------------- image folders


def _class_of(parts: tuple[str, ...], split: str) -> str | None:
    """The class name if ``parts`` (a path split at '/') is ``.../<split>/<class>/<image>``."""
    if len(parts) >= 3 and parts[-3] == split and parts[-1].lower().endswith(IMAGE_SUFFIXES):
        return parts[-2]
    return None


def _decode_image(raw: bytes, name: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.size != (32, 32):  # read from the header: a huge image is refused before it is decoded
                raise CorruptDataError(f"{name} is {img.size[0]}x{img.size[1]}, CIFAR-10 images are 32x32")
            array = np.asarray(img.convert("RGB"))
    except CorruptDataError:
        raise
    except Exception as err:
        raise CorruptDataError(f"{name} could not be decoded as an image ({err})") from err
    if array.shape != (32, 32, 3):
        raise CorruptDataError(f"{name} is {array.shape[1]}x{array.shape[0]}, CIFAR-10 images are 32x32")
    return array.transpose(2, 0, 1)


def _too_large(name: str, where: Path, size: int | None) -> CorruptDataError:
    if size is None:  # found reading it: its declared size was smaller
        holds = f"holds more than the {MAX_IMAGE_BYTES:,}"
    else:
        holds = f"is {size:,} bytes, more than the {MAX_IMAGE_BYTES:,}"
    return CorruptDataError(
        f"{where}: {name} {holds} bytes one image may have (a CIFAR-10 image is a few KB): it is "
        "not a CIFAR-10 image and was not read. Replace the copy with a good one, or point "
        "DECORR_DATA elsewhere."
    )


def _read_image_bytes(file, name: str, where: Path, declared: int) -> bytes:
    """The bytes of the image file ``name`` of ``where``, from the open ``file``: refused unread
    when its ``declared`` size is over ``MAX_IMAGE_BYTES``, and never more than that read (an
    archive's declared size can lie)."""
    if declared > MAX_IMAGE_BYTES:
        raise _too_large(name, where, declared)
    raw = file.read(MAX_IMAGE_BYTES + 1)
    if len(raw) > MAX_IMAGE_BYTES:
        raise _too_large(name, where, None)
    return raw


def _stack(found: dict[str, list[tuple[str, np.ndarray]]], where: Path, split: str):
    unknown = sorted(set(found) - set(CLASSES))
    missing = [c for c in CLASSES if not found.get(c)]
    if unknown or missing:
        raise CorruptDataError(
            f"{where}: {split}/ must hold one folder per CIFAR-10 class {CLASSES}; "
            f"unknown folders {unknown}, missing or empty {missing}"
        )
    images, labels = [], []
    for label, cls in enumerate(CLASSES):
        for _, array in sorted(found[cls], key=lambda item: item[0]):
            images.append(array)
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _read_image_archive(path: Path, split: str, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    from tqdm.auto import tqdm

    found: dict[str, list] = {}
    bar = tqdm(desc=f"decoding {path.name} [{split}]", unit="img", disable=not progress)
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    cls = _class_of(tuple(info.filename.split("/")), split)
                    if cls is not None:
                        with archive.open(info) as file:
                            raw = _read_image_bytes(file, info.filename, path, info.file_size)
                        found.setdefault(cls, []).append((info.filename, _decode_image(raw, info.filename)))
                        bar.update()
        else:
            with tarfile.open(path, "r:*") as archive:
                for member in archive:
                    cls = _class_of(tuple(member.name.split("/")), split) if member.isfile() else None
                    if cls is not None:
                        raw = _read_image_bytes(archive.extractfile(member), member.name, path, member.size)
                        found.setdefault(cls, []).append((member.name, _decode_image(raw, member.name)))
                        bar.update()
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise CorruptDataError(
            f"{path} could not be read ({type(err).__name__}: {err}): the archive is corrupt or "
            "truncated. Replace it with a good copy, or point DECORR_DATA elsewhere."
        ) from err
    finally:
        bar.close()
    return _stack(found, path, split)


def _image_files(split_dir: Path) -> list[Path]:
    if not split_dir.is_dir():
        return []
    return [p for p in split_dir.glob("*/*") if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)]


def _read_image_folder(path: Path, split: str, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    from tqdm.auto import tqdm

    found: dict[str, list] = {}
    files = _image_files(path / split)
    if not files:
        raise CorruptDataError(f"{path / split} holds no <class>/*.png|jpg images")
    for file in tqdm(files, desc=f"decoding {path.name}/{split}", unit="img", disable=not progress):
        with open(file, "rb") as f:
            raw = _read_image_bytes(f, str(file.relative_to(path)), path, os.fstat(f.fileno()).st_size)
        found.setdefault(file.parent.name, []).append((file.name, _decode_image(raw, str(file))))
    return _stack(found, path, split)
