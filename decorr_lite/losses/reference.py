r"""The FFT relaxation in plain autograd, short enough to read against the paper.

Shigeto, Shimbo, Yoshikawa, Takeuchi, *Learning Decorrelated Representations Efficiently Using
Fast Fourier Transform*, CVPR 2023 (arXiv:2301.01569). The library computes the same numbers
twice over, faster: ``impl="modular"`` (circular.py, covariance.py, barlow_twins.py) and
``impl="fused"`` (_fused.py). The tests check both against these functions, which are written
for reading, not for speed: they form every block's sums with one einsum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def wrapped_diagonal_sums(a: torch.Tensor, b: torch.Tensor, block_size: int) -> torch.Tensor:
    """s[u, v, k] = sum_n sum_i a[n, u*b + i] * b[n, v*b + (i + k) % b], shape (g, g, b): the sums
    along the wrapped diagonals of the b x b blocks of a^T b (features zero-padded to g*b)."""
    n, d = a.shape
    g = -(-d // block_size)
    a = F.pad(a, (0, g * block_size - d)).view(n, g, block_size)
    b = F.pad(b, (0, g * block_size - d)).view(n, g, block_size)
    # one sample's circular cross-correlation is irfft(conj(rfft(x)) * rfft(y)) (convolution theorem)
    cross = torch.einsum("nuf,nvf->uvf", torch.fft.rfft(a, dim=-1).conj(), torch.fft.rfft(b, dim=-1))
    return torch.fft.irfft(cross, n=block_size, dim=-1)


def _penalised(t: torch.Tensor, exponent: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``|t|^q`` summed per pair of blocks (g, g), with shift 0 of the diagonal blocks (the matrix's
    own diagonal) left out."""
    g = t.shape[0]
    keep = torch.ones_like(t)
    keep[range(g), range(g), 0] = 0
    return (t.abs().pow(exponent) * keep).sum(-1), torch.eye(g, dtype=torch.bool, device=t.device)


def relaxed_covariance(
    z: torch.Tensor, block_size: int | None = None, exponent: float = 2, permutation: torch.Tensor | None = None
) -> torch.Tensor:
    """VICReg's relaxed covariance term of one view (n, d), normalised as the authors' code:
    t = s / ((n - 1) * size) (size: b, or the true size of a padded last block), then the mean over
    diagonal blocks plus twice the mean over pairs u < v of ``sum_k |t|^q``."""
    n, d = z.shape
    b = block_size or d
    z = z - z.mean(dim=0)
    if permutation is not None:
        z = z[:, permutation]
    g = -(-d // b)
    sizes = torch.tensor([min(b, d - u * b) for u in range(g)], dtype=z.dtype)
    t = wrapped_diagonal_sums(z, z, b) / ((n - 1) * torch.minimum(sizes[:, None], sizes[None, :]))[..., None]
    pairs, diagonal = _penalised(t, exponent)
    penalty = pairs[diagonal].mean()
    return penalty + (2 * pairs.triu(1).sum() / (g * (g - 1) / 2) if g > 1 else 0)


def relaxed_barlow_twins_off_diagonal(
    z1: torch.Tensor,
    z2: torch.Tensor,
    block_size: int | None = None,
    exponent: float = 2,
    permutation: torch.Tensor | None = None,
) -> torch.Tensor:
    """Barlow Twins' relaxed off-diagonal term: the views standardised per feature (biased
    variance, eps 1e-5, as BatchNorm), t = s / n, and sum ``|t|^q`` over every penalised sum."""
    n, d = z1.shape
    a, b = ((z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + 1e-5) for z in (z1, z2))
    if permutation is not None:
        a, b = a[:, permutation], b[:, permutation]
    pairs, _ = _penalised(wrapped_diagonal_sums(a, b, block_size or d) / n, exponent)
    return pairs.sum()
