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

from ._checks import check_not_transformed, check_pair, first_order
from ._magnitude import branch_free, downscale, guard, moderate, peaks, scaled_eps
from ._precision import full_precision, upcast

BATCHNORM_EPS = 1e-5


class _BatchStandardize(torch.autograd.Function):
    """A = (z - mean) / sqrt(biased var + eps), with batch norm's closed-form backward.

    For an upstream gradient G: dL/dz = r * (G - mean(G) - A * mean(G * A)), r = 1/sqrt(var + eps),
    means over the batch. Four passes over the data instead of the dozen that autograd takes
    for the composite expression (and which dominate the FFT-relaxed loss's time on a CPU).

    At a magnitude where the variance would overflow (``_magnitude.py``), z * down is
    standardised instead, down a power of two per feature (the same numbers, exactly), and the
    gradient with respect to z is down times that with respect to z * down.
    """

    @staticmethod
    def forward(ctx, z, eps):
        down = guard(z) if branch_free(z) else None  # decided up front, without a branch
        if down is not None:
            z, eps = z * down, scaled_eps(eps, down)
        centred = z - z.mean(dim=0)
        variance = centred.pow(2).mean(dim=0)  # biased, as BatchNorm
        if down is None and not moderate(variance):
            down = downscale(peaks(z))
            z = z * down
            centred = z - z.mean(dim=0)
            variance, eps = centred.pow(2).mean(dim=0), scaled_eps(eps, down)
        inv_std = torch.rsqrt(variance + eps)
        a = centred * inv_std
        ctx.save_for_backward(a, inv_std, down)
        return a

    @staticmethod
    @first_order("Barlow Twins' batch standardisation")
    def backward(ctx, grad):
        a, inv_std, down = ctx.saved_tensors
        grad = inv_std * (grad - grad.mean(dim=0) - a * (grad * a).mean(dim=0))
        return grad if down is None else grad * down, None


def batch_standardize(z: torch.Tensor, eps: float = BATCHNORM_EPS) -> torch.Tensor:
    """Per-feature standardisation over the batch, as BatchNorm1d(affine=False) in training mode."""
    return _BatchStandardize.apply(z, eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, *, check_finite: bool = True) -> torch.Tensor:
    """d x d cross-correlation matrix C of the batch-standardised views.

    Args:
        z1, z2: (n, d) embeddings of the two views.
        check_finite: reject NaN/Inf (a full pass over the data; training loops may skip it).

    Returns:
        (d, d) tensor (float32 for half-precision input). Cost O(n*d^2) time, O(d^2) memory.
    """
    check_pair(z1, z2, check_finite=check_finite)
    check_not_transformed(z1, "cross_correlation")
    with full_precision(z1.device):
        return batch_standardize(upcast(z1)).T @ batch_standardize(upcast(z2)) / z1.shape[0]
