r"""The FFT relaxation of both losses in a few passes over the data: the fast single-process path.

The modular path -- ``permute_features``, then ``batch_standardize`` (Barlow Twins) or centring
(VICReg), then ``circular_blocks`` -- is the readable reference, and serves the distributed case.
This module computes the same values and gradients (the tests compare them, and both against
brute-force formulas) with far fewer passes over the (n, d) data. On a CPU the relaxation's time
is not the FFTs' but the memory traffic around them: at n = 256, d = 16384 a view is 16 MB, an
elementwise pass over it costs about a fifth of an FFT, and the modular path makes dozens.

Three things make it fast:

1. **Row chunks that stay in cache.** The rows go in chunks of about 4 MB of one view. A first
   pass reads each chunk for the per-feature statistics and gathers it into permuted order
   while it is in the CPU cache; a second centres and scales each chunk, transforms it and adds
   it to the cross-spectrum. The backward pass goes through the same chunks.
2. **The backward pass is written out.** With x = (z[:, perm] - mean) * scale and any upstream
   gradient gx whose batch mean is zero, dL/dz[:, perm] = scale * (gx - x * mean(gx * x)) for the
   standardisation (scale = 1/std) and gx for centring (scale = 1). The batch means of the
   gradients that reach x are zero analytically: they are circular products with the spectra of
   centred views, or multiples of the centred views themselves.
3. **One kernel per step of the chain rule.** The permutation is one gather each way, the spectra
   are saved from the forward pass, and every other step is an in-place update of a chunk.

On a GPU a single chunk (the whole batch) is used: there is no cache to stay in.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .circular import inverse_permutation, split_blocks
from .cross_correlation import BATCHNORM_EPS

CHUNK_BYTES = 4 * 2**20  # rows per chunk: about this much of one view, so a chunk's work stays in cache


def supported(z: torch.Tensor) -> bool:
    """The fused path handles float32 and float64 (half precision goes through the modular path)."""
    return z.dtype in (torch.float32, torch.float64)


def row_chunks(n: int, d: int, z: torch.Tensor) -> list[slice]:
    """Slices of rows of about ``CHUNK_BYTES`` each (on a GPU, a single slice)."""
    rows = n if z.device.type != "cpu" else max(1, CHUNK_BYTES // (d * z.element_size()))
    return [slice(start, min(start + rows, n)) for start in range(0, n, rows)]


def _column_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the rows as a matrix-vector product: on a CPU, BLAS is several times faster than
    ``sum(dim=0)``, whose reduction across rows runs one row at a time."""
    return x.new_ones(x.shape[0]) @ x


def _gather_with_stats(z: torch.Tensor, chunks: list[slice], permutation: torch.Tensor | None):
    """Per-feature mean and sum of squared deviations of z, and x = z[:, permutation], in one pass.

    The sums are taken of z - z[0] (the "shifted data" algorithm): with a sample as the shift,
    the subtraction of the squared mean loses no more digits than centring first would. Each
    chunk is read in order for the statistics first, so that the gather's scattered reads then
    hit the cache (gathering straight from memory takes twice as long). Without a permutation,
    x is left empty and ``_normalise`` reads z itself.
    """
    shift = z[0]
    total, squares = torch.zeros_like(shift), torch.zeros_like(shift)
    x = torch.empty_like(z)
    for rows in chunks:
        deviation = z[rows] - shift
        total += _column_sum(deviation)
        squares += _column_sum(deviation.square_())
        if permutation is not None:
            torch.gather(z[rows], 1, permutation.expand(rows.stop - rows.start, -1), out=x[rows])
    n = z.shape[0]
    return x, shift + total / n, (squares - total.square() / n).clamp_(min=0)


def _normalise(z, x, rows, permutation, mean, scale):
    """x[rows] = (z[rows][:, permutation] - mean) * scale, where x[rows] holds the gathered
    features already (``_gather_with_stats``) unless there is no permutation."""
    out = x[rows]
    if permutation is None:
        torch.sub(z[rows], mean, out=out)
    else:
        out.sub_(mean)
    return out if scale is None else out.mul_(scale)


def _scatter_back(grad, rows, inverse, out):
    """out[rows] = grad with the features put back in their original order."""
    if inverse is None:
        return out[rows].copy_(grad)
    return torch.gather(grad, 1, inverse.expand(grad.shape[0], -1), out=out[rows])


