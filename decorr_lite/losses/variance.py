r"""VICReg's variance term (Bardes, Ponce, LeCun, ICLR 2022).

.. math:: v(Z) = \frac{1}{d} \sum_{i=1}^{d} \max\left(0,\ \gamma - \sqrt{\mathrm{Var}(z_{:,i}) + \epsilon}\right)

with the unbiased variance over the batch: a hinge that keeps every dimension's standard
deviation above the margin gamma, which prevents complete collapse (all embeddings equal).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_embeddings, check_eps, check_positive, check_result
from ._distributed import all_reduce_sum
from ._precision import full_precision, upcast


def variance_penalty(centred: torch.Tensor, gamma: float, eps: float, global_n: int | None = None) -> torch.Tensor:
    """The hinge itself, on already-checked, centred input (shared with ``vicreg_loss``).
    ``global_n``: ``centred`` is this rank's rows of a global batch of ``global_n`` rows,
    centred with the global mean."""
    # unbiased variance from the centred values (torch.var's column reduction is slow on CPU)
    squares, n = centred.pow(2).sum(dim=0), centred.shape[0]
    if global_n is not None:
        squares, n = all_reduce_sum(squares), global_n
    return hinge_from_squares(squares, n, gamma, eps)


def hinge_from_squares(squares: torch.Tensor, n: int, gamma: float, eps: float) -> torch.Tensor:
    """The hinge from the per-feature sums of squared deviations over n rows, shape (..., d)."""
    std = torch.sqrt(squares / (n - 1) + eps)
    return F.relu(gamma - std).mean(dim=-1)


def variance_loss(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4, *, check_finite: bool = True) -> torch.Tensor:
    """Hinge on the per-dimension standard deviation of one branch.

    Args:
        z: (n, d) embeddings of one view.
        gamma: the margin on the standard deviation (> 0).
        eps: added to the variance before the square root, for a finite gradient at 0 (> 0).
        check_finite: reject NaN/Inf in z (a full pass over the data; training loops may skip
            it), and a NaN value although z is finite (with ``check_finite=False`` it comes back).

    Returns:
        0-dim tensor (float32 for half-precision input, as every loss here). Cost O(n*d).
    """
    check_embeddings(z, "z", check_finite=check_finite)
    check_positive(gamma, "gamma")
    check_eps(eps)
    with full_precision(z.device):
        z = upcast(z)
        value = variance_penalty(z - z.mean(dim=0), gamma, eps)
    if check_finite:  # NaN where the batch mean itself overflows (an inf variance is a hinge of 0)
        check_result({"variance": value}, "variance_loss", {"z": z}, "its batch mean is a sum of n entries")
    return value
