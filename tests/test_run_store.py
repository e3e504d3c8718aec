"""The run cache and the ``out`` folder (decorr_lite.train): a user's files are never touched, a
finished run is never lost, a run is never served for other data, and a reader never sees a run
half replaced."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import image_members, make_split, write_tar

from decorr_lite import cli, runs, train, training
from decorr_lite.data import cifar10
from decorr_lite.data.cifar10 import CacheWarning


def _no_training(*args, **kwargs):
    raise AssertionError("trained, although the request should have been refused first")


# --------------------------------------------------------------------------- out=


def test_out_writes_the_run_and_leaves_everything_else_alone(tiny_run, tmp_path):
    """out= emptied the folder, subfolders included, before writing the run (``--out .`` emptied
    the working directory)."""
    out = tmp_path / "mine"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "thesis.tex").write_text("years of work")
    (out / "data.csv").write_text("1,2,3")
    for cache in (False, True):  # written anew, and copied from the cache
        run = train.train_ssl(**tiny_run, cache=cache, out=out, overwrite=True, progress=False)
        assert (out / "notes" / "thesis.tex").read_text() == "years of work"
        assert (out / "data.csv").read_text() == "1,2,3"
        assert run.path == out and runs.load_run(out).final == json.loads(json.dumps(run.final))
    assert sorted(p.name for p in out.iterdir()) == sorted(["notes", "data.csv", *runs.RUN_FILES])


def test_out_holding_run_files_is_refused_before_training_unless_told_to_overwrite(
    tiny_run, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    first = train.train_ssl(**tiny_run, cache=False, out=out, progress=False)
    before = {name: (out / name).read_bytes() for name in runs.RUN_FILES}
    trains = training._train
    monkeypatch.setattr(training, "_train", _no_training)
    other = {**tiny_run, "seed": 1}
    with pytest.raises(ValueError, match=r"out=.*already holds metrics\.json, arrays\.npz, model\.pt.*overwrite=True"):
        train.train_ssl(**other, out=out, progress=False)
    flags = [x for k, v in other.items() if v is not None for x in (f"--{k.replace('_', '-')}", str(v))]
    assert cli.main(["train", "--quiet", *flags, "--train-subset", "0", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in runs.RUN_FILES} == before
    monkeypatch.setattr(training, "_train", trains)
    replaced = train.train_ssl(**other, out=out, overwrite=True, cache=False, progress=False)
    assert runs.load_run(out).config["seed"] == 1 != first.config["seed"]
    assert replaced.path == out


@pytest.mark.parametrize("cached", [False, True])
def test_out_replaces_a_planted_link_and_never_writes_through_it(tiny_run, tmp_path, cached):
    """A cached run was copied to out with shutil.copyfile, which wrote through a symbolic link
    planted there (out/metrics.json -> another file) and overwrote its target."""
    if cached:
        train.train_ssl(**tiny_run, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in runs.RUN_FILES:
        (out / name).symlink_to(victim)
    train.train_ssl(**tiny_run, cache=cached, out=out, overwrite=True, progress=False)
    assert victim.read_text() == "precious"
    assert not any((out / name).is_symlink() for name in runs.RUN_FILES)
    runs.load_run(out)


@pytest.mark.parametrize("kind", ["a file", "inside a file"])
def test_an_unusable_out_folder_fails_before_training(kind, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DECORR_DATA", str(tmp_path / "no-data-here"))
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker if kind == "a file" else blocker / "run"
    assert cli.main(["train", "--quiet", "--out", str(out)]) == 2
    assert "error: out=" in capsys.readouterr().err


# --------------------------------------------------------------------------- a full disk


def test_a_full_disk_while_caching_keeps_the_run(tiny_run, tmp_path, monkeypatch, isolated_cache):
    """torch.save reports a full disk as a RuntimeError, which was not caught: the trained run
    was lost with exit 1. Now the cache is skipped with a warning, the run is returned and out
    is written; nothing half-written stays in the cache."""
    real_save = torch.save

    def disk_full_in_the_cache(obj, f, *args, **kwargs):
        if str(isolated_cache) in str(f):
            with open(f, "wb") as handle:
                handle.write(b"PK\x03\x04 half")
            raise RuntimeError(
                "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/3: file write failed"
            )
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_in_the_cache)
    out = tmp_path / "out"
    with pytest.warns(CacheWarning, match="the run was not cached.*RuntimeError.*Free some space"):
        run = train.train_ssl(**tiny_run, out=out, progress=False)
    assert np.isfinite(run.final["knn_top1"]) and run.path == out
    assert runs.load_run(out).final["knn_top1"] == run.final["knn_top1"]
    torch.load(out / "model.pt", weights_only=True)
    leftovers = [p for p in (isolated_cache / "runs").rglob("*") if p.is_file()]
    assert leftovers == []
    monkeypatch.setattr(torch, "save", real_save)
    assert train.cached_run(**tiny_run) is None  # nothing was cached, so nothing damaged is served


def test_a_full_disk_while_writing_out_leaves_out_as_it_was(tiny_run, tmp_path, monkeypatch):
    """out= replaced its files one by one: a full disk at model.pt left a new metrics.json and
    arrays.npz beside the old model.pt, a run that never existed."""
    out = tmp_path / "out"
    train.train_ssl(**tiny_run, cache=False, out=out, progress=False)
    before = {name: (out / name).read_bytes() for name in runs.RUN_FILES}
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(RuntimeError, match="file write failed"):
        train.train_ssl(**{**tiny_run, "seed": 1}, cache=False, out=out, overwrite=True, progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert {name: (out / name).read_bytes() for name in runs.RUN_FILES} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(runs.RUN_FILES)  # no temporaries left


def test_a_run_without_weights_writes_nothing_to_out(tmp_path):
    run = runs.TrainResult(config={}, history=[], final={}, arrays={"a": np.zeros(2)})
    with pytest.raises(ValueError, match="no model weights"):
        runs.write_run_files(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- a damaged entry


@pytest.mark.parametrize(
    "damage",
    ["truncate metrics.json", "truncate arrays.npz", "remove model.pt", "truncate model.pt", "remove metrics.json"],
)
def test_a_damaged_run_cache_entry_is_retrained_and_replaced(tiny_run, damage):
    """A truncated metrics.json crashed every later run of that configuration (JSONDecodeError),
    and a run without model.pt was served as cached."""
    first = train.train_ssl(**tiny_run, progress=False)
    verb, name = damage.split()
    path = first.path / name
    path.unlink() if verb == "remove" else path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(CacheWarning, match="damaged"):
        again = train.train_ssl(**tiny_run, progress=False)
    assert not again.from_cache and again.final["knn_top1"] == first.final["knn_top1"]
    assert train.cached_run(**tiny_run) is not None  # replaced: a clean hit from now on
    again.load_model()


def test_no_cache_on_the_command_line_replaces_a_damaged_entry(tiny_run, tmp_path, capsys):
    first = train.train_ssl(**tiny_run, progress=False)
    (first.path / "metrics.json").write_text("{")
    argv = (
        ["train", "--quiet", "--no-cache"]
        + [x for k, v in tiny_run.items() if v is not None for x in (f"--{k.replace('_', '-')}", str(v))]
        + ["--train-subset", "0"]
    )
    assert cli.main(argv) == 0
    replaced = train.load_run(first.path.parent).final  # the run's folder names its new version
    assert {k: replaced[k] for k in ("knn_top1", "linear_probe_top1", "effective_rank")} == {
        k: first.final[k] for k in ("knn_top1", "linear_probe_top1", "effective_rank")
    }


# --------------------------------------------------------------------------- the data's identity


def test_a_run_is_never_served_for_other_data(tiny_run, tmp_path):
    """The cache key left the data out: a run requested on dataset B (all images black) was
    answered from the cached run of dataset A."""
    black = tmp_path / "black"
    black.mkdir()
    splits = {split: make_split(split, 10 + i) for i, split in enumerate(("train", "test"))}
    splits = {split: (np.zeros_like(x), y) for split, (x, y) in splits.items()}
    write_tar(black / "cifar10-black.tar.gz", image_members(splits))
    on_a = train.train_ssl(**tiny_run, progress=False)
    assert train.cached_run(**tiny_run) is not None
    assert train.cached_run(**{**tiny_run, "data_root": str(black)}) is None
    on_b = train.train_ssl(**{**tiny_run, "data_root": str(black)}, progress=False)
    assert not on_b.from_cache
    assert on_b.final["provenance"]["data"]["checksum"] != on_a.final["provenance"]["data"]["checksum"]
    assert on_b.final["median_std"] == 0.0 < on_a.final["median_std"]  # black images: nothing to spread
    assert train.cached_run(**{**tiny_run, "data_root": str(black)}).final == json.loads(json.dumps(on_b.final))


def test_a_run_whose_data_arrives_while_it_trains_is_found_again(tiny_run, tmp_path, monkeypatch):
    """The key was computed before the data was downloaded (no checksum yet), and the run was
    stored under that key: the next request, with the data present, never found it."""
    empty = tmp_path / "downloads-here"
    empty.mkdir()
    real_train = training._train

    def download_then_train(config, *args):  # what the first run on a new machine does
        shutil.copy(next(Path(tiny_run["data_root"]).glob("*.tar.gz")), empty)
        return real_train(config, *args)

    monkeypatch.setattr(training, "_train", download_then_train)
    settings = {**tiny_run, "data_root": str(empty)}
    first = train.train_ssl(**settings, progress=False)
    monkeypatch.setattr(training, "_train", _no_training)
    again = train.train_ssl(**settings, progress=False)
    assert again.from_cache and again.final == json.loads(json.dumps(first.final))


def test_a_damaged_data_folder_finds_no_run_and_raises_nothing_until_training(tiny_run, official, monkeypatch):
    """Looking a run up (the panel does it on every click) read the data's checksum and let a
    damaged copy's error escape; a damaged copy now finds no run, and training says what is wrong."""
    folder_root, _ = official
    train.train_ssl(**{**tiny_run, "data_root": str(folder_root)}, progress=False)
    (folder_root / cifar10.BATCHES_DIR / "data_batch_3").write_bytes(b"damaged")
    assert train.cached_run(**{**tiny_run, "data_root": str(folder_root)}) is None
    with pytest.raises(cifar10.CorruptDataError, match="data_batch_3"):
        train.train_ssl(**{**tiny_run, "data_root": str(folder_root)}, progress=False)


