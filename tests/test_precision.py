"""Mixed precision: every loss computes in float32 whatever the precision of its input or of an
autocast region around it (``losses/_precision.py``), and training's ``precision``: how it
resolves, what it records, and that it trains reproducibly."""

from __future__ import annotations

import pytest
import torch

import decorr_lite as dl
from decorr_lite import cli, settings, train, training
from decorr_lite.train import TrainConfig, train_ssl

LOSSES = {name: spec.loss_function for name, spec in dl.LOSSES.items()}
METHODS = {  # every method, and two more settings of the relaxation
    **{method: {"method": method} for method in dl.METHODS},
    "fft b=8": {"method": "fft", "block_size": 8},
    "fft q=1": {"method": "fft", "exponent": 1},
}
# every loss with every setting of a method it supports
CASES = [
    pytest.param(loss, method, id=f"{loss}-{method}")
    for loss in sorted(LOSSES)
    for method, kwargs in METHODS.items()
    if kwargs["method"] in dl.loss_spec(loss).methods
]


# --------------------------------------------------------------------------- the losses


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [1.0, 50.0])
@pytest.mark.parametrize("loss, method", CASES)
def test_losses_inside_autocast_equal_the_float32_loss(dtype, scale, loss, method):
    """Embeddings made inside a CPU autocast region (half precision), and the loss called there
    too: the loss is float32, equals the float32 loss of the same embeddings to 1e-5, and its
    gradients are finite: with respect to the embeddings, in their dtype, and (bf16, whose range
    is float32's) through the layer. In fp16 the layer's own backward can overflow at scale 50
    (a sum over the batch of large gradients): that is what a gradient scaler is for."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 32, generator=g)
    layer = torch.nn.Linear(32, 64)
    with torch.autocast("cpu", dtype=dtype):
        z1, z2 = layer(x) * scale, layer(x + 0.3 * torch.randn(x.shape, generator=g)) * scale
        assert z1.dtype == dtype
        value = LOSSES[loss](z1, z2, **METHODS[method])
    f1, f2 = (z.detach().float().requires_grad_() for z in (z1, z2))
    reference = LOSSES[loss](f1, f2, **METHODS[method])
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, reference, rtol=1e-5, atol=0)
    z1.retain_grad()
    value.backward()
    reference.backward()
    assert z1.grad.dtype == dtype and torch.isfinite(z1.grad).all()
    torch.testing.assert_close(z1.grad.float(), f1.grad, rtol=1e-2, atol=1e-2 * float(f1.grad.abs().max()))
    if dtype == torch.bfloat16:
        assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0


def test_gram_in_float16_is_finite():
    """n = d = 32 with unit-variance data: the squared Gram entries overflowed float16 (inf)."""
    z = torch.randn(32, 32, generator=torch.Generator().manual_seed(1))
    half = dl.covariance_loss(z.half(), method="gram")
    assert torch.isfinite(half)
    torch.testing.assert_close(half, dl.covariance_loss(z.half().float(), method="exact"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_function_returns_float32_and_gradients_in_the_input_dtype(dtype):
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(40, 12, generator=g).to(dtype).requires_grad_()
    z2 = torch.randn(40, 12, generator=g).to(dtype).requires_grad_()
    outputs = [
        dl.invariance_loss(z1, z2),
        dl.variance_loss(z1),
        dl.covariance_loss(z1, method="gram"),
        dl.covariance_loss(z1, method="fft", block_size=5),
        dl.cross_correlation(z1, z2).sum(),
        dl.circular_correlation(z1, z2, 4).sum(),
        *dl.vicreg_terms(z1, z2, method="fft").values(),
        *dl.barlow_twins_terms(z1, z2, method="gram").values(),
        dl.vicreg_loss(z1, z2, sim_coeff=0, std_coeff=0, cov_coeff=0),
    ]
    assert [o.dtype for o in outputs] == [torch.float32] * len(outputs)
    sum(o for o in outputs if o.requires_grad).backward()
    assert z1.grad.dtype == dtype and z2.grad.dtype == dtype and torch.isfinite(z1.grad.float()).all()


def test_float64_stays_float64_under_autocast():
    z1, z2 = (torch.randn(30, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(s)) for s in (3, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = [dl.vicreg_loss(z1, z2, method=m) for m in dl.loss_spec("vicreg").methods]
    assert all(v.dtype == torch.float64 for v in values)
    torch.testing.assert_close(values[0], dl.vicreg_loss(z1, z2), rtol=1e-14, atol=0)


# --------------------------------------------------------------------------- training


def _cpu_bf16(monkeypatch, native: bool):
    """Pretend the CPU has (or lacks) native bf16: the capability queries torch answers."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512" if native else "AVX2")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)


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


@pytest.mark.parametrize(
    "capability, isa",
    [("AVX2", None), ("AVX512", "AVX2"), ("AVX512", "AVX512_CORE"), ("AVX512", "avx512_core_vnni"), ("DEFAULT", None)],
    ids=["aten-avx2", "onednn-avx2", "onednn-avx512-core", "onednn-vnni", "none"],
)
def test_auto_is_fp32_where_torch_is_told_not_to_use_the_cpu_s_bf16(monkeypatch, capability, isa):
    """ATEN_CPU_CAPABILITY=avx2 or ONEDNN_MAX_CPU_ISA=AVX2 on an AVX512-BF16 machine (how it stands in for a
    laptop without AVX-512) left auto at bf16, which was then emulated, several times slower than fp32."""
    _cpu_bf16(monkeypatch, True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    if isa:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert settings.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    for bf16_isa in ("AVX512_CORE_AMX", "avx512_core_bf16", "AVX10_1_512", "ALL", ""):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", bf16_isa)
        assert settings.resolve_precision("auto", "cpu") == "bf16", bf16_isa


def test_the_older_name_of_onednn_s_limit_counts_too(monkeypatch):
    _cpu_bf16(monkeypatch, True)
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    assert settings.resolve_precision("auto", "cpu") == "fp32"


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
