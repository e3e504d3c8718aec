"""The run bank shipped with the package: fresh, complete, small, found before training, and
reproducible from the data."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_run_settings

from decorr_lite import bank, runs, train, training
from decorr_lite.cli import main as cli_main
from decorr_lite.data import cifar10
from decorr_lite.losses import loss_spec
from decorr_lite.train import TrainConfig, classroom_settings, train_ssl

PACKAGE_BANK = Path(bank.__file__).parent / "bank"


@pytest.fixture
def bank_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped bank, which the test may damage, read in place of the real one."""
    folder = Path(shutil.copytree(PACKAGE_BANK, tmp_path / "bank"))
    monkeypatch.setenv("DECORR_BANK", str(folder))
    return folder


def test_the_shipped_bank_is_fresh():
    problems = bank.check(PACKAGE_BANK)
    assert problems == [], "the run bank is stale:\n" + "\n".join(problems)


def test_the_bank_holds_every_run_the_notebooks_and_widgets_offer():
    names = set(bank.shown_runs())
    vicreg = {n for n in names if n.startswith("vicreg") and "fft" not in n and "gram" not in n}
    barlow = {n for n in names if n.startswith("barlow")}
    assert len(vicreg) == 8 and len(barlow) == 4  # every checkbox combination of each panel
    configs = {n: bank.bank_config(n) for n in names}
    assert configs["untrained"].steps == 0
    relaxed = [c for c in configs.values() if c.method == "fft"]
    assert {(c.block_size, c.permutation, c.exponent) for c in relaxed} == {
        (None, True, 1.0),
        (None, False, 1.0),
        (128, True, 1.0),
        (128, False, 1.0),
        (None, True, 2.0),
    }
    assert any(c.method == "gram" for c in configs.values())


def test_the_bank_is_small_and_float32_and_says_what_produced_each_entry():
    assert bank.size_bytes(PACKAGE_BANK) < 10 * 2**20
    for name in bank.bank_runs():
        run = bank.load_entry(name, PACKAGE_BANK)
        assert run.from_bank and run.from_cache and run.path is None
        for key, value in run.arrays.items():
            assert value.dtype in (np.float32, np.int64), (name, key, value.dtype)
        p = run.final["provenance"]
        assert {"code_version", "run_format", "data", "torch", "machine", "threads", "precision", "date"} <= set(p)
        assert p["data"]["checksum"] and p["data"]["name"] and run.final["seconds"] > 0


def test_a_stale_entry_is_named_with_the_command_that_rebuilds_it(bank_copy):
    # one entry trained by an older run format, one whose configuration changed, one missing
    path = bank_copy / "vicreg.json"
    metrics = json.loads(path.read_text())
    metrics["final"]["provenance"]["run_format"] = train.RUN_FORMAT - 1
    path.write_text(json.dumps(metrics))
    path = bank_copy / "barlow.json"
    metrics = json.loads(path.read_text())
    metrics["config"]["lr"] = 1e-3
    path.write_text(json.dumps(metrics))
    index = json.loads((bank_copy / "index.json").read_text())
    del index["entries"]["untrained"]
    (bank_copy / "index.json").write_text(json.dumps(index))
    problems = bank.check(bank_copy)
    assert len(problems) == 3, problems
    stale = {line.split(":")[0]: line for line in problems}
    assert set(stale) == {"vicreg", "barlow", "untrained"}
    assert "run format" in stale["vicreg"] and "lr" in stale["barlow"] and "missing" in stale["untrained"]
    for name, line in stale.items():
        assert f"python -m decorr_lite bank --only {name}" in line
    assert cli_main(["bank", "--check"]) == 1  # the command line says so too (reads DECORR_BANK)


def test_a_change_of_run_format_makes_every_entry_stale(monkeypatch):
    monkeypatch.setattr(bank, "RUN_FORMAT", train.RUN_FORMAT + 1)
    problems = bank.check(PACKAGE_BANK)
    assert len(problems) == len(bank.bank_runs()) and all("run format" in line for line in problems)


