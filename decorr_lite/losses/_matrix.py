"""Small helpers shared by the exact and the relaxed penalties."""

from __future__ import annotations

import torch


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The d*(d-1) off-diagonal entries of a square (d, d) matrix, as a view (no copy).

    Dropping the last entry and viewing the rest as (d-1, d+1) puts every diagonal entry in
    column 0 (the trick of the official Barlow Twins and VICReg code).
    """
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:]


def power_sum(x: torch.Tensor, exponent: float) -> torch.Tensor:
    """sum |x|^q, written as x*x for q = 2 (no abs, cheaper, same value and gradient)."""
    if exponent == 2:
        return x.pow(2).sum()
    return x.abs().pow(exponent).sum()


def block_scale(value: float, d: int, block_size: int, like: torch.Tensor) -> torch.Tensor:
    """(g, g) filled with ``value``: one normalisation for the sums of every pair of blocks."""
    num_blocks = -(-d // block_size)
    return torch.full((num_blocks, num_blocks), value, dtype=like.dtype, device=like.device)


def block_power_sums(sums: torch.Tensor, exponent: float, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over shifts of |t|^q, t = scale * s, for the wrapped-diagonal sums s (g, g, b) of the
    relaxation and the (g, g) normalisation of each pair of blocks.

    Returns ``pairs`` (g, g), every shift of each pair of blocks, and ``diagonal`` (g,), the shifts
    k >= 1 of each diagonal block (shift 0 of a diagonal block lies on the matrix's diagonal).
    The sums are normalised before they are raised to q: raw sums of n*b products raised to a
    large q overflow float32. The penalties weight these small sums: one pass over s, where
    indexing the blocks and summing would make several (g, g, b) copies, and as many again in
    the backward pass.
    """
    normalised = sums * scale[..., None]
    power = normalised.square() if exponent == 2 else normalised.abs().pow(exponent)
    return power.sum(-1), torch.diagonal(power, dim1=0, dim2=1)[1:].sum(0)