# --------------------------------------------------------------------------- replacing a cached run


def _marked_run(mark: int) -> runs.TrainResult:
    """A small run whose every file says which writer wrote it."""
    return runs.TrainResult(
        config={"mark": mark},
        history=[{"mark": mark}],
        final={"mark": mark},
        arrays={"mark": np.full(20_000, mark)},  # large enough that a write takes a while
        state_dict={"mark": torch.full((20_000,), float(mark))},
    )


def _keep_replacing(run_dir: str, mark: int, seconds: float) -> None:
    end = time.monotonic() + seconds
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a write that fails is a failure of the test
        while time.monotonic() < end:
            assert runs._save_run(_marked_run(mark), runs.Path(run_dir)) is not None


def test_a_replaced_version_is_kept_for_a_while_after_it_is_replaced_then_removed(isolated_cache):
    """A version's age was counted from when it was written: a run cached long ago was deleted
    the moment another replaced it, under a reader that had just opened it."""
    run_dir = isolated_cache / "runs" / "0123456789abcdef"
    first = runs._save_run(_marked_run(0), run_dir)
    long_ago = time.time() - 10 * runs.OLD_VERSIONS_KEPT_SECONDS
    os.utime(first, (long_ago, long_ago))
    reading = runs.load_run(run_dir)  # a reader opens the current version ...
    runs._save_run(_marked_run(1), run_dir)  # ... as another process replaces it
    assert reading.path == first and first.is_dir()
    np.testing.assert_array_equal(runs.load_run(first).arrays["mark"], 0)
    os.utime(first, (long_ago, long_ago))  # the reader's time is up
    third = runs._save_run(_marked_run(2), run_dir)
    assert not first.exists() and runs.load_run(run_dir).path == third


