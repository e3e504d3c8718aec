"""A new loss is one file plus one registry line (docs/extending.md): CCA-SSG, whose weights have
names no other loss uses, registered here as a maintainer would, reaches the toy, training on
CIFAR-10, the command line and the checks, and changes no run's key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_run_settings

from decorr_lite import bank, cli, toy
from decorr_lite.losses import LOSSES
from decorr_lite.train import TrainConfig, run_key, train_ssl

sys.path.insert(0, str(Path(__file__).parent / "third_loss"))
import cca_ssg  # noqa: E402  (the one file)


@pytest.fixture
def registered(monkeypatch):
    """The registry line: ``LOSSES = {spec.name: spec for spec in (..., cca_ssg.SPEC)}``."""
    keys_before = {name: run_key(bank.bank_config(name), portable=True) for name in bank.bank_runs()}
    cache_key_before = run_key(TrainConfig())
    monkeypatch.setitem(LOSSES, cca_ssg.SPEC.name, cca_ssg.SPEC)
    return keys_before, cache_key_before


def test_the_third_loss_matches_its_formula_in_float64():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(32, 6, generator=g, dtype=torch.float64), torch.randn(32, 6, generator=g, dtype=torch.float64)
    standardise = lambda z: (z - z.mean(0)) / z.std(0) / 32**0.5
    c1, c2 = standardise(z1).T @ standardise(z1), standardise(z2).T @ standardise(z2)
    expected = (standardise(z1) - standardise(z2)).square().sum() + 0.1 * (
        (c1 - torch.eye(6, dtype=torch.float64)).square().sum()
        + (c2 - torch.eye(6, dtype=torch.float64)).square().sum()
    )
    for method in cca_ssg.METHODS:
        got = cca_ssg.cca_ssg_loss(z1, z2, decorrelation_weight=0.1, method=method)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_a_third_loss_trains_with_the_toy_and_on_cifar(registered, tiny_cifar):
    run = toy.train_toy(loss="cca-ssg", steps=20)
    assert {"invariance", "decorrelation"} <= set(run.history)
    result = train_ssl(**tiny_run_settings(tiny_cifar, loss="cca-ssg", decorrelation_weight=0.01), progress=False)
    assert result.config["weights"] == {"invariance_weight": 1.0, "decorrelation_weight": 0.01}
    assert {"invariance", "decorrelation"} <= set(result.history[-1])
    assert torch.isfinite(torch.tensor(result.final["knn_top1"]))


def test_the_command_line_lists_the_third_loss_s_weights_with_their_help(registered, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--invariance-weight" in text and "--decorrelation-weight" in text
    assert "CCA-SSG: weight of ||C - I||^2 (default 0.0005; 0 switches the term off)" in text
    assert "cca-ssg" in text  # a choice of --loss


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--loss", "cca-ssg", "--method", "fft"], "method must be one of ('exact', 'gram') for loss='cca-ssg'"),
        (
            ["--loss", "cca-ssg", "--lambd", "0.1"],
            "'lambd' is neither a setting of TrainConfig nor a weight of cca-ssg, whose weights are invariance_weight, decorrelation_weight; lambd weighs a term of barlow",
        ),
        (["--loss", "vicreg", "--decorrelation-weight", "1"], "weighs a term of cca-ssg"),
    ],
)
def test_a_wrong_method_or_weight_for_the_third_loss_fails_at_once_with_exit_2(
    registered, flags, message, train_refused
):
    error = train_refused(flags)
    assert message in error, error


def test_registering_a_loss_changes_no_key_and_the_bank_stays_fresh(registered):
    keys_before, cache_key_before = registered
    assert {name: run_key(bank.bank_config(name), portable=True) for name in bank.bank_runs()} == keys_before
    assert run_key(TrainConfig()) == cache_key_before
    assert bank.check() == []
