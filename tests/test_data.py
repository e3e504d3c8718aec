"""decorr_lite.data: every format, the cache, the subset, downloads, and every failure."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import image_members, png_bytes, write_tar, write_tree, write_zip
from PIL import Image

from decorr_lite.data import CLASSES, CorruptDataError, balanced_subset, cifar10, download_file, load_cifar10
from decorr_lite.data.download import ChecksumError


def sort_by_class(x, y):
    """Official batches interleave classes; image folders come class by class. Compare sets."""
    order = np.lexsort((x.reshape(len(x), -1).sum(1), y))
    return x[order], y[order]


def assert_same_split(images, labels, expected):
    x, y = expected
    assert images.dtype == torch.uint8 and images.shape == (len(y), 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.shape == (len(y),)
    got_x, got_y = sort_by_class(images.numpy(), labels.numpy())
    want_x, want_y = sort_by_class(x, y)
    np.testing.assert_array_equal(got_y, want_y)
    np.testing.assert_array_equal(got_x, want_x)


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("which", [0, 1], ids=["batches-folder", "official-archive"])
def test_official_formats_decode_exactly(official, splits, split, which):
    images, labels = load_cifar10(split, root=official[which], download=False, progress=False)
    assert_same_split(images, labels, splits[split])


@pytest.mark.parametrize("kind", ["tar.gz", "zip", "tree", "archive-path"])
def test_image_folder_formats_decode_exactly(tmp_path, splits, kind):
    members = list(image_members(splits))
    if kind == "tar.gz":
        root = tmp_path
        write_tar(tmp_path / "cifar10-png.tar.gz", members)
    elif kind == "zip":
        root = tmp_path
        write_zip(tmp_path / "cifar10-png.zip", members)
    elif kind == "tree":
        root = write_tree(tmp_path, members)  # tmp_path/cifar10/train/<class>/...
    else:
        root = write_tar(tmp_path / "anything.tgz", members)  # root may name the archive itself
    for split in ("train", "test"):
        images, labels = load_cifar10(split, root=root, download=False, progress=False)
        assert_same_split(images, labels, splits[split])
        # image folders come in class order, then file name order
        assert torch.equal(labels, torch.sort(labels).values)


def test_tree_directly_in_root(tmp_path, splits):
    write_tree(tmp_path, image_members(splits, prefix=""))
    images, labels = load_cifar10("test", root=tmp_path, download=False, progress=False)
    assert_same_split(images, labels, splits["test"])


def test_official_copy_is_preferred_over_image_folders(official, splits):
    folder_root = official[0]
    # a JPEG-like copy with different pixels next to the official folder must not be read
    other = {s: (np.zeros_like(x), y) for s, (x, y) in splits.items()}
    write_tar(folder_root / "cifar10-other.tar.gz", image_members(other))
    images, labels = load_cifar10("test", root=folder_root, download=False, progress=False)
    assert_same_split(images, labels, splits["test"])
    assert cifar10.find_source(folder_root).kind == "official-folder"


def test_root_then_env_then_project_data(image_archive, tmp_path, monkeypatch, splits):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DECORR_DATA", str(image_archive))
    images, _ = load_cifar10("test", download=False, progress=False)  # from DECORR_DATA
    assert images.shape[0] == len(splits["test"][1])
    with pytest.raises(FileNotFoundError, match=str(empty)):  # root wins over DECORR_DATA
        load_cifar10("test", root=empty, download=False)
    monkeypatch.delenv("DECORR_DATA")
    from decorr_lite.paths import data_dir, project_root

    assert data_dir() == project_root() / "data"


def test_cache_makes_the_second_load_skip_decoding(image_archive, monkeypatch, isolated_cache):
    first = load_cifar10("train", root=image_archive, download=False, progress=False)
    cached = list((isolated_cache / "datasets").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".npz"

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although a cache exists")

    monkeypatch.setattr(cifar10, "_read_image_archive", no_decoding)
    second = load_cifar10("train", root=image_archive, download=False, progress=False)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    with pytest.raises(AssertionError, match="decoded again"):
        load_cifar10("train", root=image_archive, download=False, cache=False)


def test_cache_is_keyed_by_content(tmp_path, splits, isolated_cache):
    archive = write_tar(tmp_path / "cifar10-a.tar.gz", image_members(splits))
    first, _ = load_cifar10("test", root=tmp_path, download=False, progress=False)
    changed = {s: (255 - x, y) for s, (x, y) in splits.items()}
    write_tar(archive, image_members(changed))  # same name, new content
    second, _ = load_cifar10("test", root=tmp_path, download=False, progress=False)
    assert torch.equal(second, 255 - first)
    assert len(list((isolated_cache / "datasets").glob("*.npz"))) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip a bit", "empty", "garbage", "not an npz"])
def test_a_damaged_dataset_cache_is_rebuilt(image_archive, isolated_cache, damage):
    """A truncated or bit-flipped .npz failed every later load (BadZipFile, Bad CRC-32)."""
    first = load_cifar10("test", root=image_archive, download=False, progress=False)
    (cached,) = (isolated_cache / "datasets").iterdir()
    raw = bytearray(cached.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip a bit":
        raw[len(raw) // 2] ^= 0x10  # inside the images
    elif damage == "empty":
        raw = b""
    elif damage == "not an npz":
        raw = b"not an npz"
    else:
        raw = os.urandom(len(raw))
    cached.write_bytes(bytes(raw))
    with pytest.warns(cifar10.CacheWarning, match="damaged"):
        again = load_cifar10("test", root=image_archive, download=False, progress=False)
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt: the next load is clean
        load_cifar10("test", root=image_archive, download=False, progress=False)


def test_a_cache_folder_that_is_a_file_only_turns_caching_off(image_archive, tmp_path, monkeypatch):
    """DECORR_CACHE naming a file aborted load_cifar10 after decoding (NotADirectoryError)."""
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("DECORR_CACHE", str(not_a_folder))
    with pytest.warns(cifar10.CacheWarning, match="caching is off.*DECORR_CACHE"):
        images, labels = load_cifar10("test", root=image_archive, download=False, progress=False)
    assert images.shape == (30, 3, 32, 32)


# --------------------------------------------------------------------------- subsets


def test_subset_is_balanced_seeded_and_ordered(image_archive):
    images, labels = load_cifar10("train", root=image_archive, download=False, progress=False)
    x, y = load_cifar10("train", root=image_archive, download=False, progress=False, subset=23, seed=5)
    assert len(y) == 23
    counts = torch.bincount(y, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts[:3].tolist() == [3, 3, 3]
    again = load_cifar10("train", root=image_archive, download=False, progress=False, subset=23, seed=5)
    other = load_cifar10("train", root=image_archive, download=False, progress=False, subset=23, seed=6)
    assert torch.equal(x, again[0]) and not torch.equal(x, other[0])
    # every subset image is one of the split's, with its label
    index = balanced_subset(labels.numpy(), 23, seed=5)
    assert np.all(np.diff(index) > 0)
    assert torch.equal(images[index], x) and torch.equal(labels[index], y)


@pytest.mark.parametrize("subset", [0, -3, 2.5, True])
def test_subset_must_be_a_positive_int(image_archive, subset):
    with pytest.raises(ValueError, match="subset"):
        load_cifar10("train", root=image_archive, download=False, subset=subset)


def test_subset_accepts_numpy_integers(image_archive):
    images, _ = load_cifar10("train", root=image_archive, download=False, progress=False, subset=np.int64(20))
    assert images.shape[0] == 20


def test_subset_larger_than_split(image_archive):
    with pytest.raises(ValueError, match="larger than the split"):
        load_cifar10("test", root=image_archive, download=False, progress=False, subset=31)


def test_unknown_split():
    with pytest.raises(ValueError, match="split"):
        load_cifar10("validation")


# --------------------------------------------------------------------------- failures


def test_nothing_found_without_download_explains_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10("train", root=tmp_path, download=False)
    message = str(err.value)
    assert str(tmp_path) in message and "DECORR_DATA" in message and cifar10.ARCHIVE_NAME in message


def test_corrupt_official_archive(official):
    archive = official[1] / cifar10.ARCHIVE_NAME
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="md5"):
        load_cifar10("train", root=official[1], download=False)


def test_corrupt_batch_file_is_named(official):
    batch = official[0] / cifar10.BATCHES_DIR / "data_batch_3"
    data = bytearray(batch.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one pixel changed: the file still unpickles, only md5 tells
    batch.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="data_batch_3 has md5"):
        load_cifar10("train", root=official[0], download=False)
    load_cifar10("test", root=official[0], download=False, progress=False)  # the test split is intact


def test_missing_batch_file_is_named(official):
    (official[0] / cifar10.BATCHES_DIR / "test_batch").unlink()
    with pytest.raises(CorruptDataError, match="test_batch.*missing"):
        load_cifar10("test", root=official[0], download=False)


def test_truncated_image_archive(tmp_path, splits):
    archive = write_tar(tmp_path / "cifar10-x.tar.gz", image_members(splits))
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(CorruptDataError, match="corrupt or truncated"):
        load_cifar10("train", root=tmp_path, download=False, progress=False)


def test_known_archive_with_wrong_checksum(tmp_path, splits):
    write_tar(tmp_path / "cifar10-jpeg.tar.gz", image_members(splits))  # the shared copy's name
    with pytest.raises(CorruptDataError, match="sha256"):
        load_cifar10("train", root=tmp_path, download=False)


def test_undecodable_image_is_named(tmp_path, splits):
    members = list(image_members(splits))
    members[4] = (members[4][0], b"\x89PNG garbage")
    write_tar(tmp_path / "cifar10-x.tar.gz", members)
    with pytest.raises(CorruptDataError, match=members[4][0]):
        load_cifar10("train", root=tmp_path, download=False, progress=False)


def test_wrong_image_size(tmp_path, splits):
    members = list(image_members(splits))
    members[0] = (members[0][0], png_bytes(np.zeros((3, 28, 28), np.uint8)))
    write_tar(tmp_path / "cifar10-x.tar.gz", members)
    with pytest.raises(CorruptDataError, match="32x32"):
        load_cifar10("train", root=tmp_path, download=False, progress=False)


HUGE = 32 << 20  # bytes: a member 32 MiB large, zeros (an archive of a few KB)


def _with_a_huge_member(splits, kind: str, root: Path) -> tuple[Path, str]:
    """A copy of ``kind`` in ``root`` whose train/cat/ holds one HUGE-byte "image" among the
    others; returns the archive or folder and the member's name."""
    members = list(image_members(splits))
    name = "cifar10/train/cat/9999.png"
    if kind == "tree":
        write_tree(root, members)
        with open(root / name, "wb") as f:
            f.truncate(HUGE)  # sparse: nothing written
        return root / "cifar10", name.removeprefix("cifar10/")
    members.insert(len(members) // 4, (name, bytes(HUGE)))
    if kind == "zip":
        path = root / "cifar10-x.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for member, data in members:
                archive.writestr(member, data)
        return path, name
    return write_tar(root / "cifar10-x.tar.gz", members), name


@pytest.mark.parametrize("kind", ["tar.gz", "zip", "tree"])
def test_a_file_far_larger_than_an_image_is_refused_unread(tmp_path, splits, kind):
    """A 199 KB archive with one 200 MB member was read whole (peak memory +218 MB) before the
    member was found not to be an image."""
    where, name = _with_a_huge_member(splits, kind, tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptDataError) as err:
            load_cifar10("train", root=tmp_path, download=False, cache=False, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(err.value)
    assert str(where) in message and name in message, message
    assert f"{HUGE:,} bytes, more than the {cifar10.MAX_IMAGE_BYTES:,}" in message and "not read" in message
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB: the member was read"


def test_a_declared_size_that_lies_is_not_trusted(tmp_path):
    """No more than MAX_IMAGE_BYTES is ever read for an image, whatever its declared size."""

    class Endless(io.RawIOBase):
        asked = 0

        def readinto(self, buffer):
            Endless.asked += len(buffer)
            buffer[:] = bytes(len(buffer))
            return len(buffer)

    with pytest.raises(CorruptDataError, match="x.png holds more than the 1,048,576 bytes"):
        cifar10._read_image_bytes(Endless(), "x.png", tmp_path / "cifar10-x.zip", declared=1000)
    assert Endless.asked <= cifar10.MAX_IMAGE_BYTES + 1


def test_an_image_of_huge_dimensions_is_refused_before_it_is_decoded(tmp_path, splits):
    members = list(image_members(splits))
    buffer = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buffer, format="PNG")  # 64 MB of pixels in a 60 KB file
    members[3] = (members[3][0], buffer.getvalue())
    write_tar(tmp_path / "cifar10-x.tar.gz", members)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptDataError, match=f"{members[3][0]} is 8000x8000, CIFAR-10 images are 32x32"):
            load_cifar10("train", root=tmp_path, download=False, cache=False, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB: the image was decoded"


def test_missing_and_unknown_class_folders(tmp_path, splits):
    members = [(n.replace("/truck/", "/lorry/"), b) for n, b in image_members(splits)]
    write_tree(tmp_path, members)
    with pytest.raises(CorruptDataError, match=r"unknown folders \['lorry'\].*missing or empty \['truck'\]"):
        load_cifar10("test", root=tmp_path, download=False, progress=False)


def _cached_files(cache: Path) -> list[str]:
    folder = cache / "datasets"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_tar_cut_between_members_is_refused_and_not_cached(splits, tmp_path, isolated_cache):
    """An uncompressed tar cut cleanly after a member reads without an error: it loaded as a
    smaller test split (9,199 images of the real copy) and was cached."""
    full = tmp_path / "cifar10-full.tar"
    with tarfile.open(full, "w") as tar:
        for name, data in image_members(splits):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(full) as tar:
        members = [m for m in tar.getmembers() if "/test/" in m.name]
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "cifar10-cut.tar").write_bytes(full.read_bytes()[: members[-2].offset])  # the last 2 test images gone
    with pytest.raises(CorruptDataError, match=r"test split has 28 images where CIFAR-10 has 30") as err:
        load_cifar10("test", root=cut, download=False, progress=False)
    assert "truck: 1 of 3 (2 missing)" in str(err.value) and "complete copy" in str(err.value)
    assert _cached_files(isolated_cache) == []


