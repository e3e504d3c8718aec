"""Plotting helpers and notebook widget panels: build them, move their controls, check the result."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from decorr_lite import plots, toy, widgets
from decorr_lite.benchmark import fit_slope


def test_fit_slope_recovers_exponents():
    x = np.array([1.0, 2, 4, 8, 16])
    assert fit_slope(x, 3 * x**2) == pytest.approx(2.0)
    assert fit_slope(x, 0.5 * x) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fit_slope([1.0], [2.0])


@pytest.mark.parametrize("d, b", [(12, 1), (12, 4), (12, 5), (12, 12), (7, 3)])
def test_count_penalties_matches_the_relaxed_sums(d, b):
    # the number of sums in the relaxed Barlow Twins penalty: count them from circular_correlation's shape
    g = -(-d // b)
    s = torch.zeros(g, g, b)
    diagonal_block_sums = g * (b - 1)
    off_block_sums = s.numel() - g * b
    assert plots.count_penalties(d, b) == diagonal_block_sums + off_block_sums
    if b == 1:
        assert plots.count_penalties(d, b) == d * (d - 1)


def test_wrapped_diagonals_colours_one_group_per_sum():
    fig, axes = plots.new_axes(1)
    plots.wrapped_diagonals(axes[0], 6, 3)
    colours = axes[0].images[0].get_array()
    assert colours.mask.diagonal().all()  # the main diagonal is left out
    # each (block pair, shift) is one colour: the number of distinct colours is the number of sums + the
    # main-diagonal shift-0 groups that lost all their entries to the mask
    assert len(np.unique(colours.compressed())) == plots.count_penalties(6, 3)


def test_matrix_uses_symmetric_limits_centred_at_zero():
    fig, axes = plots.new_axes(1)
    image = plots.matrix(axes[0], torch.tensor([[1.0, -0.2], [0.5, 3.0]]))
    assert image.get_clim() == (-3.0, 3.0) and image.get_cmap().name == plots.MATRIX_CMAP


def test_std_bars_draw_the_margin():
    fig, axes = plots.new_axes(1)
    plots.std_bars(axes[0], torch.randn(100, 5), margin=1.0)
    assert len(axes[0].patches) == 5
    assert any(line.get_ydata()[0] == 1.0 for line in axes[0].lines)


def test_toy_panel_retrains_when_a_term_is_switched_off():
    panel = widgets.toy_panel("vicreg")
    first = panel.result
    assert panel.updates == 1 and first.report.verdict == "healthy"
    panel.checkboxes["std_coeff"].value = False
    assert panel.updates == 2 and panel.weights()["std_coeff"] == 0.0
    assert panel.result.report.verdict == "complete collapse"
    assert "complete collapse" in panel.figure._suptitle.get_text()
    panel.checkboxes["std_coeff"].value = True  # back: memoised, the same run object
    assert panel.result is first and panel.updates == 3
    panel.sliders["cov_coeff"].value = 10.0
    assert panel.weights()["cov_coeff"] == pytest.approx(10.0) and panel.result is not first


def test_barlow_toy_panel_has_its_two_terms():
    panel = widgets.toy_panel("barlow", steps=50)
    assert set(panel.checkboxes) == {"on_diag_coeff", "lambd"}
    panel.checkboxes["lambd"].value = False
    assert panel.weights() == {"on_diag_coeff": 1.0, "lambd": 0.0}
    assert panel.result.history["off_diagonal"]  # the switched-off term is still measured


def test_block_size_panel_updates_counts_and_cost():
    panel = widgets.BlockSizePanel(d=8, cost_n=32, cost_d=64, repeats=1)
    assert panel.result["block_size"] == 8 and panel.result["sums"] == 7
    panel.controls["block_size"].value = 1
    assert panel.result["sums"] == 8 * 7 and panel.result["seconds"] > 0
    assert "b = 1" in panel.status.value


def test_toy_lessons():
    data = toy.toy_data(seed=0)
    full = toy.train_toy(data)
    assert full.report.verdict == "healthy" and full.report.effective_rank > 7
    assert toy.train_toy(data, std_coeff=0.0).report.verdict == "complete collapse"
    assert toy.train_toy(data, cov_coeff=0.0).report.effective_rank < 0.75 * full.report.effective_rank
    with pytest.raises(ValueError, match="loss"):
        toy.train_toy(data, loss="simclr")
    with pytest.raises(ValueError, match="clean"):
        toy.toy_data(clean=0)
