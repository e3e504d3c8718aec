"""decorr_lite.train and the command line, on a tiny image-folder dataset (seconds, not minutes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import decorr_lite as dl
from decorr_lite import cli, train, training
from decorr_lite.data import cifar10
from decorr_lite.losses import loss_spec
from decorr_lite.train import TrainConfig, load_run, train_ssl

FINAL_KEYS = {"knn_top1", "linear_probe_top1", "effective_rank", "median_std", "seconds"}


def strip_times(metrics):
    """Metrics without wall-clock and memory entries (they vary), for comparing reruns."""
    # wall-clock, memory and the record of when and where (provenance) vary between reruns
    timeless = lambda d: {
        k: v
        for k, v in d.items()
        if "seconds" not in k
        and "memory" not in k  # noqa: E731
        and k != "provenance"
    }
    return {
        "config": metrics["config"],
        "final": timeless(metrics["final"]),
        "history": [timeless(h) for h in metrics["history"]],
    }


def test_metrics_layout(tiny):
    result = train_ssl(progress=False, cache=False, **tiny)
    metrics = result.metrics
    assert metrics["config"] == TrainConfig(**tiny).as_dict()
    assert FINAL_KEYS <= set(metrics["final"])
    assert 0 <= metrics["final"]["knn_top1"] <= 1 and 0 <= metrics["final"]["linear_probe_top1"] <= 1
    assert [h["step"] for h in metrics["history"]] == [0, 2, 4]
    for entry in metrics["history"]:
        assert {
            "step",
            "loss",
            "invariance",
            "variance",
            "covariance",
            "knn_top1",
            "effective_rank",
            "median_std",
        } <= set(entry)
        assert all(np.isfinite(entry[k]) for k in ("loss", "invariance", "variance", "covariance"))
    # the weighted sum of the terms is the loss, at step 0 (one batch)
    h0 = metrics["history"][0]
    assert h0["loss"] == pytest.approx(25 * h0["invariance"] + 25 * h0["variance"] + h0["covariance"], rel=1e-5)
    arrays = result.arrays
    assert arrays["spectrum"].shape == (3, 16) and arrays["std_per_dim"].shape == (3, 16)
    assert arrays["covariance"].shape == arrays["cross_correlation"].shape == (3, 8, 8)
    np.testing.assert_array_equal(arrays["eval_steps"], [0, 2, 4])
    assert result.series("knn_top1").shape == (3,)


def test_reruns_with_the_same_seed_agree(tiny):
    a = train_ssl(progress=False, cache=False, **tiny)
    b = train_ssl(progress=False, cache=False, **tiny)
    assert strip_times(a.metrics) == strip_times(b.metrics)
    for key in a.arrays:
        np.testing.assert_array_equal(a.arrays[key], b.arrays[key])
    c = train_ssl(progress=False, cache=False, **{**tiny, "seed": 1})
    assert strip_times(c.metrics)["history"] != strip_times(a.metrics)["history"]


def test_cache_returns_the_same_run_without_training(tiny, monkeypatch, isolated_cache):
    first = train_ssl(progress=False, **tiny)
    assert not first.from_cache and (first.path / "metrics.json").is_file()
    assert first.path.parent.parent == isolated_cache / "runs"  # runs/<key>/<version>/

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the run is cached")

    monkeypatch.setattr(training, "_train", no_training)
    second = train_ssl(progress=False, **tiny)
    assert second.from_cache and second.metrics == first.metrics
    with pytest.raises(AssertionError, match="trained again"):
        train_ssl(progress=False, **{**tiny, "std_coeff": 0.0})  # another configuration
    # the saved model reproduces the saved final embeddings' statistics
    model = second.load_model()
    assert model.projector[-1].out_features == 16


def test_out_folder(tiny, tmp_path):
    result = train_ssl(progress=False, out=tmp_path / "run", **tiny)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.metrics))
    assert load_run(tmp_path / "run").final == result.final
    uncached = train_ssl(progress=False, cache=False, out=tmp_path / "run2", **tiny)
    assert (tmp_path / "run2" / "model.pt").is_file() and uncached.path == tmp_path / "run2"


@pytest.mark.parametrize(
    "settings",
    [
        dict(loss="barlow"),
        dict(loss="barlow", lambd=0.0, method="gram"),
        dict(loss="vicreg", method="fft", block_size=4),
        dict(loss="vicreg", method="fft", permutation=False, std_coeff=0.0),
    ],
)
def test_other_losses_and_methods_train(tiny, settings):
    result = train_ssl(progress=False, cache=False, **{**tiny, **settings})
    terms = [term.name for term in loss_spec(settings["loss"]).terms]
    for entry in result.history:
        assert all(np.isfinite(entry[t]) for t in terms)


def views(n=32, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    z1 = (x + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_()
    z2 = (x + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_()
    return z1, z2


@pytest.mark.parametrize("weights", [(25, 25, 1), (25, 0, 1), (0, 25, 1), (25, 25, 0), (0, 0, 0)])
@pytest.mark.parametrize("method", ["exact", "fft"])
def test_vicreg_switches_match_the_loss_function(weights, method):
    z1, z2 = views()
    config = TrainConfig(
        sim_coeff=weights[0], std_coeff=weights[1], cov_coeff=weights[2], method=method, block_size=4, dim=12
    )
    # the run's permutation: drawn by its loss module, from a generator seeded with the run's seed + 5
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(config.seed + 5)) if method == "fft" else None
    loss_fn = train.build_loss(config)
    loss = loss_fn(z1, z2)
    terms = {name: float(value) for name, value in loss_fn.terms.items()}
    kwargs = dict(method=method, block_size=4, permutation=perm)
    expected = dl.vicreg_loss(z1, z2, sim_coeff=weights[0], std_coeff=weights[1], cov_coeff=weights[2], **kwargs)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    # every term is measured, switched on or off
    assert terms["invariance"] == pytest.approx(dl.invariance_loss(z1, z2).item(), rel=1e-12)
    assert terms["variance"] == pytest.approx((dl.variance_loss(z1) + dl.variance_loss(z2)).item() / 2, rel=1e-12)
    assert terms["covariance"] == pytest.approx(
        (dl.covariance_loss(z1, **kwargs) + dl.covariance_loss(z2, **kwargs)).item(), rel=1e-12
    )
    if loss.requires_grad:  # a switched-off term adds no gradient
        got = torch.autograd.grad(loss, (z1, z2))
        want = torch.autograd.grad(expected, (z1, z2))
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)


@pytest.mark.parametrize("lambd", [0.0051, 0.0])
def test_barlow_switches_match_the_loss_function(lambd):
    z1, z2 = views(seed=2)
    config = TrainConfig(loss="barlow", lambd=lambd, dim=12)
    loss_fn = train.build_loss(config)
    loss = loss_fn(z1, z2)
    terms = {name: float(value) for name, value in loss_fn.terms.items()}
    expected = dl.barlow_twins_loss(z1, z2, lambd=lambd)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    c = dl.cross_correlation(z1, z2).detach()
    assert terms["on_diagonal"] == pytest.approx(float((1 - c.diagonal()).square().sum()), rel=1e-10)
    assert terms["off_diagonal"] == pytest.approx(float(c.square().sum() - c.diagonal().square().sum()), rel=1e-10)


def test_learning_rate_schedule():
    config = TrainConfig(lr=1.0, warmup_fraction=0.1)
    lrs = [training._lr_at(s, 100, config) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.001
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


@pytest.mark.parametrize(
    "settings, name",
    [
        (dict(loss="simclr"), "loss"),
        (dict(method="svd"), "method"),
        (dict(std_coeff=-1.0), "std_coeff"),
        (dict(steps=10, epochs=1.0), "steps or epochs"),
        (dict(block_size=2048, dim=1024), "block_size"),
        (dict(batch_size=1), "batch_size"),
        (dict(encoder="vit"), "encoder"),
        (dict(device="tpu"), "device"),
        (dict(lr=0.0), "lr"),
    ],
)
def test_bad_configuration(settings, name):
    with pytest.raises(ValueError, match=name):
        TrainConfig(**settings)


def test_a_batch_too_small_for_the_processes_is_refused(tiny_run, monkeypatch):
    """--batch-size 6 on 4 processes would leave processes with 1 image (BatchNorm fails, or the
    local batch check raised on one rank while the others waited)."""
    monkeypatch.setattr(training, "_distributed_setup", lambda device: (4, 0, False))
    with pytest.raises(ValueError, match="batch_size=6 over 4 processes.*batch_size >= 8"):
        train.train_ssl(**{**tiny_run, "batch_size": 6}, progress=False)


def test_batch_larger_than_training_set(tiny):
    with pytest.raises(ValueError, match="batch_size"):
        train_ssl(progress=False, cache=False, **{**tiny, "batch_size": 100})


# --------------------------------------------------------------------------- command line


def cli_flags(settings: dict, **changes) -> list[str]:
    """``train_ssl`` settings as command-line flags (None as 0: the command line's "all")."""
    flags = []
    for name, value in {**settings, **changes}.items():
        flags += [f"--{name.replace('_', '-')}", "0" if value is None else str(value)]
    return flags


def test_cli_writes_metrics_and_prints_a_summary(tiny, tmp_path, capsys):
    argv = ["train", "--loss", "vicreg", "--std-coeff", "0", *cli_flags(tiny, steps=2, eval_points=1),
            "--out", str(tmp_path / "x"), "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    metrics = json.loads((tmp_path / "x" / "metrics.json").read_text())
    assert metrics["config"]["weights"]["std_coeff"] == 0.0 and metrics["config"]["train_subset"] is None
    assert FINAL_KEYS <= set(metrics["final"]) and len(metrics["history"]) == 2
    out = capsys.readouterr().out
    assert "final: kNN top-1" in out and "covariance" in out and str(tmp_path / "x") in out


def test_cli_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in [
        "--sim-coeff",
        "--std-coeff",
        "--cov-coeff",
        "--lambd",
        "--method",
        "--block-size",
        "--exponent",
        "--no-permutation",
        "--dim",
        "--epochs",
        "--steps",
        "--batch-size",
        "--lr",
        "--train-subset",
        "--seed",
        "--device",
        "--out",
    ]:
        assert flag in text


def test_cli_rejects_bad_values(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--method", "svd"])
    assert exit_.value.code == 2
    assert cli.main(["train", "--std-coeff", "-1"]) == 2
    assert "std_coeff" in capsys.readouterr().err


def test_module_entry_point():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "decorr_lite", "train", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--no-permutation" in done.stdout


def test_matrix_summaries_match_the_recorded_matrices(tiny):
    """The history's off-diagonal measures of the full d x d matrices (computed through Gram
    matrices, never forming them) against numpy on the matrices themselves (matrix_dims = d)."""
    result = train_ssl(progress=False, cache=False, **{**tiny, "matrix_dims": tiny["dim"]})
    d = tiny["dim"]
    off = ~np.eye(d, dtype=bool)
    for entry, cov, corr in zip(result.history, result.arrays["covariance"], result.arrays["cross_correlation"]):
        assert cov.shape == corr.shape == (d, d)
        cov_rms = np.sqrt(np.mean(cov[off] ** 2))
        corr_rms = np.sqrt(np.mean(corr[off] ** 2))
        assert entry["cov_offdiag_rms"] == pytest.approx(cov_rms, rel=1e-6)
        assert entry["corr_offdiag_rms"] == pytest.approx(corr_rms, rel=1e-6)
        assert entry["corr_diag_rms_error"] == pytest.approx(np.sqrt(np.mean((1 - np.diag(corr)) ** 2)), rel=1e-6)
        assert entry["cov_offdiag_relative"] == pytest.approx(cov_rms / np.diag(cov).mean(), rel=1e-6)
        assert entry["corr_offdiag_relative"] == pytest.approx(corr_rms / abs(np.diag(corr).mean()), rel=1e-6)


def test_callback_sees_every_step_and_memory_is_recorded(tiny):
    calls = []
    result = train_ssl(progress=False, callback=lambda done, total: calls.append((done, total)), **tiny)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert np.isfinite(result.final["peak_step_memory_mb"]) and result.final["peak_step_memory_mb"] >= 0
    calls.clear()
    again = train_ssl(progress=False, callback=lambda done, total: calls.append((done, total)), **tiny)
    assert again.from_cache and calls == []  # a cached run trains nothing, so reports nothing


def test_cached_run_and_float_fields(tiny):
    assert train.cached_run(**tiny) is None
    trained = train_ssl(progress=False, **{**tiny, "std_coeff": 0})
    # std_coeff=0 and std_coeff=0.0 are the same configuration, hence the same cached run
    assert TrainConfig(**{**tiny, "std_coeff": 0}).weights["std_coeff"] == 0.0
    assert train.run_key(TrainConfig(**{**tiny, "std_coeff": 0})) == train.run_key(
        TrainConfig(**{**tiny, "std_coeff": 0.0})
    )
    found = train.cached_run(**{**tiny, "std_coeff": 0.0})
    assert found is not None and found.from_cache and found.final == trained.final
    assert train.cached_run(TrainConfig(**tiny)) is None  # the full loss was never trained


@pytest.mark.parametrize("quick", [True, False])
def test_classroom_settings_are_valid_configurations(quick):
    settings = train.classroom_settings(quick)
    config = TrainConfig(**settings)
    assert config.method == "exact" and config.loss == "vicreg"
    other = train.classroom_settings(not quick)
    assert (settings["steps"] < other["steps"]) == quick and (settings["dim"] < other["dim"]) == quick


def test_classroom_settings_are_full_mode_whatever_quick_mode_says(monkeypatch):
    # the notebooks show the bank's full-mode runs in CI as in class; quick=None reads the environment
    monkeypatch.setenv("DECORR_QUICK", "1")
    assert train.classroom_settings() == train.classroom_settings(False) != train.classroom_settings(True)
    assert train.classroom_settings(None) == train.classroom_settings(True)
    monkeypatch.setenv("DECORR_QUICK", "0")
    assert train.classroom_settings(None) == train.classroom_settings(False)


def test_summary_table(tiny):
    runs = {
        "full": train_ssl(progress=False, **tiny),
        "variance off": train_ssl(progress=False, **{**tiny, "std_coeff": 0}),
    }
    lines = train.summary_table(runs).splitlines()
    assert lines[0].split()[:4] == ["run", "steps", "s/step", "kNN"] and set(lines[1]) == {"-"}
    assert len(lines) == 4
    for line, (label, run) in zip(lines[2:], runs.items()):
        assert line.startswith(label)
        assert f"{run.final['knn_top1']:.3f}" in line and line.rstrip().endswith(run.final["verdict"])


def test_torchrun_trains_with_two_processes(tiny, tmp_path):
    """torchrun --nproc-per-node 2 -m decorr_lite train: gloo on the CPU, the global batch split
    over the two processes, process 0 evaluates, saves and prints."""
    import subprocess
    import sys

    argv = ["--loss", "barlow", "--method", "fft", *cli_flags(tiny, steps=2, eval_points=1),
            "--out", str(tmp_path / "x"), "--quiet", "--device", "cpu"]  # fmt: skip
    # the command line, with the loader expecting the tiny copy's images per class
    launcher = tmp_path / "launch.py"
    launcher.write_text(
        "import sys\nfrom decorr_lite.data import cifar10\n"
        f"cifar10.PER_CLASS = {dict(cifar10.PER_CLASS)!r}\n"
        "from decorr_lite.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(launcher),
        "train",
        *argv,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "x" / "metrics.json").read_text())
    assert metrics["final"]["world_size"] == 2 and metrics["final"]["steps"] == 2
    assert len(metrics["history"]) == 2 and np.isfinite(metrics["history"][-1]["loss"])
    assert done.stdout.count("final: kNN top-1") == 1  # one report, from process 0
    # a different run from the single-process one: its own cache key
    assert train.run_key(TrainConfig(**tiny), 2) != train.run_key(TrainConfig(**tiny))


def test_train_runs_trains_each_labelled_run_once(tiny, capsys):
    runs = train.train_runs({"full": {}, "variance off": {"std_coeff": 0}}, tiny)
    assert list(runs) == ["full", "variance off"] and runs["variance off"].config["weights"]["std_coeff"] == 0.0
    first = capsys.readouterr().out.splitlines()
    # each run says first that it must train (and from which data), then how long it took
    assert len(first) == 4 and first[3].startswith("variance off") and "s to train and evaluate" in first[3]
    assert "not in the run bank or your run cache: training it from CIFAR-10 in " + tiny["data_root"] in first[0]
    assert "loaded from the cache" not in first[1]
    again = train.train_runs({"full": {}}, tiny)
    assert again["full"].from_cache and again["full"].final == runs["full"].final
    assert "(loaded from the cache)" in capsys.readouterr().out


def test_curves_start_at_the_untrained_encoder_and_end_at_the_final_numbers(tiny):
    """With evaluation sets as large as the final ones (the classroom settings), the last
    evaluation point is the final evaluation and the first is the untrained encoder's, so a
    figure's curves and the table under it agree."""
    same = {**tiny, "eval_bank": tiny["final_bank"], "eval_queries": 20, "final_queries": 20}
    run = train_ssl(**same, progress=False)
    untrained = train_ssl(**{**same, "steps": 0}, progress=False)
    for key in ("knn_top1", "effective_rank", "median_std", "verdict"):
        assert run.history[-1][key] == run.final[key], key
        assert run.history[0][key] == untrained.final[key] == untrained.history[0][key], key