def test_an_image_tree_with_missing_files_names_the_class(splits, tmp_path, isolated_cache):
    tree = write_tree(tmp_path / "tree", image_members(splits, prefix=""))
    for path in sorted((tree / "train" / "cat").iterdir())[:2]:
        path.unlink()
    with pytest.raises(CorruptDataError, match=r"cat: 4 of 6 \(2 missing\)") as err:
        load_cifar10("train", root=tree, download=False, progress=False)
    assert "restore the missing files" in str(err.value)
    assert _cached_files(isolated_cache) == []
    # an extra image is as wrong as a missing one
    (tree / "test" / "dog" / "extra.png").write_bytes((tree / "test" / "dog").iterdir().__next__().read_bytes())
    with pytest.raises(CorruptDataError, match="dog: 4, 1 more than 3"):
        load_cifar10("test", root=tree, download=False, progress=False)


def test_root_file_that_is_not_an_archive(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="root="):
        load_cifar10("train", root=path, download=False)


# --------------------------------------------------------------------------- downloads


def serve(path: Path) -> str:
    return path.resolve().as_uri()  # urllib reads file:// URLs like http:// ones


def test_download_when_missing(official, tmp_path, monkeypatch, splits):
    monkeypatch.setattr(cifar10, "URL", serve(official[1] / cifar10.ARCHIVE_NAME))
    target = tmp_path / "fresh"
    images, labels = load_cifar10("test", root=target, progress=False)
    assert_same_split(images, labels, splits["test"])
    assert sorted(p.name for p in target.iterdir()) == [cifar10.ARCHIVE_NAME]


