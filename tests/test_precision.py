"""Mixed-precision training: how ``precision`` resolves, what it records, and that it trains
reproducibly. (The losses' own float32 guarantee is tested in ``test_reliability.py``.)"""

from __future__ import annotations

import pytest
import torch

from decorr_lite import cli, settings, train, training
from decorr_lite.train import TrainConfig, train_ssl


def _cpu_bf16(monkeypatch, native: bool):
    """Pretend the CPU has (or lacks) native bf16: the capability queries torch answers."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native, raising=False)


def test_auto_is_fp32_on_a_cpu_without_native_bf16(monkeypatch):
    _cpu_bf16(monkeypatch, False)
    assert settings.resolve_precision("auto", "cpu") == "fp32"
    assert train.run_key(TrainConfig(precision="auto", device="cpu")) == train.run_key(
        TrainConfig(precision="fp32", device="cpu")
    )


def test_auto_is_bf16_on_a_cpu_with_native_bf16(monkeypatch):
    _cpu_bf16(monkeypatch, True)
    assert settings.resolve_precision("auto", "cpu") == "bf16"
    # the key is that of the precision used, so a bf16 run is never served as an fp32 one
    assert train.run_key(TrainConfig(precision="auto", device="cpu")) == train.run_key(
        TrainConfig(precision="bf16", device="cpu")
    )
    assert train.run_key(TrainConfig(precision="auto", device="cpu")) != train.run_key(
        TrainConfig(precision="fp32", device="cpu")
    )


def test_explicit_precisions_are_kept_and_bad_ones_refused():
    assert settings.resolve_precision("bf16", "cpu") == "bf16" and settings.resolve_precision("fp32", "cuda") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="half")


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused only without CUDA")
def test_fp16_without_cuda_is_refused_clearly(capsys, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="fp16.*needs a CUDA device"):
        train.check_runnable(TrainConfig(precision="fp16", device="auto"))
    monkeypatch.setenv("DECORR_DATA", str(tmp_path / "none"))
    assert cli.main(["train", "--precision", "fp16", "--quiet"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_tiny_run_trains_reproducibly_in_each_precision(tiny, precision, monkeypatch):
    """Same seed, same precision: identical metrics on the CPU; the loss is float32 throughout,
    computed on float32 embeddings, and the precision used is recorded."""
    seen = []
    build_loss = train.build_loss

    def recording(*args, **kwargs):
        loss_fn = build_loss(*args, **kwargs)
        loss_fn.register_forward_hook(lambda module, inputs, loss: seen.append((inputs[0].dtype, loss.dtype)))
        return loss_fn

    monkeypatch.setattr(training, "build_loss", recording)
    first = train_ssl(**tiny, precision=precision, cache=False, progress=False)
    again = train_ssl(**tiny, precision=precision, cache=False, progress=False)
    assert first.final["precision"] == precision and first.config["precision"] == precision
    assert set(seen) == {(torch.float32, torch.float32)}
    for key in ("knn_top1", "linear_probe_top1", "effective_rank", "median_std"):
        assert first.final[key] == again.final[key], key
    assert [h["loss"] for h in first.history] == [h["loss"] for h in again.history]


def test_bf16_and_fp32_runs_differ_but_agree_roughly(tiny):
    """bf16 autocast is a different computation (its own cache entry), not a broken one."""
    fp32 = train_ssl(**tiny, precision="fp32", progress=False)
    bf16 = train_ssl(**tiny, precision="bf16", progress=False)
    assert fp32.path != bf16.path
    assert fp32.history[-1]["loss"] != bf16.history[-1]["loss"]
    assert abs(fp32.history[-1]["loss"] - bf16.history[-1]["loss"]) < 0.05 * abs(fp32.history[-1]["loss"])
