r"""The Barlow Twins cross-correlation matrix (Zbontar et al., ICML 2021).

Each view is standardised per feature over the batch, exactly as ``BatchNorm1d(affine=False)``
in training mode does (biased variance, eps = 1e-5):

.. math:: A = \frac{Z_1 - \bar Z_1}{\sqrt{\mathrm{Var}_b(Z_1) + \epsilon}}, \quad
          B = \frac{Z_2 - \bar Z_2}{\sqrt{\mathrm{Var}_b(Z_2) + \epsilon}}, \quad
          C = \frac{A^\top B}{n}

C is d x d with C_ii close to the correlation of feature i across the two views.
"""

from __future__ import annotations

import torch

from ._checks import check_pair

BATCHNORM_EPS = 1e-5


def batch_standardize(z: torch.Tensor, eps: float = BATCHNORM_EPS) -> torch.Tensor:
    """Per-feature standardisation over the batch, as BatchNorm1d(affine=False) in training mode."""
    mean = z.mean(dim=0)
    var = z.var(dim=0, unbiased=False)
    return (z - mean) / torch.sqrt(var + eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, *, check_finite: bool = True) -> torch.Tensor:
    """d x d cross-correlation matrix C of the batch-standardised views.

    Args:
        z1, z2: (n, d) embeddings of the two views.
        check_finite: reject NaN/Inf (a full pass over the data; training loops may skip it).

    Returns:
        (d, d) tensor. Cost O(n*d^2) time, O(d^2) memory.
    """
    check_pair(z1, z2, check_finite=check_finite)
    return batch_standardize(z1).T @ batch_standardize(z2) / z1.shape[0]
