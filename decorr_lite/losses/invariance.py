r"""VICReg's invariance term (Bardes, Ponce, LeCun, ICLR 2022).

.. math:: s(Z_1, Z_2) = \frac{1}{n d} \sum_{n, i} (z_{1,ni} - z_{2,ni})^2

the mean squared error between the embeddings of the two views, as ``F.mse_loss``.
"""

from __future__ import annotations

import torch

from ._checks import check_pair, check_result
from ._precision import full_precision, upcast


def invariance_loss(z1: torch.Tensor, z2: torch.Tensor, *, check_finite: bool = True) -> torch.Tensor:
    """Mean squared error between two views' embeddings.

    Args:
        z1, z2: (n, d) embeddings of the two views of the same n samples.
        check_finite: reject NaN/Inf in the inputs (a full pass over the data; training loops
            may skip it), and a value that overflows the dtype although they are finite (with
            ``check_finite=False`` it comes back as inf).

    Returns:
        0-dim tensor (float32 for half-precision input, as every loss here). Cost O(n*d).
    """
    check_pair(z1, z2, check_finite=check_finite)
    with full_precision(z1.device):
        value = (upcast(z1) - upcast(z2)).pow(2).mean()
    if check_finite:
        growth = "the mean squared difference grows as the square of the embeddings' scale"
        check_result({"invariance": value}, "invariance_loss", {"z1": z1, "z2": z2}, growth)
    return value
