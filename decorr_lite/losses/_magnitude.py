"""Batch standardisation at any finite magnitude.

Barlow Twins standardises every feature by its batch std, which makes its loss scale-free: the
views z and c * z give the same loss (but for BatchNorm's eps, 1e-5 on the variance). Its
sums of squares are not: in float32 they overflow once the entries reach about 1e19 (float64:
1e154), the std comes out inf, the standardised feature 0, and the loss a silent constant.

So the standardisations compute the variance as usual and, only where it is not ``moderate``,
start again on ``z * down``: every feature divided by a power of two at least its largest
|entry|, with the eps divided by the square of it. Multiplying by a power of two is exact, so
this is the same standardisation of the same numbers, rounding for rounding; and the check is
one comparison over the d variances, so that inputs of an ordinary scale pay nothing and go
through the very same arithmetic as before.

That check reads a number back. On a GPU it waits for the device, which cost less, measured
on an H200 at n = 256, than the dozen small launches of the alternative below; but under
``torch.compile`` it would break the graph, and during a CUDA graph capture it is not allowed.
In those two (``branch_free``) the standardisations decide without a branch instead: ``guard``
gives down = 1 to every feature whose largest |entry| keeps its variance in range, a power of
two to the others, and the standardisation always works on z * down: for an ordinary input
that is z * 1, the same numbers again.
"""

from __future__ import annotations

import math

import torch

# A variance below this leaves the plain formulas well inside the dtype: its inverse, and the
# inverse's square (the backward passes use it), are normal numbers. float32: 2^96 (std 2.8e14).
_LIMIT = {dtype: 2.0 ** (3 * math.frexp(torch.finfo(dtype).max)[1] // 4) for dtype in (torch.float32, torch.float64)}


# |entries| below this keep every variance below _LIMIT: the variance is at most (2 * peak)^2.
_SAFE_PEAK = {dtype: math.sqrt(limit) / 4 for dtype, limit in _LIMIT.items()}


def branch_free(z: torch.Tensor) -> bool:
    """Whether to standardise without a branch on the data: under ``torch.compile``, where it
    would break the graph, and while a CUDA graph is being captured, where it is not allowed."""
    return _compiling() or (z.is_cuda and torch.cuda.is_current_stream_capturing())


def _compiling() -> bool:
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)  # torch >= 2.3
    return bool(check() if check is not None else torch._dynamo.is_compiling())


def guard(z: torch.Tensor) -> torch.Tensor:
    """Per feature, without a branch: 1 where the largest |entry| keeps the variance in range,
    else ``downscale`` of it."""
    peak = peaks(z)
    return torch.where(peak < _SAFE_PEAK[z.dtype], torch.ones_like(peak), downscale(peak))


def moderate(variance: torch.Tensor) -> bool:
    """Whether every per-feature variance is below the dtype's limit (False for inf and NaN: an
    overflowed sum of squares, or a mean that overflowed before it)."""
    return variance.max().item() < _LIMIT[variance.dtype]  # max propagates NaN, and NaN < x is False


def peaks(z: torch.Tensor) -> torch.Tensor:
    """The largest |entry| of every feature (d,), detached; 0 for a tensor without rows."""
    if z.shape[0] == 0:
        return z.new_zeros(z.shape[1:])
    return torch.linalg.vector_norm(z.detach(), float("inf"), dim=0)


def downscale(peak: torch.Tensor) -> torch.Tensor:
    """Per feature, the power of two 2^-e, e >= 0, that brings its largest |entry| ``peak`` below 1
    (1 for features already below it: they keep their own arithmetic, eps included)."""
    _, exponent = torch.frexp(peak)  # peak = m * 2^e, 0.5 <= m < 1
    # 2^-e computed in float64 (exact) and rounded to the dtype (exact too: down to 2^-149 in float32)
    return torch.pow(2.0, -exponent.clamp(min=0).to(torch.float64)).to(peak.dtype)


def scaled_eps(eps: float, down: torch.Tensor) -> torch.Tensor:
    """eps * down^2: the eps of the downscaled features, so that their standardisation is the
    original one. Kept at least the dtype's smallest normal number, so that an exactly constant
    feature far above 1 (variance 0) is standardised to 0, not to 0 / 0."""
    return (down.square() * eps).clamp_(min=torch.finfo(down.dtype).tiny)
