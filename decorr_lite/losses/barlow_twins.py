r"""Barlow Twins (Zbontar, Jing, Misra, LeCun, Deny, ICML 2021), exact and FFT-relaxed.

With C the cross-correlation matrix of the batch-standardised views (``cross_correlation``):

.. math:: L = \sum_i (1 - C_{ii})^2 + \lambda \sum_{i \ne j} |C_{ij}|^q

q = 2 in Barlow Twins. The relaxation of Shigeto et al. (CVPR 2023, arXiv:2301.01569) keeps the
on-diagonal term and replaces the off-diagonal entries by the sums of wrapped diagonals
s[u, v, k] of the b x b blocks of A^T B (A, B the standardised views), normalised as the
authors' released code does::

    off_fft = sum_u sum_{k>=1} |s[u, u, k] / n|^q  +  sum_{u != v} sum_k |s[u, v, k] / n|^q

With b = 1 every "wrapped diagonal" is a single entry and the relaxed loss equals the exact one.
"""

from __future__ import annotations

import torch

from . import _distributed, _fused
from ._checks import check_decorrelation_options, check_not_transformed, check_pair, check_positive
from ._matrix import block_power_sums, block_scale, power_sum
from ._matrix import off_diagonal as _off_diagonal
from ._precision import full_precision, upcast
from .circular import circular_blocks, permute_features
from .cross_correlation import BATCHNORM_EPS, batch_standardize


def barlow_twins_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    lambd: float = 0.0051,
    method: str = "exact",
    block_size: int | None = None,
    exponent: float = 2,
    permutation: torch.Tensor | None = None,
    check_finite: bool = True,
    gather_distributed: bool = False,
) -> torch.Tensor:
    """Barlow Twins loss of two views, as the official implementation computes it.

    Args:
        z1, z2: (n, d) embeddings of the two views; standardised here per feature over the
            batch (as ``BatchNorm1d(affine=False)`` in training mode). Any floating dtype: the
            loss is computed in float32 (float64 stays float64), also inside a
            ``torch.autocast`` region, and is float32 for half-precision inputs.
        lambd: weight of the off-diagonal (redundancy reduction) term; 0 switches it off.
        method: ``"exact"`` forms the d x d matrix C: O(n*d^2) time, O(d^2) memory.
            ``"gram"`` gives the same value through n x n Gram matrices,
            ||A^T B||_F^2 = sum((A A^T) * (B B^T)): O(n^2*d) time, O(n^2) memory, faster when
            n < d (exponent must be 2). ``"fft"`` is the relaxation: O(n*d*log b + n*d*g) time,
            O(n*d + g^2*b) memory, g = ceil(d / b).
        block_size: b in [1, d] for ``"fft"``; None means b = d (fully relaxed).
        exponent: q >= 1 in |.|^q for the off-diagonal term (2 in Barlow Twins).
        permutation: a permutation of range(d) applied to the features of both views before
            blocking (``"fft"`` only; the exact value does not depend on it).
        check_finite: reject NaN/Inf (a full pass over the data; training loops may skip it).
        gather_distributed: when a ``torch.distributed`` process group is initialised, compute
            the loss of the global batch (standardised with global statistics), as one process
            would. Every rank must pass the same arguments (the same permutation too): they are
            compared, and a difference raises on every rank. A rank may hold 0 or 1 rows; the
            global batch needs 2. Gradients with respect to the local embeddings are world_size
            times the single-process ones, so that DDP's gradient averaging gives the
            single-process parameter gradients (``losses/_distributed.py``). ``"exact"``/``"gram"``
            gather the embeddings; ``"fft"`` all-reduces only sums.

    Returns:
        0-dim tensor.

    Supports first derivatives only (every method: the batch standardisation has a written-out
    backward): no double backward, no ``torch.func`` transforms.
    """
    check_positive(lambd, "lambd", allow_zero=True)
    terms = _terms(z1, z2, bool(lambd), method, block_size, exponent, permutation, check_finite, gather_distributed,
                   lambd)
    if not lambd:
        return terms["on_diagonal"]
    return terms["on_diagonal"] + lambd * terms["off_diagonal"]


def barlow_twins_terms(
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    off_diagonal: bool = True,
    method: str = "exact",
    block_size: int | None = None,
    exponent: float = 2,
    permutation: torch.Tensor | None = None,
    check_finite: bool = True,
    gather_distributed: bool = False,
) -> dict[str, torch.Tensor]:
    """The unweighted Barlow Twins terms, for logging each one.

    Returns ``{"on_diagonal": sum_i (1 - C_ii)^2, "off_diagonal": sum_{i != j} |C_ij|^q}`` (the
    latter relaxed for ``method="fft"``, and left out when ``off_diagonal`` is false), so that
    ``barlow_twins_loss`` is ``on_diagonal + lambd * off_diagonal``. Arguments as in
    ``barlow_twins_loss``.
    """
    return _terms(z1, z2, off_diagonal, method, block_size, exponent, permutation, check_finite, gather_distributed,
                  None)


