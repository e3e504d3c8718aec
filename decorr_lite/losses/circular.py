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

from ._checks import check_block_size, check_not_transformed, check_pair, check_result, first_order
from ._precision import full_precision, upcast


def split_blocks(z: torch.Tensor, block_size: int) -> torch.Tensor:
    """(n, d) -> (n, g, b): consecutive blocks of b features, the last one zero-padded."""
    n, d = z.shape
    num_blocks = -(-d // block_size)
    padding = num_blocks * block_size - d
    if padding:
        z = F.pad(z, (0, padding))
    return z.reshape(n, num_blocks, block_size)


def inverse_permutation(permutation: torch.Tensor) -> torch.Tensor:
    """The permutation q with q[permutation[i]] = i, so that x[:, p][:, q] == x."""
    inverse = torch.empty_like(permutation)
    inverse[permutation] = torch.arange(permutation.numel(), device=permutation.device)
    return inverse


class _PermuteFeatures(torch.autograd.Function):
    """``z[:, permutation]`` whose backward gathers with the inverse permutation.

    Indexing's own backward scatters into a zero-filled buffer; a permutation's gradient is
    just the inverse permutation, a gather, which is several times faster. (``torch.gather``
    with an expanded index is the fastest column gather on CPU.)
    """

    @staticmethod
    def forward(ctx, z, permutation):
        ctx.save_for_backward(permutation)
        return torch.gather(z, 1, permutation.expand(z.shape[0], -1))

    @staticmethod
    @first_order('The FFT relaxation (method="fft")')
    def backward(ctx, grad):
        (permutation,) = ctx.saved_tensors
        inverse = inverse_permutation(permutation)
        return torch.gather(grad, 1, inverse.expand(grad.shape[0], -1)), None


def permute_features(z: torch.Tensor, permutation: torch.Tensor | None) -> torch.Tensor:
    """Reorder the columns of z (a no-op for None)."""
    return z if permutation is None else _PermuteFeatures.apply(z, permutation)


class _CircularCorrelation(torch.autograd.Function):
    """s[u, v, k] = sum_n sum_i x1[n, u, i] x2[n, v, (i + k) % b] for blocks x1, x2 of shape (n, g, b).

    With F = rfft of the blocks, the forward is cross[u, v, f] = sum_n conj(F1[n, u, f]) F2[n, v, f]
    followed by one irfft. The backward is again a pair of circular products, done in the
    frequency domain with the spectra saved by the forward (G = rfft of the incoming gradient)::

        dL/dx1[n, u] = irfft( sum_v conj(G[u, v]) * F2[n, v] )    (a circular correlation)
        dL/dx2[n, v] = irfft( sum_u G[u, v] * F1[n, u] )          (a circular convolution)

    Written out because autograd through complex intermediates is several times slower on the
    CPU, and because it keeps the memory at the spectra, O(n*d). With several blocks the spectra
    are laid out by frequency, (m, n, g), so that each sum over n or over blocks is one batched
    matrix product per frequency.
    """

    @staticmethod
    def forward(ctx, x1, x2):
        length, single_block = x1.shape[-1], x1.shape[1] == 1
        ctx.empty = x1.shape[0] == 0
        if ctx.empty:  # a rank without rows in a distributed batch adds nothing (MKL rejects empty FFTs)
            ctx.same = x2 is x1
            return x1.new_zeros(x1.shape[1], x2.shape[1], length)
        f1 = torch.fft.rfft(x1, dim=-1)
        f2 = f1 if x2 is x1 else torch.fft.rfft(x2, dim=-1)  # an auto-correlation needs one FFT
        if single_block:
            # b = d, the usual fully relaxed case: a product and a sum over the batch.
            cross = (f1.conj() * f2).sum(dim=0, keepdim=True)  # (1, 1, m)
        else:
            f1 = f1.permute(2, 0, 1).contiguous()  # (m, n, g)
            f2 = f1 if x2 is x1 else f2.permute(2, 0, 1).contiguous()
            cross = (f1.mH @ f2).permute(1, 2, 0)  # (m, g, g) -> (g, g, m)
        ctx.length, ctx.same, ctx.single_block = length, x2 is x1, single_block
        ctx.save_for_backward(f1, f2)
        return torch.fft.irfft(cross, n=length, dim=-1)

    @staticmethod
    @first_order('The FFT relaxation (method="fft")')
    def backward(ctx, grad):
        if ctx.empty:
            return grad.new_zeros(0, grad.shape[0], grad.shape[2]), None if ctx.same else grad.new_zeros(
                0, grad.shape[1], grad.shape[2]
            )
        f1, f2 = ctx.saved_tensors
        g = torch.fft.rfft(grad, dim=-1)  # (g, g, m)
        if not ctx.single_block:
            g = g.permute(2, 0, 1)  # (m, g, g): one matrix product per frequency below
        if ctx.same:
            # Auto-correlation: both terms are products with the same spectrum, so they add up
            # before the (single) inverse transform.
            mixed = f1 * (g[0] + g[0].conj()) if ctx.single_block else (f1 @ (g.mH + g)).permute(1, 2, 0)
            return torch.fft.irfft(mixed, n=ctx.length, dim=-1), None
        if ctx.single_block:
            mixed1, mixed2 = f2 * g[0].conj(), f1 * g[0]  # (n, 1, m)
        else:
            mixed1 = (f2 @ g.mH).permute(1, 2, 0)  # sum_v conj(G[u, v]) F2[n, v] -> (n, g, m)
            mixed2 = (f1 @ g).permute(1, 2, 0)  # sum_u G[u, v] F1[n, u]
        return torch.fft.irfft(mixed1, n=ctx.length, dim=-1), torch.fft.irfft(mixed2, n=ctx.length, dim=-1)


def circular_blocks(z1: torch.Tensor, z2: torch.Tensor, block_size: int) -> torch.Tensor:
    """Wrapped-diagonal sums (g, g, b) of already-checked (n, d) inputs (z2 may be z1).

    The losses upcast half precision before they get here (``_precision.py``): half-precision
    FFTs are unsupported on CPU and limited to powers of two on GPU.
    """
    x1 = split_blocks(z1, block_size)
    x2 = x1 if z2 is z1 else split_blocks(z2, block_size)
    return _CircularCorrelation.apply(x1, x2)


def circular_correlation(
    z1: torch.Tensor, z2: torch.Tensor, block_size: int | None = None, *, check_finite: bool = True
) -> torch.Tensor:
    r"""Sums of the wrapped diagonals of every b x b block of ``z1.T @ z2``.

    .. math:: s[u, v, k] = \sum_n \sum_{i<b} z_1[n, ub + i]\, z_2[n, vb + (i + k) \bmod b]

    Args:
        z1, z2: (n, d) floating tensors (no centring or scaling is applied here).
        block_size: b in [1, d]; None means b = d (a single block, the fully relaxed case).
            The last of the g = ceil(d / b) blocks is zero-padded to b when b does not divide d.
        check_finite: reject NaN/Inf in the inputs (a full pass over the data), and sums that
            overflow the dtype although the inputs are finite (with ``check_finite=False``
            they come back as inf or NaN).

    Returns:
        (g, g, b) tensor (float32 for half-precision input); ``s[u, u, 0]`` is the trace of diagonal block u, and with b = 1,
        ``s[:, :, 0] == z1.T @ z2``.

    Cost: O(n*d*log b) for the FFTs plus O(n*d*g) for the per-frequency products; memory
    O(n*d + g*g*b). Differentiable.
    """
    check_pair(z1, z2, check_finite=check_finite)
    check_not_transformed(z1, "circular_correlation")
    block_size = check_block_size(block_size, z1.shape[1])
    with full_precision(z1.device):
        sums = circular_blocks(upcast(z1), upcast(z2), block_size)
    if check_finite:
        growth = "the sums grow as the square of the inputs' scale"
        check_result({"sums": sums}, "circular_correlation", {"z1": z1, "z2": z2}, growth)
    return sums
