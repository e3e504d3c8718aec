r"""Barlow Twins' off-diagonal (redundancy reduction) term, exact and FFT-relaxed: the
counterpart of ``covariance.py`` for the cross-correlation matrix of two views.

For the batch-standardised views A, B (n x d) and C = A^T B / n:

.. math:: o(C) = \sum_{i \ne j} |C_{ij}|^q

exact from C itself; ``"gram"`` (q = 2) as ||A^T B||_F^2 / n^2 - sum_i C_ii^2 through n x n Gram
matrices; relaxed (Shigeto et al., CVPR 2023) as sum |s / n|^q over the wrapped-diagonal sums s
of the b x b blocks of A^T B (``circular.py``), shift 0 of the diagonal blocks left out (it holds
the C_ii, the on-diagonal term's business), normalised as the authors' released code does.
"""

from __future__ import annotations

import torch

from ._distributed import all_reduce_sum
from ._matrix import off_diagonal, power_sum
from .circular import circular_blocks, permute_features
from .relaxed import barlow_twins_relaxed_penalty


def off_diagonal_penalty(
    a: torch.Tensor,
    b: torch.Tensor,
    c_diag: torch.Tensor,
    method: str,
    block_size: int,
    exponent: float,
    permutation: torch.Tensor | None,
    global_n: int | None = None,
    c: torch.Tensor | None = None,
) -> torch.Tensor:
    """The penalty on already-checked, standardised views ``a``, ``b`` whose C_ii are ``c_diag``
    (shared with ``barlow_twins_loss``); ``c``: C itself, when the exact method has formed it.

    ``global_n`` (``"fft"`` only): ``a`` and ``b`` are this rank's rows of a global batch of
    ``global_n`` rows, standardised with global statistics; the sums of wrapped diagonals are
    all-reduced over the ranks (``_distributed.py``).
    """
    n = a.shape[0]
    if method == "exact":
        return power_sum(off_diagonal(a.T @ b / n if c is None else c), exponent)
    if method == "gram":
        # the subtraction can round a true 0 below it: the sum of squares is never negative
        return (((a @ a.T) * (b @ b.T)).sum() / n**2 - c_diag.pow(2).sum()).clamp(min=0)
    return relaxed_penalty(a, b, block_size, exponent, permutation, global_n)


def relaxed_penalty(a, b, block_size: int, exponent: float, permutation: torch.Tensor | None, global_n=None):
    a, b = permute_features(a, permutation), permute_features(b, permutation)
    sums = circular_blocks(a, b, block_size)
    n = a.shape[0]
    if global_n is not None:  # a sum over samples: add up the ranks' sums, O(g*g*b) numbers
        sums, n = all_reduce_sum(sums), global_n
    return barlow_twins_relaxed_penalty(sums, n, a.shape[1], block_size, exponent)
