r"""The relaxed penalties of Shigeto et al. (CVPR 2023, arXiv:2301.01569), in one place.

The features are split into g = ceil(d / b) blocks of b, and the b x b block (u, v) of a d x d
matrix M is summarised by its b sums along wrapped diagonals, s[u, v, k] (shift k; computed with
the FFT in ``circular.py``, without forming M). The relaxed penalty raises normalised sums
t = scale * s to the power q. Shift 0 of a diagonal block lies on M's diagonal and is left out.
The two losses normalise differently, as the authors' released code does:

- **VICReg** (``vicreg_block_scale``, ``mean_over_block_pairs``), for M = Zc^T Zc of one view:
  t = s / ((n - 1) * size(u, v)), where size is b, or the last block's true size, and the
  penalty is a *mean* over blocks::

      c_fft = mean_u sum_{k>=1} |t[u, u, k]|^q  +  2 * mean_{u<v} sum_k |t[u, v, k]|^q

  So at b = 1 it is not the exact covariance term: each sum is one entry K_ij of the covariance
  matrix, and c_fft = 2 / (d (d - 1)) * sum_{i!=j} K_ij^2 is 2 / (d - 1) times the exact
  (1 / d) * sum_{i!=j} K_ij^2 (q = 2).
- **Barlow Twins** (``barlow_twins_block_scale``, ``sum_over_block_pairs``), for M = A^T B of
  the standardised views: t = s / n, as the entries of C = A^T B / n, and the penalty is a *sum*
  over every shift of every block pair. At b = 1 each sum is one C_ij: the exact off-diagonal term.
"""

from __future__ import annotations

import torch


def _full(value: float, d: int, block_size: int, like: torch.Tensor) -> torch.Tensor:
    num_blocks = -(-d // block_size)
    return torch.full((num_blocks, num_blocks), value, dtype=like.dtype, device=like.device)


def vicreg_block_scale(n: int, d: int, block_size: int, like: torch.Tensor) -> torch.Tensor:
    """(g, g): 1 / ((n - 1) * size(u, v)), VICReg's normalisation of the sums of block pair (u, v);
    a pair that involves the zero-padded last block has that block's true size."""
    if d % block_size == 0:  # every block full: one value
        return _full(1 / ((n - 1) * block_size), d, block_size, like)
    num_blocks = -(-d // block_size)
    sizes = torch.full((num_blocks,), float(block_size), dtype=like.dtype, device=like.device)
    sizes[-1] = d - (num_blocks - 1) * block_size
    return 1 / ((n - 1) * torch.minimum(sizes[:, None], sizes[None, :]))


def barlow_twins_block_scale(n: int, d: int, block_size: int, like: torch.Tensor) -> torch.Tensor:
    """(g, g) filled with 1 / n: Barlow Twins' normalisation, the sums as sums of entries of C."""
    return _full(1 / n, d, block_size, like)


def block_power_sums(sums: torch.Tensor, exponent: float, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over shifts of ``|t|^q``, t = scale * s, for the wrapped-diagonal sums s (g, g, b) and
    the (g, g) normalisation of each pair of blocks.

    Returns ``pairs`` (g, g), every shift of each pair of blocks, and ``diagonal`` (g,), the shifts
    k >= 1 of each diagonal block. The sums are normalised before they are raised to q: raw sums of
    n*b products raised to a large q overflow float32. One pass over s, where indexing the blocks
    and summing would make several (g, g, b) copies, and as many again in the backward pass.
    """
    normalised = sums * scale[..., None]
    power = normalised.square() if exponent == 2 else normalised.abs().pow(exponent)
    return power.sum(-1), torch.diagonal(power, dim1=0, dim2=1)[1:].sum(0)


def mean_over_block_pairs(pairs: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """VICReg's relaxed penalty from ``block_power_sums``: the mean over diagonal blocks of their
    shifts k >= 1, plus twice the mean over the block pairs u < v of every shift."""
    num_blocks = pairs.shape[0]
    penalty = diagonal.sum() / num_blocks
    if num_blocks > 1:
        # (u, v) and (v, u) hold the same sums reversed: the upper triangle counted twice is the
        # whole off-diagonal part
        num_pairs = num_blocks * (num_blocks - 1) // 2
        penalty = penalty + 2 * torch.triu(pairs, diagonal=1).sum() / num_pairs
    return penalty


def sum_over_block_pairs(pairs: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """Barlow Twins' relaxed penalty from ``block_power_sums``: the sum over the diagonal blocks'
    shifts k >= 1 and every shift of every ordered pair of distinct blocks."""
    num_blocks = pairs.shape[0]
    penalty = diagonal.sum()
    if num_blocks > 1:
        penalty = penalty + pairs.masked_fill(torch.eye(num_blocks, dtype=torch.bool, device=pairs.device), 0).sum()
    return penalty


def vicreg_relaxed_penalty(sums: torch.Tensor, n: int, d: int, block_size: int, exponent: float) -> torch.Tensor:
    """VICReg's relaxed covariance penalty of one view from the sums (g, g, b) of Zc^T Zc over n rows."""
    scale = vicreg_block_scale(n, d, block_size, sums)
    return mean_over_block_pairs(*block_power_sums(sums, exponent, scale))


def barlow_twins_relaxed_penalty(sums: torch.Tensor, n: int, d: int, block_size: int, exponent: float) -> torch.Tensor:
    """Barlow Twins' relaxed off-diagonal penalty from the sums (g, g, b) of A^T B over n rows."""
    scale = barlow_twins_block_scale(n, d, block_size, sums)
    return sum_over_block_pairs(*block_power_sums(sums, exponent, scale))