def _terms(z1, z2, off_diagonal, method, block_size, exponent, permutation, check_finite, gather_distributed,
           lambd) -> dict[str, torch.Tensor]:
    """Check, agree across ranks (``gather_distributed``), then compute in float32 or float64."""
    distributed = gather_distributed and _distributed.active()
    with _distributed.checked_together(distributed):
        check_pair(z1, z2, check_finite=check_finite, min_rows=0 if distributed else 2)
        method, block_size, exponent, permutation = check_decorrelation_options(
            method, block_size, exponent, permutation, z1.shape[1], z1.device
        )
        check_not_transformed(z1, "Barlow Twins")
    sizes = None
    if distributed:
        arguments = dict(off_diagonal=bool(off_diagonal), method=method, d=z1.shape[1], block_size=block_size,
                         exponent=exponent, permutation=permutation)
        if lambd is not None:
            arguments["lambd"] = lambd
        sizes = _distributed.agree("barlow_twins", arguments, z1.shape[0])
    with full_precision(z1.device):
        z1, z2 = upcast(z1), upcast(z2)
        if sizes is not None and method != "fft":  # exact and gram need every row: gather them
            z1, z2, sizes = _distributed.gather_rows(z1, sizes), _distributed.gather_rows(z2, sizes), None
        if sizes is not None:
            return _distributed_relaxed_terms(z1, z2, off_diagonal, block_size, exponent, permutation, sum(sizes))
        if method == "fft" and off_diagonal and _fused.supported(z1):
            return _fused_terms(z1, z2, block_size, exponent, permutation)
        return _modular_terms(z1, z2, off_diagonal, method, block_size, exponent, permutation)


def _modular_terms(z1, z2, off_diagonal, method, block_size, exponent, permutation) -> dict[str, torch.Tensor]:
    """Each term on its own, from the standardised views (the reference path)."""
    n = z1.shape[0]
    a, b = batch_standardize(z1), batch_standardize(z2)
    if method == "exact":
        c = a.T @ b / n
        out = {"on_diagonal": (1 - c.diagonal()).pow(2).sum()}
        if off_diagonal:
            out["off_diagonal"] = power_sum(_off_diagonal(c), exponent)
        return out
    c_diag = (a * b).sum(dim=0) / n  # C_ii in O(n*d), without forming C
    out = {"on_diagonal": (1 - c_diag).pow(2).sum()}
    if off_diagonal and method == "gram":
        # the subtraction can round a true 0 below it: the sum of squares is never negative
        out["off_diagonal"] = (((a @ a.T) * (b @ b.T)).sum() / n**2 - c_diag.pow(2).sum()).clamp(min=0)
    elif off_diagonal:
        out["off_diagonal"] = _relaxed_off_diagonal(a, b, block_size, exponent, permutation)
    return out


def _fused_terms(z1, z2, block_size, exponent, permutation) -> dict[str, torch.Tensor]:
    """The fast single-process path of the relaxation (``_fused.py``)."""
    n, d = z1.shape
    c_diag, pairs, diagonal = _fused.RelaxedBarlowTwins.apply(
        z1, z2, permutation, block_size, exponent, _fused.row_chunks(n, d, z1), block_scale(1 / n, d, block_size, z1)
    )
    return {"on_diagonal": (1 - c_diag / n).pow(2).sum(), "off_diagonal": _penalty_from_power_sums(pairs, diagonal)}


def _distributed_relaxed_terms(z1, z2, off_diagonal, block_size, exponent, permutation, n) -> dict[str, torch.Tensor]:
    """``"fft"`` across processes: global statistics, then sums all-reduced (``n`` rows in all)."""
    a, b = _standardize_globally(z1, n), _standardize_globally(z2, n)
    c_diag = _distributed.all_reduce_sum((a * b).sum(dim=0)) / n
    out = {"on_diagonal": (1 - c_diag).pow(2).sum()}
    if off_diagonal:
        out["off_diagonal"] = _relaxed_off_diagonal(a, b, block_size, exponent, permutation, n)
    return out


def _standardize_globally(z: torch.Tensor, n: int, eps: float = BATCHNORM_EPS) -> torch.Tensor:
    """``batch_standardize`` with the mean and biased variance of the global batch (n rows over
    all ranks); plain autograd through the all-reduces."""
    centred = z - _distributed.global_mean(z, n)
    return centred * torch.rsqrt(_distributed.all_reduce_sum(centred.pow(2).sum(dim=0)) / n + eps)


def _relaxed_off_diagonal(
    a: torch.Tensor, b: torch.Tensor, block_size: int, exponent: float, permutation: torch.Tensor | None,
    global_n: int | None = None,
) -> torch.Tensor:
    """``global_n`` given: ``a`` and ``b`` are this rank's rows of the globally standardised
    views, and the sums of wrapped diagonals are all-reduced (O(g*g*b) numbers)."""
    n = a.shape[0]
    a, b = permute_features(a, permutation), permute_features(b, permutation)
    sums = circular_blocks(a, b, block_size)
    if global_n is not None:
        sums, n = _distributed.all_reduce_sum(sums), global_n
    # the sums of every pair of blocks are normalised by 1 / n, as the entries of C
    return _penalty_from_power_sums(*block_power_sums(sums, exponent, block_scale(1 / n, a.shape[1], block_size, sums)))


def _penalty_from_power_sums(pairs: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """sum |s/n|^q over the diagonal blocks' shifts k >= 1 and every shift of the other blocks,
    from ``block_power_sums`` of the normalised sums: pairs (g, g) and diagonal (g,)."""
    num_blocks = pairs.shape[0]
    # Diagonal blocks: shift 0 holds the C_ii (the on-diagonal term's business), so it is left out.
    penalty = diagonal.sum()
    if num_blocks > 1:  # every ordered pair of distinct blocks, every shift
        penalty = penalty + pairs.masked_fill(torch.eye(num_blocks, dtype=torch.bool, device=pairs.device), 0).sum()
    return penalty