class _Spectra:
    """The block spectra of every row of one view, laid out for the sums that use them.

    One block (b = d): (n, 1, m), m = b // 2 + 1, and the sums over rows are elementwise
    products. Several blocks: (m, n, g), frequency first, so that each sum over rows or over
    blocks is a batched product of contiguous matrices (on permuted views, torch's CPU matrix
    product copies every matrix first and takes three times as long).
    """

    def __init__(self, z: torch.Tensor, block_size: int, data: torch.Tensor | None = None):
        n, d = z.shape
        self.block_size, self.d = block_size, d
        num_blocks, m = -(-d // block_size), block_size // 2 + 1
        self.single = num_blocks == 1
        if data is None:
            dtype = torch.complex128 if z.dtype == torch.float64 else torch.complex64
            data = torch.empty((n, 1, m) if self.single else (m, n, num_blocks), dtype=dtype, device=z.device)
        self.data = data

    def store(self, rows: slice, x: torch.Tensor) -> None:
        """Transform x, the (c, d) rows ``rows`` of the view, block by block (zero-padded)."""
        blocks = split_blocks(x, self.block_size)
        if self.single:
            torch.fft.rfft(blocks, dim=-1, out=self.data[rows])
        else:
            self.data[:, rows] = torch.fft.rfft(blocks, dim=-1).permute(2, 0, 1)

    def cross(self, other: _Spectra, rows: slice) -> torch.Tensor:
        """sum over ``rows`` of conj(self[n, u, f]) * other[n, v, f], in this class's layout."""
        if self.single:
            return torch.linalg.vecdot(self.data[rows], other.data[rows], dim=0)[None]  # vecdot conjugates
        return self.data[:, rows].mH @ other.data[:, rows]  # (m, g, g)

    def blocks_first(self, cross: torch.Tensor) -> torch.Tensor:
        """A cross-spectrum in this layout -> (g, g, m)."""
        return cross if self.single else cross.permute(1, 2, 0)

    def frequency_first(self, spectrum: torch.Tensor) -> torch.Tensor:
        """(g, g, m) -> this layout (the inverse of ``blocks_first``), contiguous and without a
        lazy conjugation, ready for the products of every chunk."""
        spectrum = spectrum if self.single else spectrum.permute(2, 0, 1)
        return spectrum.resolve_conj().contiguous()

    def mix(self, rows: slice, weights: torch.Tensor) -> torch.Tensor:
        """The spectra (c, g, m) of the rows' gradient: out[n, v] = sum_u W[u, v] F[n, u] per
        frequency, for the weights W in this layout (``frequency_first``)."""
        if self.single:
            return self.data[rows] * weights[0]
        # made contiguous here: the inverse FFT of the strided view is slower than the copy
        return (self.data[:, rows] @ weights).permute(1, 2, 0).contiguous()

    def signal(self, spectrum: torch.Tensor) -> torch.Tensor:
        """(c, g, m) spectra -> (c, d) real rows, dropping the padding of the last block."""
        return torch.fft.irfft(spectrum, n=self.block_size, dim=-1).flatten(1)[:, : self.d]


def _inverse(permutation: torch.Tensor | None) -> torch.Tensor | None:
    return None if permutation is None else inverse_permutation(permutation)


class RelaxedBarlowTwins(torch.autograd.Function):
    """(C_ii, s) of Barlow Twins' relaxation from the raw views, chunk by chunk.

    forward(z1, z2, permutation, block_size, chunks) returns
      c_diag (d,): sum_n a[n, i] * b[n, i] (n times C_ii), in the original feature order;
      sums (g, g, b): the wrapped-diagonal sums of the blocks of a^T b (``circular.py``);
    where a, b are the batch-standardised views (biased variance, eps 1e-5), features permuted.
    """

    @staticmethod
    def forward(ctx, z1, z2, permutation, block_size, chunks):
        n, d = z1.shape
        stats, views, spectra = [], [], []
        for z in (z1, z2):
            x, mean, squares = _gather_with_stats(z, chunks, permutation)
            stats += [mean, torch.rsqrt(squares / n + BATCHNORM_EPS)]
            views.append(x)
            spectra.append(_Spectra(z, block_size))
        (a, b), (f1, f2) = views, spectra
        permuted = stats if permutation is None else [s[permutation] for s in stats]
        c_diag, cross = z1.new_zeros(d), 0
        for rows in chunks:
            for z, x, f, mean, inv_std in zip((z1, z2), views, spectra, permuted[::2], permuted[1::2]):
                f.store(rows, _normalise(z, x, rows, permutation, mean, inv_std))
            c_diag += _column_sum(a[rows] * b[rows])
            cross = cross + f1.cross(f2, rows)
        inverse = _inverse(permutation)
        ctx.block_size, ctx.chunks = block_size, chunks
        ctx.save_for_backward(z1, z2, a, b, f1.data, f2.data, permutation, inverse, *stats)
        sums = torch.fft.irfft(f1.blocks_first(cross), n=block_size, dim=-1)
        return (c_diag if inverse is None else c_diag[inverse]), sums

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_diag, grad_sums):
        z1, z2, a, b, f1, f2, permutation, inverse, mean1, inv_std1, mean2, inv_std2 = ctx.saved_tensors
        n, d = a.shape
        f1, f2 = _Spectra(a, ctx.block_size, f1), _Spectra(b, ctx.block_size, f2)
        scales = (inv_std1, inv_std2) if permutation is None else (inv_std1[permutation], inv_std2[permutation])
        if permutation is not None:
            grad_diag = grad_diag[permutation]
        grad_spectrum = torch.fft.rfft(grad_sums, dim=-1)  # (g, g, m)
        # dL/dF1[n, u] = sum_v conj(G[u, v]) F2[n, v] and dL/dF2[n, v] = sum_u G[u, v] F1[n, u]
        weights = (f1.frequency_first(grad_spectrum.transpose(0, 1).conj()), f1.frequency_first(grad_spectrum))
        grads = (torch.empty_like(a), torch.empty_like(b))
        # dL/da = irfft(sum_v conj(G[u, v]) F2[v]) + b * grad_diag, and symmetrically for b. The
        # standardisation's backward, scale * (dL/da - a * mean(dL/da * a)), needs the mean over
        # all rows, so the first pass writes scale * dL/da and the second subtracts the rest.
        moments = [torch.zeros_like(grad_diag), torch.zeros_like(grad_diag)]
        for rows in ctx.chunks:
            mixed = (f2.mix(rows, weights[0]), f1.mix(rows, weights[1]))
            for spectrum, x, other, scale, moment, out in zip(mixed, (a, b), (b, a), scales, moments, grads):
                grad = f1.signal(spectrum).addcmul_(other[rows], grad_diag)
                moment += _column_sum(grad * x[rows])
                _scatter_back(grad.mul_(scale), rows, inverse, out)
        # Second pass, in the original feature order: scale * a * mean(dL/da * a), with
        # a = (z - mean) * inv_std, is z * k - mean * k for k = inv_std^2 * mean(dL/da * a).
        for z, mean, inv_std, moment, out in zip((z1, z2), (mean1, mean2), (inv_std1, inv_std2), moments, grads):
            k = inv_std.square() * (moment if inverse is None else moment[inverse]) / n
            shift = mean * k
            for rows in ctx.chunks:
                out[rows].addcmul_(z[rows], k, value=-1).add_(shift)
        return grads[0], grads[1], None, None, None