def test_a_replaced_version_is_dated_before_current_moves_on(isolated_cache, monkeypatch):
    """Dated only after "current" had moved on, a version that was written long ago looked old to
    another writer's cleaning in between, which removed it under a reader."""
    run_dir = isolated_cache / "runs" / "0123456789abcdef"
    first = runs._save_run(_marked_run(0), run_dir)
    long_ago = time.time() - 10 * runs.OLD_VERSIONS_KEPT_SECONDS
    os.utime(first, (long_ago, long_ago))
    real_write_file, ages = runs._atomic.write_file, []

    def write_file(destination, write):
        if destination.name == runs.CURRENT:  # the moment another writer could clean
            ages.append(time.time() - first.stat().st_mtime)
        return real_write_file(destination, write)

    monkeypatch.setattr(runs._atomic, "write_file", write_file)
    runs._save_run(_marked_run(1), run_dir)
    assert ages and ages[0] < runs.OLD_VERSIONS_KEPT_SECONDS


def test_a_model_whose_cached_version_was_replaced_says_how_to_load_it_again(isolated_cache):
    run_dir = isolated_cache / "runs" / "0123456789abcdef"
    runs._save_run(_marked_run(0), run_dir)
    loaded = runs.load_run(run_dir)
    shutil.rmtree(loaded.path)  # replaced, and the old version removed since
    with pytest.raises(FileNotFoundError, match=r"replaced this run since it was loaded.*cached_run"):
        loaded.load_model()


