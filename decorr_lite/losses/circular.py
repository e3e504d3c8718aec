r"""Circular (wrapped-diagonal) correlation: the building block of the FFT relaxation.

Shigeto, Shimbo, Yoshikawa, Takeuchi, "Learning Decorrelated Representations Efficiently Using
Fast Fourier Transform", CVPR 2023 (arXiv:2301.01569).

The features are split into g = ceil(d / b) blocks of b (the last one zero-padded to b). For
every pair of blocks (u, v) and every shift k, the relaxation works with the sum of the k-th
wrapped diagonal of the b x b block (u, v) of ``z1.T @ z2``::

    s[u, v, k] = sum_n sum_i z1[n, u*b + i] * z2[n, v*b + (i + k) % b]

For one sample this is the circular cross-correlation of two length-b vectors, which the
convolution theorem turns into a product of spectra:

    sum_i x[i] y[(i + k) % b] = irfft(conj(rfft(x)) * rfft(y))[k]

Summing over the samples commutes with the inverse transform, so we take ``rfft`` of every
block once, multiply spectra and sum over n (one batched matrix product per frequency), and
invert only the (g, g, b//2 + 1) result. Nothing of size d x d, or n x g x g x b, is formed:
memory O(n*d + g*g*b), time O(n*d*log b + n*d*g).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_block_size, check_pair


def split_blocks(z: torch.Tensor, block_size: int) -> torch.Tensor:
    """(n, d) -> (n, g, b): consecutive blocks of b features, the last one zero-padded."""
    n, d = z.shape
    num_blocks = -(-d // block_size)
    padding = num_blocks * block_size - d
    if padding:
        z = F.pad(z, (0, padding))
    return z.reshape(n, num_blocks, block_size)


def block_spectrum(z: torch.Tensor, block_size: int) -> torch.Tensor:
    """(n, d) -> (n, g, b//2 + 1): the real FFT of every block of features.

    FFTs run in at least float32: half-precision FFTs are unsupported on CPU and limited to
    powers of two on GPU.
    """
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    return torch.fft.rfft(split_blocks(z, block_size), dim=-1)


def circular_from_spectra(f1: torch.Tensor, f2: torch.Tensor, block_size: int) -> torch.Tensor:
    """Wrapped-diagonal sums (g, g, b) from two block spectra (n, g, b//2 + 1).

    Pass the same tensor twice for an auto-correlation (one FFT saved).
    """
    # cross[f, u, v] = sum_n conj(f1[n, u, f]) * f2[n, v, f]: one (g x n) @ (n x g) per frequency.
    cross = torch.matmul(f1.permute(2, 1, 0).conj(), f2.permute(2, 0, 1))
    return torch.fft.irfft(cross.permute(1, 2, 0), n=block_size, dim=-1)


def circular_correlation(
    z1: torch.Tensor, z2: torch.Tensor, block_size: int | None = None, *, check_finite: bool = True
) -> torch.Tensor:
    r"""Sums of the wrapped diagonals of every b x b block of ``z1.T @ z2``.

    .. math:: s[u, v, k] = \sum_n \sum_{i<b} z_1[n, ub + i]\, z_2[n, vb + (i + k) \bmod b]

    Args:
        z1, z2: (n, d) floating tensors (no centring or scaling is applied here).
        block_size: b in [1, d]; None means b = d (a single block, the fully relaxed case).
            The last of the g = ceil(d / b) blocks is zero-padded to b when b does not divide d.

    Returns:
        (g, g, b) tensor; ``s[u, u, 0]`` is the trace of diagonal block u, and with b = 1,
        ``s[:, :, 0] == z1.T @ z2``.

    Cost: O(n*d*log b) for the FFTs plus O(n*d*g) for the per-frequency products; memory
    O(n*d + g*g*b). Differentiable.
    """
    check_pair(z1, z2, check_finite=check_finite)
    b = check_block_size(block_size, z1.shape[1])
    f1 = block_spectrum(z1, b)
    f2 = f1 if z2 is z1 else block_spectrum(z2, b)
    return circular_from_spectra(f1, f2, b)