def test_download_with_bad_checksum_leaves_nothing(official, tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "URL", serve(official[1] / cifar10.ARCHIVE_NAME))
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", "0" * 32)
    target = tmp_path / "fresh"
    with pytest.raises(FileNotFoundError, match="md5") as err:
        load_cifar10("test", root=target, progress=False)
    assert "DECORR_DATA" in str(err.value)
    assert not target.exists()  # the folder this download made is gone with it


def test_offline_download_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "URL", serve(tmp_path / "no-such-file.tar.gz"))
    target = tmp_path / "fresh"
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10("train", root=target, progress=False)
    message = str(err.value)
    assert "downloading" in message and "failed" in message and "DECORR_DATA" in message
    assert not target.exists()  # a mistyped data folder is not created by a download that cannot happen


def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch):
    class Broken:
        headers = {"Content-Length": "100"}

        def __init__(self):
            self.calls = 0

        def read(self, size):
            self.calls += 1
            if self.calls > 1:
                raise ConnectionResetError("connection lost")
            return b"x" * 10

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: Broken())
    with pytest.raises(ConnectionResetError):
        download_file("http://example.invalid/f", tmp_path / "f.tar.gz", md5="0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_file_verifies_md5(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(os.urandom(3000))
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    dest = download_file(serve(source), tmp_path / "out" / "dst.bin", md5=md5, progress=False)
    assert dest.read_bytes() == source.read_bytes()
    with pytest.raises(ChecksumError, match="expected"):
        download_file(serve(source), tmp_path / "out" / "bad.bin", md5="f" * 32, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dst.bin"]


# --------------------------------------------------------------------------- the shared copy


def shared_archive() -> Path | None:
    root = os.environ.get("DECORR_TEST_DATA") or os.environ.get("DECORR_DATA")  # see the root conftest.py
    if root and (Path(root) / "cifar10-jpeg.tar.gz").is_file():
        return Path(root)
    return None


@pytest.mark.skipif(
    shared_archive() is None, reason="DECORR_TEST_DATA (or DECORR_DATA) does not point at the shared CIFAR-10 copy"
)
def test_shared_copy(monkeypatch):
    root = shared_archive()
    monkeypatch.setenv("DECORR_CACHE", str(Path(__file__).resolve().parent.parent / ".cache"))
    monkeypatch.setattr(cifar10, "PER_CLASS", {"train": 5000, "test": 1000})  # the real thing
    images, labels = load_cifar10("test", root=root, download=False, progress=False)
    assert images.shape == (10000, 3, 32, 32)
    assert torch.bincount(labels).tolist() == [1000] * 10
    mean = images.double().mean(dim=(0, 2, 3)) / 255
    # the statistics published with the copy (../shared/data/README.md)
    np.testing.assert_allclose(mean.numpy(), [0.4941, 0.4851, 0.4504], atol=1e-3)
    train, train_labels = load_cifar10("train", root=root, download=False, progress=False)
    assert train.shape == (50000, 3, 32, 32) and torch.bincount(train_labels).tolist() == [5000] * 10
    assert len(CLASSES) == 10


# --------------------------------------------------------------------------- sample images


def test_sample_images_ship_with_the_package_for_a_machine_without_data(tmp_path, monkeypatch):
    from decorr_lite.data import samples

    monkeypatch.setenv("DECORR_DATA", str(tmp_path))  # an empty folder: no dataset
    images, labels, source = samples.sample_images(per_class=2)
    assert source == "shipped samples" and images.dtype == torch.uint8 and images.shape == (20, 3, 32, 32)
    assert labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert len({images[i].numpy().tobytes() for i in range(20)}) == 20  # twenty different images
    one, one_labels, _ = samples.sample_images(per_class=1)
    assert torch.equal(one, images[::2]) and one_labels.tolist() == list(range(10))
    with pytest.raises(ValueError, match="only 2 images per class ship"):
        samples.sample_images(per_class=3)


def test_sample_images_come_from_the_dataset_when_there_is_one(tiny_cifar):
    from decorr_lite.data import samples

    images, labels, source = samples.sample_images(per_class=1, root=tiny_cifar)
    test_images, test_labels = load_cifar10("test", tiny_cifar, download=False, progress=False)
    assert source == "dataset" and labels.tolist() == list(range(10))
    first = [int((test_labels == c).nonzero()[0]) for c in range(10)]
    assert torch.equal(images, test_images[first])