def test_a_change_of_the_recipe_makes_its_entries_stale(monkeypatch):
    recipe = classroom_settings()
    monkeypatch.setattr(bank, "classroom_settings", lambda: {**recipe, "steps": 301})
    problems = bank.check(PACKAGE_BANK)
    stale = {line.split(":")[0] for line in problems}
    untrained = set(bank.seed_names("untrained"))  # their own steps (0) still hold
    assert stale == set(bank.bank_runs()) - untrained
    assert all("differs from the current one in steps" in line for line in problems)


def test_the_bank_answers_whatever_the_data_location_and_device(tmp_path):
    config = bank.bank_config("vicreg-without-variance")
    found = bank.lookup(TrainConfig(**{**config.as_dict(), "data_root": str(tmp_path), "device": "cpu"}), PACKAGE_BANK)
    assert found is not None and found.final == bank.load_entry("vicreg-without-variance", PACKAGE_BANK).final
    trained_in = found.final["precision"]
    other = "fp32" if trained_in == "bf16" else "bf16"
    assert bank.lookup(TrainConfig(**{**config.as_dict(), "precision": trained_in}), PACKAGE_BANK) is not None
    assert bank.lookup(TrainConfig(**{**config.as_dict(), "precision": other}), PACKAGE_BANK) is None
    assert bank.lookup(TrainConfig(**{**config.as_dict(), "lr": 1e-3}), PACKAGE_BANK) is None


def test_train_ssl_serves_the_bank_with_no_data_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("DECORR_BANK", str(PACKAGE_BANK))
    monkeypatch.setenv("DECORR_DATA", str(tmp_path / "no-data-here"))
    run = train_ssl(**classroom_settings(), std_coeff=0.0, progress=False)
    assert run.from_bank and run.final["verdict"] == "complete collapse"
    assert train.cached_run(**classroom_settings(), std_coeff=0.0).from_bank
    with pytest.raises(ValueError, match="no model weights"):
        run.load_model()
    with pytest.raises(FileNotFoundError):  # use_bank=False trains, and there is no data to train on
        train_ssl(**classroom_settings(), std_coeff=0.0, use_bank=False, progress=False)
    assert train.cached_run(**classroom_settings(), std_coeff=0.0, use_bank=False) is None


def test_the_user_cache_comes_before_the_bank(tmp_path, monkeypatch, isolated_cache):
    monkeypatch.setenv("DECORR_BANK", str(PACKAGE_BANK))
    config = bank.bank_config("barlow")
    shipped = bank.load_entry("barlow", PACKAGE_BANK)
    mine = train.TrainResult(
        shipped.config, shipped.history, {**shipped.final, "knn_top1": 0.5}, shipped.arrays, state_dict={}
    )
    runs._save_run(mine, isolated_cache / "runs" / train.run_key(config))
    run = train_ssl(config, progress=False)
    assert run.from_cache and not run.from_bank and run.final["knn_top1"] == 0.5


@pytest.mark.parametrize(
    "flags", [["--check", "--only", "vicreg"], ["--list", "--check"], ["--list", "--only", "vicreg"]]
)
def test_bank_command_line_refuses_a_flag_it_would_ignore(flags, capsys):
    with pytest.raises(SystemExit) as exit:
        cli_main(["bank", *flags])
    assert exit.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_bank_command_line_lists_and_refuses_unknown_names(capsys):
    assert cli_main(["bank", "--list"]) == 0
    assert "vicreg-without-variance" in capsys.readouterr().out
    assert cli_main(["bank", "--only", "simclr"]) == 2
    assert "not a bank entry" in capsys.readouterr().err


def test_build_writes_an_entry_that_lookup_finds(tmp_path, monkeypatch, tiny_cifar):
    """The build path end to end, on the tiny copy: a bank entry is written atomically, indexed,
    and found by train_ssl for the same configuration (any data location)."""
    tiny = tiny_run_settings(tiny_cifar)
    monkeypatch.setattr(bank, "bank_runs", lambda: {"tiny": dict(loss="vicreg")})
    monkeypatch.setattr(bank, "classroom_settings", lambda: dict(tiny))
    folder = tmp_path / "bank"
    seconds = training.build_bank(folder=folder, progress=False)
    assert set(seconds) == {"tiny"} and bank.check(folder) == []
    arrays = json.loads((folder / "tiny.json").read_text())["arrays"]
    assert re.fullmatch(r"tiny-[0-9a-f]{12}\.npz", arrays)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["index.json", "tiny.json", arrays])  # no temporaries
    monkeypatch.setenv("DECORR_BANK", str(folder))
    run = train_ssl(**{**tiny, "data_root": str(tmp_path / "elsewhere")}, progress=False)
    assert run.from_bank and run.final["provenance"]["data"]["name"] == "cifar10-tiny.tar.gz"


