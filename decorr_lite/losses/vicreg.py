r"""VICReg: Variance-Invariance-Covariance Regularization (Bardes, Ponce, LeCun, ICLR 2022).

.. math:: L = \lambda\, s(Z_1, Z_2) + \mu\, \frac{v(Z_1) + v(Z_2)}{2} + \nu\, (c(Z_1) + c(Z_2))

with s the invariance term (``invariance.py``), v the variance hinge (``variance.py``) and c the
covariance penalty (``covariance.py``, exact or FFT-relaxed). Defaults lambda = mu = 25, nu = 1
are the paper's. This is the official implementation's formula term for term.
"""

from __future__ import annotations

import torch

from ._checks import check_decorrelation_options, check_pair, check_positive
from .covariance import covariance_penalty
from .invariance import invariance_loss
from .variance import variance_penalty


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

    Returns:
        0-dim tensor. Cost: O(n*d) plus that of the covariance method, twice.
    """
    check_pair(z1, z2, check_finite=check_finite)
    d = z1.shape[1]
    for name, value in (("sim_coeff", sim_coeff), ("std_coeff", std_coeff), ("cov_coeff", cov_coeff)):
        check_positive(value, name, allow_zero=True)
    check_positive(gamma, "gamma")
    check_positive(eps, "eps", allow_zero=True)
    method, block_size, exponent, permutation = check_decorrelation_options(
        method, block_size, exponent, permutation, d, z1.device
    )

    loss = z1.new_zeros(())
    if sim_coeff:
        loss = loss + sim_coeff * invariance_loss(z1, z2, check_finite=False)
    if not (std_coeff or cov_coeff):
        return loss
    # both the variance and the covariance term work on the centred views: centre once
    c1, c2 = z1 - z1.mean(dim=0), z2 - z2.mean(dim=0)
    if std_coeff:
        loss = loss + std_coeff * (variance_penalty(c1, gamma, eps) + variance_penalty(c2, gamma, eps)) / 2
    if cov_coeff:
        cov = covariance_penalty(c1, method, block_size, exponent, permutation)
        cov = cov + covariance_penalty(c2, method, block_size, exponent, permutation)
        loss = loss + cov_coeff * cov
    return loss
