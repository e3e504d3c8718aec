"""Mixed-precision safety: every loss computes in float32 (float64 stays float64).

Half-precision inputs are upcast, and any ``torch.autocast`` region the call sits in is switched
off inside the loss: its statistics are sums of n squares (a float16 Gram entry overflows from
n = d = 32 with unit-variance data) and differences of nearly equal sums (bf16 keeps 3 digits),
which neither half format holds. The upcast is an ordinary autograd op, so gradients flow back
to the embeddings in their own dtype; the loss itself is float32.
"""

from __future__ import annotations

import contextlib

import torch

HALF = (torch.float16, torch.bfloat16)


def upcast(z: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 -> float32; float32 and float64 unchanged (no copy)."""
    return z.float() if z.dtype in HALF else z


def full_precision(device: torch.device):
    """A context in which autocast is off on ``device`` (a no-op where it is not on)."""
    if torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def is_transformed(z: torch.Tensor) -> bool:
    """Whether ``z`` is traced by a ``torch.func`` transform (grad, vmap, jacrev, ...)."""
    return torch._C._functorch.is_functorch_wrapped_tensor(z)