def _real_data() -> str | None:
    root = os.environ.get("DECORR_TEST_DATA") or os.environ.get("DECORR_DATA")
    return root if root and (Path(root) / "cifar10-jpeg.tar.gz").is_file() else None


# The cheapest entry that learns something (the all-off run trains nothing, the untrained one no step).
# Tolerances: a rerun on the same machine is identical; the same run in fp32 instead of bf16
# (the largest difference between two machines: a CPU without native bf16 runs fp32) differs by
# the amounts measured in docs/run_bank.md, well inside these.
TOLERANCES = {"knn_top1": 0.015, "linear_probe_top1": 0.015}
RELATIVE = {"effective_rank": 0.05, "median_std": 0.05}


def _cheapest_learning_entry() -> str:
    index = bank.read_index(PACKAGE_BANK)["entries"]
    learning = [
        n
        for n in bank.bank_runs()
        if bank.bank_config(n).steps
        and any(loss_spec(bank.bank_config(n).loss).weights(bank.bank_config(n).as_dict()).values())
    ]
    return min(learning, key=lambda n: index[n]["seconds"])


@pytest.mark.slow
@pytest.mark.skipif(_real_data() is None, reason="needs the real CIFAR-10 images (DECORR_TEST_DATA or DECORR_DATA)")
def test_the_cheapest_entry_retrained_from_the_data_reproduces_the_bank(monkeypatch):
    monkeypatch.setattr(cifar10, "PER_CLASS", {"train": 5000, "test": 1000})  # the real thing
    monkeypatch.setenv("DECORR_CACHE", str(Path(__file__).resolve().parent.parent / ".cache"))  # decoded data
    name = _cheapest_learning_entry()
    shipped = bank.load_entry(name, PACKAGE_BANK)
    run = train_ssl(bank.bank_config(name), data_root=_real_data(), cache=False, use_bank=False, progress=False)
    assert run.final["verdict"] == shipped.final["verdict"], name
    for key, tolerance in TOLERANCES.items():
        assert abs(run.final[key] - shipped.final[key]) <= tolerance, (name, key, run.final[key], shipped.final[key])
    for key, tolerance in RELATIVE.items():
        assert abs(run.final[key] - shipped.final[key]) <= tolerance * abs(shipped.final[key]), (name, key)


def test_every_bank_run_s_curves_agree_with_its_table():
    """What a figure draws (the history) and what its table prints (final) are the same numbers
    at the last step, and every curve starts at the untrained encoder's numbers."""
    untrained = {
        seed: bank.load_entry(name, PACKAGE_BANK).final for seed, name in zip(bank.SEEDS, bank.seed_names("untrained"))
    }
    for name in bank.bank_runs():
        run = bank.load_entry(name, PACKAGE_BANK)
        assert (
            run.config["eval_bank"] == run.config["final_bank"]
            and run.config["eval_queries"] == run.config["final_queries"]
        )
        for key in ("knn_top1", "effective_rank", "leading_share", "median_std", "verdict"):
            assert run.history[-1][key] == run.final[key], (name, key)
            assert run.history[0][key] == untrained[run.config["seed"]][key], (name, key)


# --------------------------------------------------------------------------- arrays and history


def _arrays_path(folder: Path, name: str) -> Path:
    """The file holding entry ``name``'s arrays, as its json names it."""
    return folder / json.loads((folder / f"{name}.json").read_text()).get("arrays", f"{name}.npz")


def _with_arrays(run, arrays) -> train.TrainResult:
    return train.TrainResult(run.config, run.history, run.final, arrays)


