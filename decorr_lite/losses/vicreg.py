r"""VICReg: Variance-Invariance-Covariance Regularization (Bardes, Ponce, LeCun, ICLR 2022).

.. math:: L = \lambda\, s(Z_1, Z_2) + \mu\, \frac{v(Z_1) + v(Z_2)}{2} + \nu\, (c(Z_1) + c(Z_2))

with s the invariance term (``invariance.py``), v the variance hinge (``variance.py``) and c the
covariance penalty (``covariance.py``, exact or FFT-relaxed). Defaults lambda = mu = 25, nu = 1
are the paper's. This is the official implementation's formula term for term.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from . import _distributed, _fused
from ._checks import check_decorrelation_options, check_pair, check_positive
from .covariance import covariance_penalty, relaxed_penalty_from_power_sums
from .invariance import invariance_loss
from .variance import hinge_from_squares, variance_penalty

TERMS = ("invariance", "variance", "covariance")


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    method: str = "exact",
    block_size: int | None = None,
    exponent: float = 2,
    permutation: torch.Tensor | None = None,
    gamma: float = 1.0,
    eps: float = 1e-4,
    check_finite: bool = True,
    gather_distributed: bool = False,
) -> torch.Tensor:
    """VICReg loss of two views.

    Args:
        z1, z2: (n, d) embeddings of the two views.
        sim_coeff, std_coeff, cov_coeff: weights of the invariance, variance and covariance
            terms (>= 0). A weight of 0 switches the term off and skips its computation.
        method, block_size, exponent, permutation: how the covariance term is computed;
            see ``covariance_loss``. The invariance and variance terms are not relaxed.
        gamma, eps: margin and epsilon of the variance hinge; see ``variance_loss``.
        check_finite: reject NaN/Inf (a full pass over the data; training loops may skip it).
        gather_distributed: when a ``torch.distributed`` process group is initialised, compute
            the loss of the global batch (every rank's rows), as one process would. Gradients
            with respect to the local embeddings are world_size times the single-process ones,
            so that DDP's gradient averaging gives the single-process parameter gradients
            (``losses/_distributed.py``). ``"exact"``/``"gram"`` gather the embeddings;
            ``"fft"`` all-reduces only sums.

    Returns:
        0-dim tensor. Cost: O(n*d) plus that of the covariance method, twice.
    """
    for name, value in (("sim_coeff", sim_coeff), ("std_coeff", std_coeff), ("cov_coeff", cov_coeff)):
        check_positive(value, name, allow_zero=True)
    weights = {"invariance": sim_coeff, "variance": std_coeff, "covariance": cov_coeff}
    terms = vicreg_terms(
        z1, z2, terms=[name for name, w in weights.items() if w], method=method, block_size=block_size,
        exponent=exponent, permutation=permutation, gamma=gamma, eps=eps, check_finite=check_finite,
        gather_distributed=gather_distributed,
    )
    loss = z1.new_zeros(())
    for name, value in terms.items():
        loss = loss + weights[name] * value
    return loss


def vicreg_terms(
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    terms: Iterable[str] = TERMS,
    method: str = "exact",
    block_size: int | None = None,
    exponent: float = 2,
    permutation: torch.Tensor | None = None,
    gamma: float = 1.0,
    eps: float = 1e-4,
    check_finite: bool = True,
    gather_distributed: bool = False,
) -> dict[str, torch.Tensor]:
    """The unweighted VICReg terms, for logging each one (training curves, notebooks).

    Returns ``{"invariance": s, "variance": (v(z1) + v(z2)) / 2, "covariance": c(z1) + c(z2)}``
    restricted to ``terms``, so that ``vicreg_loss`` is ``sum(weight * term)``. Arguments as in
    ``vicreg_loss``; only the requested terms are computed.
    """
    check_pair(z1, z2, check_finite=check_finite)
    d = z1.shape[1]
    terms = list(terms)
    unknown = sorted(set(terms) - set(TERMS))
    if unknown:
        raise ValueError(f"terms must be a subset of {TERMS}, got unknown {unknown}")
    check_positive(gamma, "gamma")
    check_positive(eps, "eps", allow_zero=True)
    method, block_size, exponent, permutation = check_decorrelation_options(
        method, block_size, exponent, permutation, d, z1.device
    )

    # Across processes: exact and gram need every row (gather them, then compute as one process
    # would); fft needs only sums, which are all-reduced where they are formed.
    # global_n, the rows over all ranks, is counted once and marks the sums-only (fft) path.
    global_n = None
    if gather_distributed and _distributed.active():
        if method == "fft":
            global_n = _distributed.global_count(z1.shape[0], z1.device)
        else:
            z1, z2 = _distributed.gather_rows(z1), _distributed.gather_rows(z2)

    if method == "fft" and "covariance" in terms and global_n is None and _fused.supported(z1):
        return _relaxed_terms(z1, z2, terms, block_size, exponent, permutation, gamma, eps)

    out = {}
    if "invariance" in terms:
        if global_n is not None:
            out["invariance"] = _distributed.all_reduce_sum((z1 - z2).pow(2).sum()) / (global_n * d)
        else:
            out["invariance"] = invariance_loss(z1, z2, check_finite=False)
    if "variance" in terms or "covariance" in terms:
        # both the variance and the covariance term work on the centred views: centre once
        c1, c2 = _centre(z1, global_n), _centre(z2, global_n)
        if "variance" in terms:
            out["variance"] = (variance_penalty(c1, gamma, eps, global_n)
                               + variance_penalty(c2, gamma, eps, global_n)) / 2
        if "covariance" in terms:
            out["covariance"] = covariance_penalty(c1, method, block_size, exponent, permutation, global_n) + (
                covariance_penalty(c2, method, block_size, exponent, permutation, global_n)
            )
    return out


def _relaxed_terms(z1, z2, terms, block_size, exponent, permutation, gamma, eps) -> dict[str, torch.Tensor]:
    """The fast single-process path of the relaxation: every term from the fused pass (``_fused.py``)."""
    n, d = z1.shape
    squared_difference, squares, pairs, diagonal = _fused.RelaxedVICReg.apply(
        z1, z2, permutation, block_size, exponent, _fused.row_chunks(n, d, z1)
    )
    out = {}
    if "invariance" in terms:
        out["invariance"] = squared_difference / (n * d)
    if "variance" in terms:
        out["variance"] = hinge_from_squares(squares, n, gamma, eps).mean()  # of the two views
    out["covariance"] = sum(
        relaxed_penalty_from_power_sums(p, dg, n, d, block_size, exponent) for p, dg in zip(pairs, diagonal)
    )
    return out


def _centre(z: torch.Tensor, global_n: int | None) -> torch.Tensor:
    """Subtract the batch mean: of the local rows, or of the global batch of ``global_n`` rows."""
    if global_n is None:
        return z - z.mean(dim=0)
    return z - _distributed.global_mean(z, global_n)