def test_a_run_folder_created_by_another_writer_meanwhile_is_used(isolated_cache, monkeypatch):
    """Two processes caching the same new run: the one whose mkdir came second got
    FileExistsError, and its run was not cached."""
    run_dir = isolated_cache / "runs" / "0123456789abcdef"
    real_is_dir = Path.is_dir

    def the_other_writer_creates_it_after_the_check(path):
        found = real_is_dir(path)
        if path == run_dir and not found:
            os.makedirs(path)
        return found

    monkeypatch.setattr(Path, "is_dir", the_other_writer_creates_it_after_the_check)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "the run was not cached" fails the test
        version = runs._save_run(_marked_run(0), run_dir)
    assert version is not None and runs.load_run(run_dir).path == version


def test_a_reader_sees_the_old_run_or_the_new_one_never_neither_or_both(isolated_cache):
    """Replacing a cached run deleted the old folder, then renamed the new one: readers got
    "damaged" reads (each a retrain) and reads that mixed two runs' files; writers got
    "cannot be written (Directory not empty)"."""
    run_dir = isolated_cache / "runs" / "0123456789abcdef"
    assert runs._save_run(_marked_run(0), run_dir) is not None
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_keep_replacing, args=(str(run_dir), mark, 3.0)) for mark in (1, 2)]
    for writer in writers:
        writer.start()
    reads, seen = 0, set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a "damaged" warning fails the test
        while any(w.is_alive() for w in writers):
            run = runs._load(run_dir)
            assert run is not None
            mark = run.final["mark"]
            assert run.config["mark"] == run.history[0]["mark"] == mark
            assert (run.arrays["mark"] == mark).all()
            assert (torch.load(run.path / "model.pt", weights_only=True)["mark"] == mark).all()
            reads += 1
            seen.add(mark)
    assert [w.exitcode for w in writers] == [0, 0]
    assert reads > 20 and seen & {1, 2}
    current = runs._current_version(run_dir)
    # replaced versions go once no reader can be at them; only recent ones and the current stay
    os.utime(current, (time.time() - 3600,) * 2)
    for path in run_dir.iterdir():
        if path != current:
            os.utime(path, (time.time() - 3600,) * 2)
    newest = runs._save_run(_marked_run(3), run_dir)
    # left: the current version and the one it just replaced, which a reader may still be at
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(["current", newest.name, current.name])
