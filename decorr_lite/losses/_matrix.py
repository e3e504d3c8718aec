"""Small helpers of the exact penalties (the relaxed ones: ``relaxed.py``)."""

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
