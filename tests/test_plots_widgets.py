"""Plotting helpers and notebook widget panels: build them, move their controls, check the result."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import math

import numpy as np
import pytest
import torch
from helpers import tiny_run_settings

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


@pytest.mark.parametrize("d, b", [(12, 1), (12, 4), (12, 12), (12, 6), (40, 40)])
def test_wrapped_diagonals_one_colour_inside_one_block_is_one_sum(d, b):
    fig, axes = plots.new_axes(1)
    plots.wrapped_diagonals(axes[0], d, b)
    image = axes[0].images[0]
    colours = image.get_array()
    assert colours.mask.diagonal().all()  # the main diagonal is left out
    # (block pair, drawn colour) groups, counted from the pixels: exactly the penalised sums
    rgba = image.to_rgba(colours)
    groups = {(i // b, j // b, tuple(np.round(rgba[i, j], 6))) for i in range(d) for j in range(d) if i != j}
    assert len(groups) == plots.count_penalties(d, b)
    # the block boundaries are drawn, so that "inside one block" can be seen
    assert len(axes[0].lines) == 2 * (math.ceil(d / b) - 1)


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
    assert panel.updates == 1 and first.report.verdict == "no collapse"
    panel.checkboxes["std_coeff"].value = False
    assert panel.updates == 2 and panel.weights()["std_coeff"] == 0.0
    assert panel.result.report.verdict == "complete collapse"
    assert "complete collapse" in panel.figure._suptitle.get_text()
    assert panel.draw is plots.toy_figure and widgets.toy_figure is plots.toy_figure  # notebook 01 uses widgets'
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
    assert full.report.verdict == "no collapse" and full.report.effective_rank > 7
    assert toy.train_toy(data, std_coeff=0.0).report.verdict == "complete collapse"
    assert toy.train_toy(data, cov_coeff=0.0).report.effective_rank < 0.75 * full.report.effective_rank
    with pytest.raises(ValueError, match="loss"):
        toy.train_toy(data, loss="simclr")
    with pytest.raises(ValueError, match="clean"):
        toy.toy_data(clean=0)


# --------------------------------------------------------------------------- CIFAR-10 runs


@pytest.fixture
def tiny_settings(tiny_cifar):
    return tiny_run_settings(tiny_cifar, dim=12, matrix_dims=6)


@pytest.fixture
def tiny_runs(tiny_settings):
    from decorr_lite.train import train_ssl

    return {
        "full": train_ssl(progress=False, **tiny_settings),
        "covariance off": train_ssl(progress=False, **{**tiny_settings, "cov_coeff": 0.0}),
    }


def test_run_figure_draws_every_run_in_every_panel(tiny_runs):
    untrained = tiny_runs["full"]
    fig = plots.run_figure(tiny_runs, untrained=untrained, title="t")
    axes = fig.axes
    assert len(axes) == 4 and fig.get_suptitle() == "t"
    for ax in (axes[0], axes[1], axes[3]):
        labels = [line.get_label() for line in ax.lines]
        assert {"full", "covariance off"} <= set(labels)
    # the effective-rank curve is the recorded history, step by step
    line = next(line for line in axes[0].lines if line.get_label() == "covariance off")
    np.testing.assert_allclose(line.get_ydata(), tiny_runs["covariance off"].series("effective_rank"))
    np.testing.assert_allclose(line.get_xdata(), [0, 2, 4])
    # a filled histogram outline per run, the margin line, the untrained reference line
    assert len(axes[2].patches) == 2 and {p.get_label() for p in axes[2].patches} == {"full", "covariance off"}
    assert any(np.allclose(line.get_xdata(), 1.0) for line in axes[2].lines)
    assert any(line.get_label() == "untrained encoder" for line in axes[3].lines)


def test_matrices_figure_shows_the_recorded_step(tiny_runs):
    run = tiny_runs["full"]
    fig = plots.matrices_figure(run, 0)
    assert fig.get_suptitle().startswith("step 0")
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    cov = run.arrays["covariance"][0]
    np.testing.assert_allclose(images[0], cov / np.diag(cov).mean())  # relative to the mean variance
    np.testing.assert_allclose(images[1], run.arrays["cross_correlation"][0])
    np.testing.assert_allclose(images[2], np.eye(6))
    # one colour scale, -1 to 1, for every matrix of every run and step
    assert all(ax.images[0].get_clim() == (-1.0, 1.0) for ax in fig.axes if ax.images)
    # the curves stop at the chosen step: one point at step 0, all three at the last step
    curves = [ax for ax in fig.axes if len(ax.lines) == 3][0]
    assert all(len(line.get_xdata()) == 1 for line in curves.lines)
    last = plots.matrices_figure(run, -1)
    assert last.get_suptitle().startswith("step 4")
    curves = [ax for ax in last.axes if len(ax.lines) == 3][0]
    np.testing.assert_allclose(curves.lines[0].get_ydata(), run.series("cov_offdiag_relative"))
    np.testing.assert_allclose(curves.lines[2].get_ydata(), run.series("corr_diag_rms_error"))


def test_collapse_matrices_share_one_colour_scale_and_show_the_last_step(tiny_runs):
    fig = plots.collapse_matrices(tiny_runs)
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert len(heatmaps) == 2 * len(tiny_runs)
    assert all(ax.images[0].get_clim() == (-1.0, 1.0) for ax in heatmaps)
    run = tiny_runs["full"]
    np.testing.assert_allclose(
        heatmaps[len(tiny_runs)].images[0].get_array(),  # row 2: C of the first run
        run.arrays["cross_correlation"][-1],
    )
    assert f"{run.history[-1]['cov_offdiag_relative']:.2f}" in heatmaps[0].get_title()


def test_pipeline_figure_and_view_pairs_draw_what_they_say():
    fig = plots.pipeline_figure(feature_dim=128, dim=1024)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "128-d" in texts and "d = 1024" in texts and "kNN" in texts and "effective rank" in texts
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    fig = plots.view_pairs(images, torch.zeros(3, 3, 32, 32), torch.zeros(3, 3, 32, 32), titles=["a", "b", "c"])
    assert len([ax for ax in fig.axes if ax.images]) == 9
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), images[0].permute(1, 2, 0).numpy() / 255, atol=1e-6)


def test_train_panel_trains_caches_and_toggles(tiny_settings):
    drawn = []

    def draw(result):
        drawn.append(result)
        return plots.new_axes(1)[0]  # drawn in the panel's training thread: no pyplot there

    panel = widgets.TrainPanel("vicreg", draw=draw, settings=tiny_settings)
    # nothing trained yet: no figure, the button is enabled
    assert panel.result is None and not panel.train_button.disabled and "press" in panel.status.value
    panel.train_button.click()
    panel.join()
    assert panel.trained == 1 and panel.result is not None and drawn[-1] is panel.result
    assert panel.progress.value == panel.progress.max == 4 and panel.train_button.disabled
    full = panel.result
    panel.controls["std_coeff_on"].value = False  # a new combination waits for the button
    assert (
        panel.result is None
        and panel.config().weights["std_coeff"] == 0.0
        and panel.config().weights["sim_coeff"] == 25.0
    )
    panel.train_button.click()
    panel.join()
    assert panel.trained == 2 and panel.result.config["weights"]["std_coeff"] == 0.0
    panel.controls["std_coeff_on"].value = True  # back: memoised, no training
    assert panel.result is full and panel.trained == 2
    # a new panel finds both runs in the disk cache
    other = widgets.TrainPanel("vicreg", draw=draw, settings=tiny_settings)
    assert other.result is not None and other.result.from_cache and other.result.final == full.final
    assert "from the cache" in other.status.value


def test_train_panel_step_slider_and_barlow_terms(tiny_settings):
    calls = []

    def draw(result, at):
        calls.append(at)
        return plots.new_axes(1)[0]

    panel = widgets.TrainPanel("barlow", draw=draw, settings=tiny_settings, step_slider=True)
    assert set(panel.checkboxes) == {"on_diag_coeff", "lambd"}
    panel.controls["lambd_on"].value = False
    assert panel.config().weights["lambd"] == 0.0 and panel.config().loss == "barlow"
    panel.train()
    panel.join()
    assert list(panel.controls["step"].options) == [0, 2, 4] and panel.controls["step"].value == 4
    assert calls == [2]  # drawn once, at the last evaluation point
    panel.controls["step"].value = 0
    assert calls == [2, 0] and panel.trained == 1


def test_train_panel_rejects_an_unknown_loss():
    with pytest.raises(ValueError, match="loss must be one of"):
        widgets.TrainPanel("simclr", draw=lambda r: None)


def test_train_panel_uses_the_weights_its_settings_give(tiny_settings):
    """A term switched on has the settings' weight (quick mode's lambd), so the panel's runs are
    the notebook's runs; without one in the settings, the loss's default."""
    panel = widgets.TrainPanel("barlow", draw=lambda result, at: None, settings={**tiny_settings, "lambd": 0.02})
    assert panel.config().weights["lambd"] == 0.02
    panel.controls["lambd_on"].value = False
    assert panel.config().weights["lambd"] == 0.0
    assert (
        widgets.TrainPanel("barlow", draw=lambda result, at: None, settings=tiny_settings).config().weights["lambd"]
        == 0.0051
    )


def _wait_for(condition, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_train_panel_trains_in_the_background_and_the_caller_stays_free(tiny_settings):
    import threading

    panel = widgets.TrainPanel(
        "vicreg", draw=lambda result: plots.new_axes(1)[0], settings={**tiny_settings, "steps": 60}
    )
    seen = []
    panel.progress.observe(lambda change: seen.append(change["new"]), names="value")
    panel.train()
    # the handler returned at once: the run trains in another thread while this one works
    assert (
        panel.training and panel._job.thread is not threading.current_thread() and panel.cancel_button.disabled is False
    )
    assert float(torch.ones(100).sum()) == 100.0
    panel.train()  # one run at a time: a second press while training starts nothing
    panel.join(timeout=120)
    assert not panel.training and panel.trained == 1 and panel.result is not None and panel.figure is not None
    assert seen == sorted(seen) and len(set(seen)) > 10 and seen[-1] == 60  # the bar advanced step by step
    image = panel.output.outputs[0]["data"]["image/png"]
    assert isinstance(image, str) and len(image) > 100 and panel.cancel_button.disabled
    assert "trained in" in panel.status.value


def test_train_panel_cancel_stops_the_run_and_caches_nothing(tiny_settings):
    from decorr_lite.paths import cache_dir
    from decorr_lite.train import cached_run, run_key

    settings = {**tiny_settings, "steps": 400}
    panel = widgets.TrainPanel("vicreg", draw=lambda result: plots.new_axes(1)[0], settings=settings)
    panel.train()
    _wait_for(lambda: panel.progress.value > 0)
    panel.cancel_button.click()
    panel.join(timeout=120)  # a cancelled run is not an error for join
    assert isinstance(panel.error, widgets.TrainingCancelled) and "cancelled" in panel.status.value
    assert panel.progress.value == 0 and not panel.train_button.disabled and panel.result is None
    assert cached_run(panel.config()) is None and panel.trained == 0
    assert not (cache_dir() / "runs" / run_key(panel.config())).exists()  # not even a damaged entry


def test_train_panel_shows_a_training_error_and_join_raises_it(tiny_settings, tmp_path):
    panel = widgets.TrainPanel(
        "vicreg", draw=lambda result: plots.new_axes(1)[0], settings={**tiny_settings, "data_root": str(tmp_path)}
    )  # no data there
    panel.train()
    with pytest.raises(FileNotFoundError):
        panel.join(timeout=120)
    assert "training failed" in panel.status.value and "FileNotFoundError" in panel.status.value
    assert not panel.train_button.disabled and panel.cancel_button.disabled


def test_train_panel_weights_and_width_are_new_settings(tiny_settings):
    panel = widgets.TrainPanel("vicreg", draw=lambda result: plots.new_axes(1)[0], settings=tiny_settings)
    slider = panel.controls["cov_coeff"]
    assert slider.value == pytest.approx(1.0) and slider.min == pytest.approx(-2) and slider.max == pytest.approx(1)
    slider.value = 10.0
    assert panel.config().weights["cov_coeff"] == pytest.approx(10.0) and panel.result is None
    panel.controls["cov_coeff_on"].value = False  # off wins over its weight
    assert panel.config().weights["cov_coeff"] == 0.0
    panel.controls["dim"].value = 256
    assert panel.config().dim == 256 and panel.config().weights["sim_coeff"] == 25.0


def test_train_panel_draws_a_bank_run_without_training(tiny_settings, tmp_path, monkeypatch):
    from decorr_lite import bank
    from decorr_lite.train import train_ssl

    run = train_ssl(**tiny_settings, std_coeff=0.0, cache=False, progress=False)
    monkeypatch.setenv("DECORR_BANK", str(tmp_path / "bank"))
    bank.save_entry("tiny-without-variance", run)
    panel = widgets.TrainPanel("vicreg", draw=lambda result: plots.new_axes(1)[0], settings=tiny_settings)
    assert panel.result is None
    panel.controls["std_coeff_on"].value = False
    assert panel.result is not None and panel.result.from_bank and panel.trained == 0
    assert "from the run bank" in panel.status.value and panel.train_button.disabled
    assert panel.result.final["knn_top1"] == run.final["knn_top1"]


def test_train_panel_draws_every_ready_combination_ahead(tiny_settings, tmp_path, monkeypatch):
    from decorr_lite import bank
    from decorr_lite.train import train_ssl

    monkeypatch.setenv("DECORR_BANK", str(tmp_path / "bank"))
    for name, fields in {"tiny": {}, "tiny-without-variance": {"std_coeff": 0.0}}.items():
        bank.save_entry(name, train_ssl(**tiny_settings, **fields, cache=False, progress=False))
    drawn = []

    def draw(result):
        drawn.append(result.config["weights"]["std_coeff"])
        return plots.new_axes(1)[0]

    panel = widgets.TrainPanel("vicreg", draw=draw, settings=tiny_settings)  # outside a kernel: drawn at once
    assert sorted(set(drawn)) == [0.0, 25.0]  # both ready combinations, drawn ahead
    count = len(drawn)
    panel.controls["std_coeff_on"].value = False
    panel.controls["std_coeff_on"].value = True
    assert len(drawn) == count and panel.updates == 3  # shown twice more, drawn no more


def test_train_panel_snapshot_is_an_ordinary_image_of_what_it_shows(tiny_settings, tmp_path, monkeypatch):
    import base64

    from IPython.display import Image, Markdown

    from decorr_lite import bank
    from decorr_lite.train import train_ssl

    panel = widgets.TrainPanel("vicreg", draw=lambda result: plots.new_axes(1)[0], settings=tiny_settings)
    assert isinstance(panel.snapshot(), Markdown) and "not trained yet" in panel.snapshot().data
    monkeypatch.setenv("DECORR_BANK", str(tmp_path / "bank"))
    bank.save_entry("tiny", train_ssl(**tiny_settings, cache=False, progress=False))
    shown = widgets.TrainPanel("vicreg", draw=lambda result: plots.new_axes(1)[0], settings=tiny_settings)
    image = shown.snapshot()
    assert isinstance(image, Image) and image.data == base64.b64decode(shown.output.outputs[0]["data"]["image/png"])
    assert image.data.startswith(b"\x89PNG")


def test_terms_figure_draws_each_term_of_each_run_dashed_when_off(tiny_runs):
    fig = plots.terms_figure(tiny_runs, ("invariance", "variance", "covariance"))
    assert len(fig.axes) == 3
    cov_axis = fig.axes[2]
    lines = {line.get_label(): line for line in cov_axis.lines}
    assert set(lines) == {"full", "covariance off (off)"}
    assert lines["covariance off (off)"].get_linestyle() == "--" and lines["full"].get_linestyle() == "-"
    np.testing.assert_allclose(lines["full"].get_ydata(), tiny_runs["full"].series("covariance"))


def test_collapse_map_puts_each_run_at_its_relative_spread_and_leading_share(tiny_runs):
    from decorr_lite import diagnostics

    fig, axes = plots.new_axes(1)
    plots.collapse_map(axes[0], tiny_runs)
    points = np.concatenate([c.get_offsets() for c in axes[0].collections])
    expected = [
        [r.final["median_std"] / r.history[0]["median_std"], r.final["leading_share"]] for r in tiny_runs.values()
    ]
    np.testing.assert_allclose(points, expected)
    assert any(np.allclose(line.get_ydata(), diagnostics.DIMENSIONAL_ABOVE) for line in axes[0].lines)
    assert any(np.allclose(line.get_xdata(), diagnostics.COMPLETE_BELOW) for line in axes[0].lines)
    # a setting given with its seeds: one point per seed
    fig, axes = plots.new_axes(1)
    plots.collapse_map(axes[0], {"both": list(tiny_runs.values())})
    assert len(np.concatenate([c.get_offsets() for c in axes[0].collections])) == len(tiny_runs)
