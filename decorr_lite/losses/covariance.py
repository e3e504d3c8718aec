r"""VICReg's covariance term, exact and FFT-relaxed.

Exact (Bardes, Ponce, LeCun, ICLR 2022), for one branch with centred embeddings Z (n x d):

.. math:: K = \frac{Z^\top Z}{n - 1}, \qquad c(Z) = \frac{1}{d} \sum_{i \ne j} |K_{ij}|^q

q = 2 in VICReg. Relaxed (Shigeto et al., CVPR 2023, arXiv:2301.01569): features are split into
g = ceil(d / b) blocks of b, and instead of every off-diagonal entry, the sums of wrapped
diagonals s[u, v, k] of each b x b block of Z^T Z are penalised (see ``circular.py``),
normalised exactly as the authors' released code does (``relaxed.py``)::

    t[u, v, k] = s[u, v, k] / ((n - 1) * size(u, v))        size = b, or the last block's true
                                                             size if u or v is the last block
    c_fft(Z)   = mean_u sum_{k>=1} |t[u, u, k]|^q  +  2 * mean_{u<v} sum_k |t[u, v, k]|^q

A mean over block pairs: at b = 1 this is 2 / (d - 1) times the exact term (q = 2), not the
exact term itself.

A random feature permutation applied before blocking (a fresh one every training step) stops
the network from hiding correlations that cancel inside a sum.
"""

from __future__ import annotations

import torch

from ._checks import check_decorrelation_options, check_embeddings, check_not_transformed, check_result
from ._distributed import all_reduce_sum
from ._matrix import off_diagonal, power_sum
from ._precision import full_precision, upcast
from .circular import circular_blocks, permute_features
from .relaxed import vicreg_relaxed_penalty

GROWTH = "the covariance term grows as the fourth power of the embeddings' scale"


def covariance_penalty(
    zc: torch.Tensor,
    method: str,
    block_size: int,
    exponent: float,
    permutation: torch.Tensor | None,
    global_n: int | None = None,
) -> torch.Tensor:
    """The penalty on already-checked, centred input (shared with ``vicreg_loss``).

    ``global_n`` (``"fft"`` only): ``zc`` is this rank's rows of a global batch of ``global_n``
    rows, centred with the global mean; the sums of wrapped diagonals are all-reduced over the
    ranks (``_distributed.py``).
    """
    if global_n is not None:
        if method != "fft":
            raise ValueError("a distributed exact or gram penalty needs the gathered rows, not sums")
        return _relaxed_penalty(zc, block_size, exponent, permutation, global_n)
    n, d = zc.shape
    if method == "exact":
        cov = zc.T @ zc / (n - 1)
        return power_sum(off_diagonal(cov), exponent) / d
    if method == "gram":
        # ||Zc^T Zc||_F^2 = ||Zc Zc^T||_F^2: an n x n matrix instead of d x d. Then subtract the
        # diagonal (the variances), which costs O(n*d).
        gram = zc @ zc.T
        variances = zc.pow(2).sum(dim=0) / (n - 1)
        # the subtraction can round a true 0 below it: the sum of squares is never negative
        return ((gram.pow(2).sum() / (n - 1) ** 2 - variances.pow(2).sum()) / d).clamp(min=0)
    return _relaxed_penalty(zc, block_size, exponent, permutation)


def _relaxed_penalty(
    zc: torch.Tensor, block_size: int, exponent: float, permutation: torch.Tensor | None, global_n: int | None = None
) -> torch.Tensor:
    n, d = zc.shape
    zc = permute_features(zc, permutation)
    sums = circular_blocks(zc, zc, block_size)  # (g, g, b); one FFT: zc is zc
    if global_n is not None:  # a sum over samples: add up the ranks' sums, O(g*g*b) numbers
        sums, n = all_reduce_sum(sums), global_n
    return vicreg_relaxed_penalty(sums, n, d, block_size, exponent)


def covariance_loss(
    z: torch.Tensor,
    *,
    method: str = "exact",
    block_size: int | None = None,
    exponent: float = 2,
    permutation: torch.Tensor | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """Decorrelation penalty of one branch (VICReg's covariance term).

    Args:
        z: (n, d) embeddings of one view; centred here.
        method: ``"exact"`` forms the d x d covariance: O(n*d^2) time, O(d^2) memory.
            ``"gram"`` gives the same value through the n x n Gram matrix: O(n^2*d) time,
            O(n^2) memory, faster when n < d (exponent must be 2; in float32 with n >> d and
            nearly decorrelated embeddings the subtraction of the diagonal loses digits).
            ``"fft"`` is the relaxation of Shigeto et al. (CVPR 2023): O(n*d*log b + n*d*g)
            time, O(n*d + g^2*b) memory, with g = ceil(d / b).
        block_size: b in [1, d] for ``"fft"``; None means b = d (fully relaxed).
        exponent: q >= 1 in ``|.|^q`` (2 in VICReg; the relaxation also uses 1).
        permutation: a permutation of range(d) applied to the features before blocking
            (``"fft"`` only; the exact value does not depend on it). Draw a fresh one per step.
        check_finite: reject NaN/Inf in z (a full pass over the data; training loops may skip
            it), and a value that overflows the dtype although z is finite (with
            ``check_finite=False`` it comes back as inf or NaN).

    Returns:
        0-dim tensor, float32 for half-precision input (computed in float32, also under autocast).
    """
    check_embeddings(z, "z", check_finite=check_finite)
    d = z.shape[1]
    method, block_size, exponent, permutation = check_decorrelation_options(
        method, block_size, exponent, permutation, d, z.device
    )
    if method == "fft":
        check_not_transformed(z, 'covariance_loss with method="fft"')
    with full_precision(z.device):
        z = upcast(z)
        value = covariance_penalty(z - z.mean(dim=0), method, block_size, exponent, permutation)
    if check_finite:
        check_result({"covariance": value}, "covariance_loss", {"z": z}, GROWTH)
    return value