class RelaxedVICReg(torch.autograd.Function):
    """VICReg's three terms' statistics from the raw views, chunk by chunk.

    forward(z1, z2, permutation, block_size, chunks) returns
      squared_difference (): sum over all entries of (z1 - z2)^2 (n * d times the invariance term);
      squares (2, d): per view, sum_n (z[n, i] - mean_i)^2 ((n - 1) times the variance);
      sums (2, g, g, b): per view, the wrapped-diagonal sums of the blocks of Zc^T Zc, Zc the
      centred view with permuted features (``covariance.py`` normalises them).
    """

    @staticmethod
    def forward(ctx, z1, z2, permutation, block_size, chunks):
        stats = [_gather_with_stats(z, chunks, permutation) for z in (z1, z2)]
        views = [x for x, _, _ in stats]
        means = [mean if permutation is None else mean[permutation] for _, mean, _ in stats]
        spectra = [_Spectra(z1, block_size), _Spectra(z2, block_size)]
        mean_difference = means[0] - means[1]
        squared_difference, cross = z1.new_zeros(()), [0, 0]
        for rows in chunks:
            for k, (z, mean, x, f) in enumerate(zip((z1, z2), means, views, spectra)):
                f.store(rows, _normalise(z, x, rows, permutation, mean, None))
                cross[k] = cross[k] + f.cross(f, rows)
            # z1 - z2 in permuted order, from the centred chunks already in cache
            difference = (views[0][rows] - views[1][rows]).add_(mean_difference).flatten()
            squared_difference += difference @ difference
        ctx.block_size, ctx.chunks = block_size, chunks
        ctx.save_for_backward(*views, spectra[0].data, spectra[1].data, permutation, mean_difference)
        sums = torch.fft.irfft(torch.stack([spectra[0].blocks_first(c) for c in cross]), n=block_size, dim=-1)
        return squared_difference, torch.stack([squares for _, _, squares in stats]), sums

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_difference, grad_squares, grad_sums):
        x1, x2, f1, f2, permutation, mean_difference = ctx.saved_tensors
        f1, f2 = _Spectra(x1, ctx.block_size, f1), _Spectra(x2, ctx.block_size, f2)
        inverse = _inverse(permutation)
        if permutation is not None:
            grad_squares = grad_squares[:, permutation]
        # An auto-correlation's gradient is the sum of both circular products: G + G^H per frequency.
        grad_spectra = torch.fft.rfft(grad_sums, dim=-1)  # (2, g, g, m)
        weights = [f1.frequency_first(w) for w in grad_spectra + grad_spectra.transpose(1, 2).conj()]
        grads = (torch.empty_like(x1), torch.empty_like(x2))
        # The gradients that reach the centred views have batch mean zero (circular products with
        # centred views, multiples of them), so the centring's backward leaves them unchanged;
        # the invariance term is a function of the raw views and adds +-2 (z1 - z2) directly.
        for rows in ctx.chunks:
            difference = (x1[rows] - x2[rows]).add_(mean_difference).mul_(2 * grad_difference)
            for k, (x, f, sign, out) in enumerate(zip((x1, x2), (f1, f2), (1, -1), grads)):
                grad = f.signal(f.mix(rows, weights[k]))
                grad.addcmul_(x[rows], 2 * grad_squares[k]).add_(difference, alpha=sign)
                _scatter_back(grad, rows, inverse, out)
        return grads[0], grads[1], None, None, None