def _assert_same_arrays(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize(
    "damage", ["file of another entry", "arrays of another run", "fewer points", "smaller matrices"]
)
def test_an_entry_whose_arrays_disagree_with_its_history_fails_the_check(bank_copy, damage):
    """Arrays swapped in from another entry (a copy, or an interrupted rebuild) made figures draw
    one run under another's history and table, and the check said nothing."""
    vicreg, other = bank.load_entry("vicreg", bank_copy), bank.load_entry("vicreg-without-variance", bank_copy)
    if damage == "file of another entry":
        shutil.copyfile(_arrays_path(bank_copy, "vicreg-without-variance"), _arrays_path(bank_copy, "vicreg"))
    elif damage == "arrays of another run":
        bank.save_entry("vicreg", _with_arrays(vicreg, other.arrays), bank_copy)
    elif damage == "fewer points":
        bank.save_entry("vicreg", _with_arrays(vicreg, {k: v[:-1] for k, v in vicreg.arrays.items()}), bank_copy)
    else:
        smaller = {k: v[:, :32, :32] if v.ndim == 3 else v for k, v in vicreg.arrays.items()}
        bank.save_entry("vicreg", _with_arrays(vicreg, smaller), bank_copy)
    problems = bank.check(bank_copy)
    assert len(problems) == 1 and problems[0].startswith("vicreg: "), problems
    expected = {
        "file of another entry": "does not load",
        "arrays of another run": "the history's median_std is 0.3033, the arrays give 0.01823",
        "fewer points": "eval_steps",
        "smaller matrices": "covariance has shape (7, 32, 32), expected (7, 64, 64)",
    }[damage]
    assert expected in problems[0] and problems[0].endswith("python -m decorr_lite bank --only vicreg")


class _Interrupted(Exception):
    pass


def _json_with(*, dumps=json.dumps, loads=json.loads):
    """A stand-in for the bank module's ``json``, to interrupt or interleave its writes."""
    return type("json", (), {"dumps": staticmethod(dumps), "loads": staticmethod(loads)})


def test_a_rebuild_interrupted_between_the_files_leaves_the_old_entry_whole(bank_copy, monkeypatch):
    """The arrays were published before the json: an interrupted rebuild left the old history
    with the new arrays."""
    old, other = bank.load_entry("vicreg", bank_copy), bank.load_entry("vicreg-without-variance", bank_copy)

    def dumps(obj, **kwargs):
        if isinstance(obj, dict) and "history" in obj:  # the entry's json, after its arrays
            raise _Interrupted
        return json.dumps(obj, **kwargs)

    monkeypatch.setattr(bank, "json", _json_with(dumps=dumps))
    with pytest.raises(_Interrupted):
        bank.save_entry("vicreg", train.TrainResult(other.config, other.history, old.final, other.arrays), bank_copy)
    monkeypatch.undo()
    loaded = bank.load_entry("vicreg", bank_copy)
    assert loaded.history == old.history
    _assert_same_arrays(loaded.arrays, old.arrays)
    assert not [p.name for p in bank_copy.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_reader_during_a_rebuild_gets_the_old_entry_or_the_new_one(bank_copy, monkeypatch):
    """A rebuild between a reader's read of the json and of the arrays gave it half of each."""
    old, other = bank.load_entry("vicreg", bank_copy), bank.load_entry("vicreg-without-variance", bank_copy)
    new = train.TrainResult(old.config, other.history, old.final, other.arrays)
    rebuilt = []

    def loads(text, **kwargs):
        value = json.loads(text, **kwargs)
        if "history" in value and not rebuilt:  # the reader has just read the entry's json
            rebuilt.append(True)
            bank.save_entry("vicreg", new, bank_copy)
        return value

    monkeypatch.setattr(bank, "json", _json_with(loads=loads))
    loaded = bank.load_entry("vicreg", bank_copy)
    assert rebuilt
    assert loaded.history == new.history
    _assert_same_arrays(loaded.arrays, bank._compact(new.arrays))


def test_an_entry_is_a_json_and_the_arrays_it_names_by_their_digest(bank_copy):
    run = bank.load_entry("barlow", bank_copy)
    before = _arrays_path(bank_copy, "barlow")
    shifted = {k: v + 1 if k == "covariance" else v for k, v in run.arrays.items()}
    bank.save_entry("barlow", _with_arrays(run, shifted), bank_copy)
    after = _arrays_path(bank_copy, "barlow")
    assert after != before and not before.exists()  # the old arrays went once the json named the new ones
    assert after.name == f"barlow-{hashlib.sha256(after.read_bytes()).hexdigest()[:12]}.npz"
    assert after.stat().st_mode & 0o777 == 0o644
    # the old arrays gone, no other entry's file touched (barlow-without-...), no temporary left
    assert {p.name for p in bank_copy.iterdir()} == {p.name for p in PACKAGE_BANK.iterdir()} - {before.name} | {
        after.name
    }
    _assert_same_arrays(bank.load_entry("barlow", bank_copy).arrays, shifted)


def test_an_entry_of_the_layout_before_digests_loads_and_the_check_asks_to_rebuild_it(bank_copy):
    path = bank_copy / "vicreg.json"
    metrics = json.loads(path.read_text())
    _arrays_path(bank_copy, "vicreg").rename(bank_copy / "vicreg.npz")
    del metrics["arrays"]
    path.write_text(json.dumps(metrics, indent=1))
    assert bank.load_entry("vicreg", bank_copy).final == metrics["final"]
    (problem,) = bank.check(bank_copy)
    assert problem.startswith("vicreg: its arrays' file is not named by their digest")
    bank.save_entry("vicreg", bank.load_entry("vicreg", bank_copy), bank_copy)
    assert not (bank_copy / "vicreg.npz").exists() and bank.check(bank_copy) == []


def test_the_shipped_entries_name_their_arrays_by_digest():
    index = bank.read_index(PACKAGE_BANK)["entries"]
    with_arrays = [name for name in index if bank.stores_arrays(name)]
    for name in with_arrays:
        path = _arrays_path(PACKAGE_BANK, name)
        assert path.name == f"{name}-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}.npz"
    for name in set(index) - set(with_arrays):  # the other seeds: metrics and history only
        assert json.loads((PACKAGE_BANK / f"{name}.json").read_text())["arrays"] is None
    assert len(list(PACKAGE_BANK.glob("*.npz"))) == len(with_arrays)  # no orphans


# --------------------------------------------------------------------------- which data


@pytest.fixture
def fresh_comparisons(monkeypatch):
    """Forget which entries this process has already compared with the user's data."""
    monkeypatch.setattr(bank, "_DATA_COMPARED", set())


def test_a_run_served_to_someone_with_other_data_says_which_data_it_was_trained_on(
    tiny_cifar, tmp_path, fresh_comparisons
):
    config = dataclasses.replace(bank.bank_config("vicreg"), data_root=str(tiny_cifar))
    with pytest.warns(bank.BankDataWarning) as record:
        run = bank.lookup(config, PACKAGE_BANK)
    assert run is not None and run.from_bank and len(record) == 1
    message = str(record[0].message)
    trained_on = run.final["provenance"]["data"]
    assert "'vicreg'" in message and trained_on["name"] in message and trained_on["checksum"] in message
    assert "cifar10-tiny.tar.gz" in message and "use_bank=False" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bank.lookup(config, PACKAGE_BANK) is not None  # said once per entry, not at every call
        empty = tmp_path / "no-data"
        empty.mkdir()
        other = bank.bank_config("barlow")
        assert bank.lookup(dataclasses.replace(other, data_root=str(empty)), PACKAGE_BANK) is not None  # no data
    with pytest.warns(bank.BankDataWarning, match="'barlow'"):  # another entry says it too
        bank.lookup(dataclasses.replace(other, data_root=str(tiny_cifar)), PACKAGE_BANK)
    third = dataclasses.replace(bank.bank_config("vicreg-without-variance"), data_root=str(tiny_cifar))
    with pytest.warns(bank.BankDataWarning) as record:  # it points at the line that asked for the run
        runs.cached_run(third)
    assert record[0].filename == __file__


def test_a_run_served_to_someone_whose_data_cannot_be_read_says_so(official, fresh_comparisons):
    """A damaged copy gave the key of "no data", and the bank served its run without a word."""
    folder_root, _ = official
    (folder_root / cifar10.BATCHES_DIR / "data_batch_2").write_bytes(b"damaged")
    config = dataclasses.replace(bank.bank_config("vicreg"), data_root=str(folder_root))
    with pytest.warns(bank.BankDataWarning, match=r"cannot be read.*data_batch_2.*'vicreg' is served"):
        assert bank.lookup(config, PACKAGE_BANK) is not None


def test_a_run_served_to_someone_with_the_same_data_says_nothing(tiny_cifar, monkeypatch, fresh_comparisons):
    config = dataclasses.replace(bank.bank_config("vicreg"), data_root=str(tiny_cifar))
    trained_on = bank.load_entry("vicreg", PACKAGE_BANK).final["provenance"]["data"]
    monkeypatch.setattr(cifar10, "describe_source", lambda root=None: dict(trained_on))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bank.lookup(config, PACKAGE_BANK) is not None


# --------------------------------------------------------------------------- seeds and encoders


def test_every_setting_the_notebooks_show_is_in_the_bank_with_every_seed():
    for name in bank.shown_runs():
        runs_ = bank.load_seeds(name, PACKAGE_BANK)
        assert [r.config["seed"] for r in runs_] == list(bank.SEEDS), name
        settings = [{k: v for k, v in r.config.items() if k != "seed"} for r in runs_]
        assert all(s == settings[0] for s in settings), name  # the same setting, only the seed differs
        assert runs_[0].arrays and not any(r.arrays for r in runs_[1:]), name  # arrays for the seed shown only


def test_another_seed_s_entry_is_evidence_never_served_as_a_run(bank_copy):
    """A replica holds no arrays: served for a run with that seed, it would draw nothing."""
    config = bank.bank_config("vicreg-seed1")
    assert config.seed == 1 and bank.lookup(config, bank_copy) is None
    assert bank.lookup(bank.bank_config("vicreg"), bank_copy) is not None
    # a replica that somehow holds arrays is flagged
    metrics = json.loads((bank_copy / "vicreg-seed1.json").read_text())
    metrics["arrays"] = json.loads((bank_copy / "vicreg.json").read_text())["arrays"]
    (bank_copy / "vicreg-seed1.json").write_text(json.dumps(metrics))
    assert [line.split(":")[0] for line in bank.check(bank_copy)] == ["vicreg-seed1"]


def test_replica_names_and_their_errors():
    assert bank.replica_of("vicreg-fft-b=d-seed2") == ("vicreg-fft-b=d", 2)
    assert bank.replica_of("vicreg") == ("vicreg", 0)
    assert bank.seed_names("barlow") == ["barlow", "barlow-seed1", "barlow-seed2"]
    with pytest.raises(KeyError, match="not a setting the notebooks show"):
        bank.seed_names("barlow-seed1")
    with pytest.raises(ValueError, match="keeps no encoder"):
        bank.load_encoder("barlow-seed1", PACKAGE_BANK)


@pytest.mark.parametrize("name", ["untrained", "vicreg", "vicreg-without-variance", "barlow"])
def test_a_shipped_encoder_reproduces_its_features_of_the_sample_images(name):
    """The encoder is stored in float16: it must give the features its run's evaluation computed
    (in that run's precision) to within half precision's rounding."""
    import torch

    from decorr_lite.augment import normalize
    from decorr_lite.data.samples import SAMPLES_FILE

    encoder, stored = bank.load_encoder(name, PACKAGE_BANK, with_features=True)
    assert not encoder.training and next(encoder.parameters()).dtype == torch.float32
    with np.load(SAMPLES_FILE) as shipped:
        images = torch.from_numpy(shipped["images"])
    with torch.inference_mode():
        features = encoder(normalize(images)).numpy()
    assert features.shape == stored.shape == (len(images), encoder.out_dim)
    scale = np.abs(stored).max()
    assert np.abs(features - stored).max() <= 0.03 * scale, (name, np.abs(features - stored).max(), scale)
    # and they are not all alike: the check compares something
    assert np.abs(stored - stored.mean(axis=0)).max() > 0.1 * scale


def test_an_entry_rebuilt_without_its_encoder_says_so(bank_copy):
    run = bank.load_entry("barlow", bank_copy)
    bank.save_entry("barlow", run, bank_copy)  # no encoder given
    with pytest.raises(ValueError, match="holds no encoder weights.*--only barlow"):
        bank.load_encoder("barlow", bank_copy)
