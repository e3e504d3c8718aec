"""The notebooks' panels on the shipped run bank, as a class uses them (no data on disk): every
checkbox combination at the default weights is drawn at once from the bank, a setting nobody
trained waits for the Train button, and 03's step slider redraws without training."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest

from decorr_lite import bank, plots
from decorr_lite.train import classroom_settings
from decorr_lite.widgets import TrainPanel


@pytest.fixture
def settings(monkeypatch):
    monkeypatch.delenv("DECORR_DATA", raising=False)  # a bank miss must not find data to train from
    return classroom_settings()


def test_the_collapse_panel_redraws_each_combination_from_the_bank_and_waits_for_a_new_weight(settings):
    full, no_var = bank.load_entry("vicreg"), bank.load_entry("vicreg-without-variance")
    panel = TrainPanel("vicreg", draw=lambda run: plots.run_figure({"this run": run}), settings=settings)
    assert panel.result.final == full.final and panel.figure is not None
    panel.controls["std_coeff_on"].value = False  # variance off: in the bank, drawn at once
    assert panel.result.final == no_var.final and panel.result.from_bank and panel.figure is not None
    panel.controls["cov_coeff_on"].value = False  # variance and covariance off: in the bank too
    assert panel.result.final == bank.load_entry("vicreg-without-variance+covariance").final
    assert panel.result.final["verdict"] == "complete collapse"
    panel.controls["std_coeff_on"].value = panel.controls["cov_coeff_on"].value = True
    assert panel.result.final == full.final
    panel.controls["cov_coeff"].value = 10.0  # a new weight: nobody trained it, the button waits
    assert panel.result is None and not panel.train_button.disabled and not panel.training
    panel.controls["cov_coeff"].value = 1.0
    assert panel.result.final == full.final


def test_the_matrices_panel_slides_over_training_and_toggles_from_the_bank(settings):
    full = bank.load_entry("vicreg")
    panel = TrainPanel("vicreg", draw=plots.matrices_figure, settings=settings, step_slider=True)
    steps = [e["step"] for e in full.history]
    panel.controls["step"].value = steps[0]  # the slider redraws without training anything
    assert panel.figure is not None and panel.figure.get_suptitle().startswith("step 0")
    panel.controls["cov_coeff_on"].value = False  # covariance off: drawn from the bank
    assert panel.result.final == bank.load_entry("vicreg-without-covariance").final
    panel.controls["cov_coeff_on"].value = True
    assert panel.result.final == full.final and panel.controls["step"].value == steps[-1]


def test_the_barlow_panel_offers_its_two_terms_from_the_bank(settings):
    panel = TrainPanel("barlow", draw=lambda run: plots.run_figure({"this run": run}), settings=settings)
    assert panel.result.final == bank.load_entry("barlow").final
    panel.controls["lambd_on"].value = False
    assert panel.result.final == bank.load_entry("barlow-without-off-diagonal").final
