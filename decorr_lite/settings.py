"""Run-time settings: quick mode (from the environment) and the device to use.

- ``DECORR_QUICK=1``: quick mode. Notebooks measure smaller grids and train shorter, so that the
  whole sequence runs under nbval in CI in minutes. ``make test`` (through the root
  ``conftest.py``) turns it on unless it is set; a reader running a notebook by hand gets the
  full mode, whose figures are the ones committed.
"""

from __future__ import annotations

import os

import torch


def quick_mode() -> bool:
    """True when ``DECORR_QUICK`` is set to 1/true/yes."""
    return os.environ.get("DECORR_QUICK", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_device(device: str) -> str:
    """``"auto"`` picks CUDA when it is available; any other name is returned as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def native_bf16(device: str) -> bool:
    """Whether ``device`` computes in bfloat16 natively: CUDA devices that support it, and CPUs
    with AVX512-BF16 or AMX. Elsewhere bf16 is emulated in float32 and slower than float32."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device != "cpu":
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if not any(check is not None and check() for check in checks):
        return False
    # The hardware has it, but torch may be told not to use it: ATEN_CPU_CAPABILITY=avx2 limits
    # torch's kernels and ONEDNN_MAX_CPU_ISA=AVX2 oneDNN's (how an AVX-512 machine stands in for
    # a laptop without it). bf16 would then be emulated, as on that laptop.
    isa = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    bf16_isa = isa == "ALL" or any(level in isa for level in ("BF16", "AMX", "AVX10"))  # AVX512_CORE has none
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512") and bf16_isa


def resolve_precision(precision: str, device: str) -> str:
    """The precision a run on ``device`` (a resolved device name) uses: ``"auto"`` picks bf16
    autocast where the device computes bf16 natively and fp32 elsewhere; fp16 needs CUDA (its
    narrow range needs a gradient scaler, and CPUs have no fast fp16 kernels)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "fp16" and not device.startswith("cuda"):
        raise ValueError(
            "precision='fp16' needs a CUDA device (fp16 autocast with a gradient scaler); "
            "on a CPU use 'bf16' (fast with native bf16) or 'fp32'"
        )
    return precision


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """The autocast region of a resolved precision ("fp32": none)."""
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES.get(precision), enabled=precision != "fp32")
