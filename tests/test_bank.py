"""The run bank shipped with the package: fresh, complete, small, found before training, and
reproducible from the data."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_run_settings
from decorr_lite import bank, train
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
    names = set(bank.bank_runs())
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
    assert stale == set(bank.bank_runs()) - {"untrained"}  # its own steps (0) still hold
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
    train._save_run(mine, isolated_cache / "runs" / train.run_key(config))
    run = train_ssl(config, progress=False)
    assert run.from_cache and not run.from_bank and run.final["knn_top1"] == 0.5


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
    seconds = bank.build(folder=folder, progress=False)
    assert set(seconds) == {"tiny"} and bank.check(folder) == []
    assert sorted(p.name for p in folder.iterdir()) == ["index.json", "tiny.json", "tiny.npz"]  # no temporaries
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
    untrained = bank.load_entry("untrained", PACKAGE_BANK).final
    for name in bank.bank_runs():
        run = bank.load_entry(name, PACKAGE_BANK)
        assert (
            run.config["eval_bank"] == run.config["final_bank"]
            and run.config["eval_queries"] == run.config["final_queries"]
        )
        for key in ("knn_top1", "effective_rank", "leading_share", "median_std", "verdict"):
            assert run.history[-1][key] == run.final[key], (name, key)
            assert run.history[0][key] == untrained[key], (name, key)
