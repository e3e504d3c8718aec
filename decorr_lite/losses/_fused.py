r"""The FFT relaxation of both losses in a few passes over the data: the fast single-process path.

The modular path -- ``permute_features``, then ``batch_standardize`` (Barlow Twins) or centring
(VICReg), then ``circular_blocks`` -- is the readable reference, and serves the distributed case.
This module computes the same values and gradients (the tests compare them, and both against
brute-force formulas) with far fewer passes over the (n, d) data. On a CPU the relaxation's time
is not the FFTs' but the memory traffic around them: at n = 256, d = 16384 a view is 16 MB, a
pass over it from memory costs about a third of an FFT, and the modular path makes dozens.

What makes it fast:

1. **Row chunks that stay in cache.** The rows go in chunks of about 4 MB of one view; each
   chunk is gathered into permuted order, transformed and added to the cross-spectrum while it
   is in the CPU cache, and the backward pass goes through the same chunks.
2. **VICReg reads its views once.** It transforms x' = z[:, perm] - z[0, perm], the views
   shifted by a sample, and centres afterwards: the spectra of the centred rows are F' - M', M'
   the spectrum of the mean of x', so the cross-spectrum is sum_n F'^H F' - n M'^H M'. Shifting
   by a sample first (the "shifted data" algorithm) keeps that subtraction as accurate as
   centring first. Barlow Twins scales every feature by its own std, which has no such
   shortcut: it reads the views once for the statistics and once to standardise them.
3. **The backward pass is written out.** With x = (z[:, perm] - mean) * scale and any upstream
   gradient gx whose batch mean is zero, dL/dz[:, perm] = scale * (gx - x * mean(gx * x)) for the
   standardisation (scale = 1/std) and gx for centring (scale = 1). The batch means of the
   gradients that reach x are zero analytically: they are circular products with the spectra of
   centred views, or multiples of the centred views themselves. Terms that are the same in
   every row (VICReg's mean and shift) are added to the spectrum before the inverse FFT, which
   adds them for free.
4. **No fresh memory where it can be reused.** When autograd frees the graph after the backward
   pass (no ``retain_graph``), the backward pass writes the gradients into the buffers that the
   forward pass saved, and mixes the spectra in place (one block): a fresh page costs a fault on
   first touch, which on a virtual machine costs more than the arithmetic on it
   (``benchmarks/fused_vs_modular.py`` counts them).
5. **No inverse FFT of the sums for q = 2.** The penalties need, per pair of blocks, the sum over
   shifts of s^2, which by Parseval's theorem is a weighted sum over frequencies of |S|^2: it is
   read off the cross-spectrum, and the gradient with respect to S, 2 * weight * S, is made
   there too. With g blocks this saves the transforms of g * g * b numbers each way
   (``_power_sums``).

On a GPU a single chunk (the whole batch) is used: there is no cache to stay in.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._checks import first_order
from ._magnitude import branch_free, downscale, guard, moderate, peaks, scaled_eps
from .circular import inverse_permutation, split_blocks
from .cross_correlation import BATCHNORM_EPS
from .relaxed import block_power_sums

CHUNK_BYTES = 4 * 2**20  # rows per chunk: about this much of one view, so a chunk's work stays in cache


def row_chunks(n: int, d: int, z: torch.Tensor) -> list[slice]:
    """Slices of rows of about ``CHUNK_BYTES`` each (on a GPU, a single slice)."""
    rows = n if z.device.type != "cpu" else max(1, CHUNK_BYTES // (d * z.element_size()))
    return [slice(start, min(start + rows, n)) for start in range(0, n, rows)]


def _column_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the rows as a matrix-vector product: on a CPU, BLAS is several times faster than
    ``sum(dim=0)``, whose reduction across rows runs one row at a time."""
    return x.new_ones(x.shape[0]) @ x


def _graph_freed_after_backward() -> bool:
    """Whether autograd frees the graph after the backward pass now running (no ``retain_graph``),
    so that the backward pass may overwrite what the forward pass saved. False where torch does
    not say (the function is private): then nothing is overwritten."""
    keep_graph = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return keep_graph is not None and not keep_graph()


def _permuted_rows(z, rows, permutation, out):
    """out = z[rows][:, permutation] (or a copy of the rows without a permutation)."""
    if permutation is None:
        return out.copy_(z[rows])
    return torch.gather(z[rows], 1, permutation.expand(rows.stop - rows.start, -1), out=out)


def _statistics(z: torch.Tensor, chunks: list[slice]):
    """Per-feature mean and sum of squared deviations of z, one pass over it.

    The sums are taken of z - z[0] (the "shifted data" algorithm): with a sample as the shift,
    the subtraction of the squared mean loses no more digits than centring first would.
    """
    shift = z[0]
    total, squares = torch.zeros_like(shift), torch.zeros_like(shift)
    for rows in chunks:
        deviation = z[rows] - shift
        total += _column_sum(deviation)
        squares += _column_sum(deviation.square_())
    n = z.shape[0]
    return shift + total / n, (squares - total.square() / n).clamp_(min=0)


def _scatter_back(grad, rows, inverse, out):
    """out[rows] = grad with the features put back in their original order."""
    if inverse is None:
        return out[rows].copy_(grad)
    return torch.gather(grad, 1, inverse.expand(grad.shape[0], -1), out=out[rows])


class _OneBlock:
    """The layout of b = d: spectra (c, 1, m), m = b // 2 + 1, the FFT's own output (writing the
    FFT into a slice of a preallocated tensor, ``out=``, costs two extra copies); the sums over
    rows are elementwise products, and a cross-spectrum is (1, 1, m)."""

    @staticmethod
    def arrange(spectra: torch.Tensor) -> torch.Tensor:
        """(c, g, m) spectra as the FFT gives them -> this layout."""
        return spectra

    @staticmethod
    def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """sum over rows of conj(a[n, u, f]) * b[n, v, f]."""
        return torch.linalg.vecdot(a, b, dim=0)[None]  # vecdot conjugates its first argument

    @staticmethod
    def frequency_first(cross: torch.Tensor) -> torch.Tensor:
        """A cross-spectrum in this layout -> (m, g, g), a view."""
        return cross.permute(2, 0, 1)

    @staticmethod
    def from_frequency_first(spectrum: torch.Tensor) -> torch.Tensor:
        """(m, g, g) -> this layout: the inverse of ``frequency_first``."""
        return spectrum.permute(1, 2, 0)

    @staticmethod
    def apply(spectra: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """out[n, v] = sum_u spectra[n, u] W[u, v], per frequency."""
        return spectra * weights

    @staticmethod
    def mix(spectra, weights, constant, overwrite: bool) -> torch.Tensor:
        """``apply`` plus ``constant``, as (c, g, m) spectra; ``overwrite`` writes over ``spectra``."""
        if constant is None:
            return spectra.mul_(weights) if overwrite else spectra * weights
        return torch.addcmul(constant, spectra, weights, out=spectra if overwrite else None)


class _ManyBlocks:
    """The layout of g > 1 blocks: spectra (m, c, g), frequency first, so that each sum over rows
    or over blocks is a batched product of contiguous matrices (on permuted views, torch's CPU
    matrix product copies every matrix first and takes three times as long); a cross-spectrum
    is (m, g, g)."""

    @staticmethod
    def arrange(spectra: torch.Tensor) -> torch.Tensor:
        return spectra.permute(2, 0, 1).contiguous()

    @staticmethod
    def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a.mH @ b

    @staticmethod
    def frequency_first(cross: torch.Tensor) -> torch.Tensor:
        return cross

    @staticmethod
    def from_frequency_first(spectrum: torch.Tensor) -> torch.Tensor:
        return spectrum

    @staticmethod
    def apply(spectra: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return spectra @ weights

    @staticmethod
    def mix(spectra, weights, constant, overwrite: bool) -> torch.Tensor:
        # a matrix product cannot write over its input: ``overwrite`` does not apply
        mixed = spectra @ weights if constant is None else torch.baddbmm(constant, spectra, weights)
        # made contiguous here: the inverse FFT of the strided view is slower than the copy
        return mixed.permute(1, 2, 0).contiguous()


class _Spectra:
    """The block spectra of every row of one view, one tensor per chunk of c rows, made once and
    kept for the backward pass, in the layout (``_OneBlock`` or ``_ManyBlocks``) that makes the
    sums over rows fastest."""

    def __init__(self, z: torch.Tensor, block_size: int, chunks: list[slice], saved: list[torch.Tensor] | None = None):
        self.block_size, self.d = block_size, z.shape[1]
        self.layout = _OneBlock if block_size >= self.d else _ManyBlocks
        self.parts = {rows.start: part for rows, part in zip(chunks, saved or [])}  # chunk start -> spectra

    def tensors(self) -> list[torch.Tensor]:
        """What ``ctx.save_for_backward`` keeps; ``_Spectra(..., saved=)`` takes it back."""
        return list(self.parts.values())

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The spectra of the (c, d) rows x, block by block (zero-padded), in the layout."""
        return self.layout.arrange(torch.fft.rfft(split_blocks(x, self.block_size), dim=-1))

    def store(self, rows: slice, x: torch.Tensor) -> None:
        """Transform and keep x, the rows ``rows`` of the view."""
        self.parts[rows.start] = self.transform(x)

    def rows(self, rows: slice) -> torch.Tensor:
        return self.parts[rows.start]

    def product(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """sum over rows of conj(a[n, u, f]) * b[n, v, f] for spectra in the layout."""
        return self.layout.product(a, b)

    def cross(self, other: _Spectra, rows: slice) -> torch.Tensor:
        """``product`` of this view's and the other's spectra of ``rows``."""
        return self.product(self.rows(rows), other.rows(rows))

    def frequency_first(self, cross: torch.Tensor) -> torch.Tensor:
        """A cross-spectrum in the layout -> (m, g, g), a view."""
        return self.layout.frequency_first(cross)

    def weights(self, spectrum: torch.Tensor) -> torch.Tensor:
        """(m, g, g) -> the layout, contiguous and without a lazy conjugation, ready for the
        products of every chunk."""
        return self.layout.from_frequency_first(spectrum).resolve_conj().contiguous()

    def apply(self, spectra: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """out[n, v] = sum_u spectra[n, u] W[u, v], per frequency, for weights from ``weights``."""
        return self.layout.apply(spectra, weights)

    def mix(self, rows: slice, weights: torch.Tensor, constant: torch.Tensor | None = None, overwrite=False):
        """The spectra (c, g, m) of the rows' gradient: ``apply`` to the stored spectra of
        ``rows``, plus ``constant`` (the spectrum of a term that is the same in every row) if
        given. ``overwrite`` reuses the stored spectra's memory for the result where it can."""
        return self.layout.mix(self.rows(rows), weights, constant, overwrite)

    def signal(self, spectrum: torch.Tensor) -> torch.Tensor:
        """(c, g, m) spectra -> (c, d) real rows, dropping the padding of the last block."""
        return torch.fft.irfft(spectrum, n=self.block_size, dim=-1).flatten(1)[:, : self.d]


def _parseval_weights(block_size: int, like: torch.Tensor) -> torch.Tensor:
    """(m,), m = b // 2 + 1: w[f] such that sum_k s[k]^2 = sum_f w[f] |S_f|^2 for s = irfft(S) of length b
    (Parseval). A frequency 0 < f < b/2 stands for itself and its mirror image b - f: 2/b;
    frequency 0 and, for even b, b/2 are their own mirror images: 1/b. (Their imaginary parts,
    which irfft ignores, are zero in the spectra of real signals.)"""
    m = block_size // 2 + 1
    w = torch.full((m,), 2 / block_size, dtype=like.real.dtype, device=like.device)
    w[[0, m - 1] if block_size % 2 == 0 else [0]] = 1 / block_size
    return w


def _power_sums(cross: torch.Tensor, block_size: int, exponent: float, scale: torch.Tensor):
    """``block_power_sums`` of the wrapped-diagonal sums s = irfft(cross) normalised by ``scale``
    (g, g), from the cross-spectrum (m, g, g) (frequency first): pairs (g, g), diagonal (g,), and
    what ``_sums_gradient`` needs.

    For q = 2 the sums over shifts of s^2 are Parseval's sums over frequencies of |S|^2, read off
    the spectrum where it lies, without the inverse FFT of all g * g blocks; only the g diagonal
    blocks are inverted, to leave out their shift 0 (subtracting s[u, u, 0]^2 from the total
    would cancel most of its digits: shift 0 holds the block's variances, by far the largest).
    """
    m, g, _ = cross.shape
    if exponent != 2:
        sums = torch.fft.irfft(cross.permute(1, 2, 0), n=block_size, dim=-1)  # (g, g, b)
        return (*block_power_sums(sums, exponent, scale), sums)
    # sum_f w[f] (re^2 + im^2): the sum over frequencies as a matrix-vector product, the one over
    # the two parts last (a reduction over a trailing dimension of 2 is slow)
    squares = torch.view_as_real(cross).square().view(m, 2 * g * g)
    # (|scale * S|^2 = scale^2 |S|^2: q = 2 cannot overflow where the spectra themselves do not)
    pairs = (_parseval_weights(block_size, cross) @ squares).view(g, g, 2).sum(-1) * scale.square()
    diagonal_sums = torch.fft.irfft(torch.diagonal(cross, dim1=1, dim2=2).T, n=block_size, dim=-1)  # (g, b)
    return pairs, diagonal_sums[:, 1:].square().sum(-1) * scale.diagonal().square(), diagonal_sums


def _sums_gradient(cross, saved, grad_pairs, grad_diagonal, block_size: int, exponent: float, scale) -> torch.Tensor:
    """rfft over the shifts of dL/ds (m, g, g), frequency first, for the upstream gradients of
    ``_power_sums``'s pairs and diagonal; ``saved`` is its third output.

    q = 2, c = scale: dL/ds[u, v, k] = 2 c[u, v]^2 s[u, v, k] (grad_pairs[u, v] + [u = v, k >= 1]
    grad_diagonal[u]), and rfft(s) = S: the pairs' part is 2 c^2 grad_pairs S, made where S lies.
    """
    if exponent != 2:
        with torch.enable_grad():
            sums = saved.detach().requires_grad_()
            power = block_power_sums(sums, exponent, scale)
            grad_sums = torch.autograd.grad(power, sums, (grad_pairs, grad_diagonal))[0]
        return torch.fft.rfft(grad_sums, dim=-1).permute(2, 0, 1)
    squared = scale.square()
    gradient = cross * (2 * grad_pairs * squared)
    diagonal_grad = saved * (2 * grad_diagonal * squared.diagonal())[:, None]
    diagonal_grad[:, 0] = 0
    torch.diagonal(gradient, dim1=1, dim2=2).add_(torch.fft.rfft(diagonal_grad, dim=-1).T)
    return gradient


class _BarlowTwinsSaved(NamedTuple):
    """What ``RelaxedBarlowTwins`` keeps for its backward pass, besides the views' spectra."""

    z1: torch.Tensor
    z2: torch.Tensor
    a: torch.Tensor  # the standardised views, features permuted
    b: torch.Tensor
    permutation: torch.Tensor | None
    inverse: torch.Tensor | None
    cross: torch.Tensor  # (m, g, g) cross-spectrum
    power_saved: torch.Tensor  # what ``_sums_gradient`` needs from ``_power_sums``
    scale: torch.Tensor
    mean1: torch.Tensor
    inv_std1: torch.Tensor
    mean2: torch.Tensor
    inv_std2: torch.Tensor
    down1: torch.Tensor | None  # the powers of two the views were standardised times, if any
    down2: torch.Tensor | None


class _VICRegSaved(NamedTuple):
    """What ``RelaxedVICReg`` keeps for its backward pass, besides the views' spectra."""

    x1: torch.Tensor  # the views, features permuted and shifted by their first row
    x2: torch.Tensor
    permutation: torch.Tensor | None
    inverse: torch.Tensor | None
    offset: torch.Tensor  # z1 - z2 = x1 - x2 + offset
    scale: torch.Tensor
    mean1: torch.Tensor  # the means of x1 and x2
    mean2: torch.Tensor
    mean_spectrum1: torch.Tensor
    mean_spectrum2: torch.Tensor
    cross1: torch.Tensor  # (m, g, g) auto-spectra of the centred views
    cross2: torch.Tensor
    power_saved1: torch.Tensor
    power_saved2: torch.Tensor


def _save(ctx, saved: NamedTuple, spectra: tuple[_Spectra, _Spectra]) -> None:
    ctx.save_for_backward(*saved, *spectra[0].tensors(), *spectra[1].tensors())


def _restore(ctx, kind: type, like: torch.Tensor) -> tuple:
    """The named tensors ``_save`` kept, and the two views' spectra rebuilt around theirs."""
    tensors = ctx.saved_tensors
    saved, rest = kind(*tensors[: len(kind._fields)]), tensors[len(kind._fields) :]
    half = len(rest) // 2
    return saved, tuple(_Spectra(like, ctx.block_size, ctx.chunks, list(part)) for part in (rest[:half], rest[half:]))


def _inverse(permutation: torch.Tensor | None) -> torch.Tensor | None:
    return None if permutation is None else inverse_permutation(permutation)


class RelaxedBarlowTwins(torch.autograd.Function):
    """C_ii and the power sums of s for Barlow Twins' relaxation, from the raw views, chunk by chunk.

    forward(z1, z2, permutation, block_size, exponent, chunks, scale) returns
      c_diag (d,): sum_n a[n, i] * b[n, i] (n times C_ii), in the original feature order;
      pairs (g, g), diagonal (g,): ``block_power_sums`` of the wrapped-diagonal sums s of the
      blocks of a^T b (``circular.py``) normalised by ``scale`` (g, g), which are not formed for
      q = 2 (``_power_sums``);
    where a, b are the batch-standardised views (biased variance, eps 1e-5), features permuted.
    A view whose variance would overflow is standardised as z * down instead (``_magnitude.py``),
    chunk by chunk, and its gradient multiplied by down at the end.
    """

    @staticmethod
    def forward(ctx, z1, z2, permutation, block_size, exponent, chunks, scale):
        n, d = z1.shape
        stats, downs = [], []
        for z in (z1, z2):
            down = guard(z) if branch_free(z) else None  # decided up front, without a branch
            mean, squares = _statistics(z if down is None else z * down, chunks)
            if down is None and not moderate(squares / n):
                down = downscale(peaks(z))
                mean, squares = _statistics(z * down, chunks)
            eps = BATCHNORM_EPS if down is None else scaled_eps(BATCHNORM_EPS, down)
            stats += [mean, torch.rsqrt(squares / n + eps)]
            downs.append(down)
        views = (torch.empty_like(z1), torch.empty_like(z2))
        spectra = (_Spectra(z1, block_size, chunks), _Spectra(z2, block_size, chunks))
        (a, b), (f1, f2) = views, spectra
        permuted = stats if permutation is None else [s[permutation] for s in stats]
        factors = [down if down is None or permutation is None else down[permutation] for down in downs]
        c_diag, cross = z1.new_zeros(d), 0
        for rows in chunks:
            for z, x, f, mean, inv_std, down in zip((z1, z2), views, spectra, permuted[::2], permuted[1::2], factors):
                x = _permuted_rows(z, rows, permutation, x[rows])
                f.store(rows, (x if down is None else x.mul_(down)).sub_(mean).mul_(inv_std))
            c_diag += _column_sum(a[rows] * b[rows])
            cross = cross + f1.cross(f2, rows)
        inverse = _inverse(permutation)
        cross = f1.frequency_first(cross)
        pairs, diagonal, power_saved = _power_sums(cross, block_size, exponent, scale)
        ctx.block_size, ctx.exponent, ctx.chunks = block_size, exponent, chunks
        saved = _BarlowTwinsSaved(z1, z2, a, b, permutation, inverse, cross, power_saved, scale, *stats, *downs)
        _save(ctx, saved, spectra)
        return (c_diag if inverse is None else c_diag[inverse]), pairs, diagonal

    @staticmethod
    @first_order('Barlow Twins with method="fft"')
    def backward(ctx, grad_diag, grad_pairs, grad_diagonal):
        saved, (f1, f2) = _restore(ctx, _BarlowTwinsSaved, ctx.saved_tensors[2])
        a, b, permutation, inverse = saved.a, saved.b, saved.permutation, saved.inverse
        n, d = a.shape
        inv_stds = (saved.inv_std1, saved.inv_std2)
        scales = inv_stds if permutation is None else tuple(s[permutation] for s in inv_stds)
        if permutation is not None:
            grad_diag = grad_diag[permutation]
        grad = _sums_gradient(
            saved.cross, saved.power_saved, grad_pairs, grad_diagonal, ctx.block_size, ctx.exponent, saved.scale
        )
        # dL/dF1[n, u] = sum_v conj(G[u, v]) F2[n, v] and dL/dF2[n, v] = sum_u G[u, v] F1[n, u]
        weights = (f1.weights(grad.mH), f1.weights(grad))
        # Each chunk of a and b is last read just before its gradients are written: they can
        # take its place, as the spectra can take the place of their products.
        overwrite = _graph_freed_after_backward()
        grads = (a, b) if overwrite else (torch.empty_like(a), torch.empty_like(b))
        # dL/da = irfft(sum_v conj(G[u, v]) F2[v]) + b * grad_diag, and symmetrically for b. The
        # standardisation's backward, scale * (dL/da - a * mean(dL/da * a)), needs the mean over
        # all rows, so the first pass writes scale * dL/da and the second subtracts the rest.
        moments = [torch.zeros_like(grad_diag), torch.zeros_like(grad_diag)]
        for rows in ctx.chunks:
            mixed = (f2.mix(rows, weights[0], overwrite=overwrite), f1.mix(rows, weights[1], overwrite=overwrite))
            chunk_grads = []
            for spectrum, x, other, scale, moment in zip(mixed, (a, b), (b, a), scales, moments):
                grad = f1.signal(spectrum).addcmul_(other[rows], grad_diag)
                moment += _column_sum(grad * x[rows])
                chunk_grads.append(grad.mul_(scale))
            for grad, out in zip(chunk_grads, grads):
                _scatter_back(grad, rows, inverse, out)
        # Second pass, in the original feature order: scale * a * mean(dL/da * a), with
        # a = (z - mean) * inv_std, is z * k - mean * k for k = inv_std^2 * mean(dL/da * a).
        # A downscaled view: z * down in place of z, and the gradient with respect to z is down
        # times that with respect to z * down.
        views, means, downs = (saved.z1, saved.z2), (saved.mean1, saved.mean2), (saved.down1, saved.down2)
        for z, mean, inv_std, moment, out, down in zip(views, means, inv_stds, moments, grads, downs):
            k = inv_std.square() * (moment if inverse is None else moment[inverse]) / n
            shift = mean * k
            for rows in ctx.chunks:
                out[rows].addcmul_(z[rows] if down is None else z[rows] * down, k, value=-1).add_(shift)
            if down is not None:
                out.mul_(down)
        return grads[0], grads[1], None, None, None, None, None


class RelaxedVICReg(torch.autograd.Function):
    """VICReg's three terms' statistics from the raw views, chunk by chunk.

    forward(z1, z2, permutation, block_size, exponent, chunks, scale) returns
      squared_difference (): sum over all entries of (z1 - z2)^2 (n * d times the invariance term);
      squares (2, d): per view, sum_n (z[n, i] - mean_i)^2 ((n - 1) times the variance);
      pairs (2, g, g), diagonal (2, g): per view, ``block_power_sums`` of the wrapped-diagonal
      sums of the blocks of Zc^T Zc normalised by ``scale`` (g, g) (``relaxed.vicreg_block_scale``),
      Zc the centred view with permuted features (``_power_sums`` forms them).
    The views are transformed shifted by their first row, x' = z[:, perm] - z[0, perm], and
    centred afterwards (the module's docstring, point 2).
    """

    @staticmethod
    def forward(ctx, z1, z2, permutation, block_size, exponent, chunks, scale):
        n, d = z1.shape
        views = (torch.empty_like(z1), torch.empty_like(z2))  # x', permuted and shifted
        spectra = (_Spectra(z1, block_size, chunks), _Spectra(z2, block_size, chunks))
        shifts = [z[0] if permutation is None else z[0, permutation] for z in (z1, z2)]
        offset = shifts[0] - shifts[1]  # z1 - z2 = x'1 - x'2 + offset, in permuted order
        totals, squares, cross = [0, 0], [0, 0], [0, 0]
        squared_difference = z1.new_zeros(())
        for rows in chunks:
            for k, (z, x, f, shift) in enumerate(zip((z1, z2), views, spectra, shifts)):
                chunk = _permuted_rows(z, rows, permutation, x[rows]).sub_(shift)
                totals[k] = totals[k] + _column_sum(chunk)
                squares[k] = squares[k] + _column_sum(chunk.square())
                f.store(rows, chunk)
                cross[k] = cross[k] + f.cross(f, rows)
            difference = torch.sub(views[0][rows], views[1][rows]).add_(offset).flatten()
            squared_difference += difference @ difference
        # Centring afterwards: the mean of x' is mu', the spectra of the centred rows F' - M'.
        means = [total / n for total in totals]
        mean_spectra = [f.transform(mean[None]) for f, mean in zip(spectra, means)]
        cross = [f.frequency_first(c - n * f.product(m, m)) for c, f, m in zip(cross, spectra, mean_spectra)]
        power = [_power_sums(c, block_size, exponent, scale) for c in cross]
        # A sum of shifted squares that overflowed stays inf (the std is then far above any margin,
        # as the modular path finds): n * mean^2, at most that sum, is kept finite for the
        # subtraction, where inf - inf would make NaN.
        top = torch.finfo(z1.dtype).max
        squares = torch.stack(
            [(s - (n * mean.square()).clamp_(max=top)).clamp_(min=0) for s, mean in zip(squares, means)]
        )
        inverse = _inverse(permutation)
        ctx.block_size, ctx.exponent, ctx.chunks = block_size, exponent, chunks
        saved = _VICRegSaved(
            *views, permutation, inverse, offset, scale, *means, *mean_spectra, *cross, *(p[2] for p in power)
        )
        _save(ctx, saved, spectra)
        pairs, diagonal = torch.stack([p[0] for p in power]), torch.stack([p[1] for p in power])
        return squared_difference, (squares if inverse is None else squares[:, inverse]), pairs, diagonal

    @staticmethod
    @first_order('VICReg with method="fft"')
    def backward(ctx, grad_difference, grad_squares, grad_pairs, grad_diagonal):
        saved, (f1, f2) = _restore(ctx, _VICRegSaved, ctx.saved_tensors[0])
        x1, x2, permutation, inverse = saved.x1, saved.x2, saved.permutation, saved.inverse
        if permutation is not None:
            grad_squares = grad_squares[:, permutation]
        # An auto-correlation's gradient is the sum of both circular products: G + G^H per frequency.
        weights = []
        for cross, power_saved, grad_p, grad_d in zip(
            (saved.cross1, saved.cross2), (saved.power_saved1, saved.power_saved2), grad_pairs, grad_diagonal
        ):
            grad = _sums_gradient(cross, power_saved, grad_p, grad_d, ctx.block_size, ctx.exponent, saved.scale)
            weights.append(f1.weights(grad + grad.mH))
        # dL/dz1[:, perm] = irfft((F'1 - M'1) W1) + 2 gs1 (x'1 - mu'1) + c (x'1 - x'2 + offset), c =
        # 2 dL/d(squared_difference): the centring's backward leaves the first two unchanged, as
        # their batch means are zero. The terms that are the same in every row go into the
        # spectrum before the inverse FFT; the rest is (2 gs1 + c) x'1 - c x'2. View 2: likewise,
        # with -c (x'1 - x'2 + offset).
        c = 2 * grad_difference
        constants = [
            f.transform((sign * c * saved.offset - 2 * gs * mean)[None]) - f.apply(spectrum, w)
            for f, sign, gs, mean, spectrum, w in zip(
                (f1, f2),
                (1, -1),
                grad_squares,
                (saved.mean1, saved.mean2),
                (saved.mean_spectrum1, saved.mean_spectrum2),
                weights,
            )
        ]
        factors, minus_c = [2 * grad_squares[0] + c, 2 * grad_squares[1] + c], -c
        overwrite = _graph_freed_after_backward()
        grads = (x1, x2) if overwrite else (torch.empty_like(x1), torch.empty_like(x2))
        for rows in ctx.chunks:
            chunk_grads = []
            for f, w, constant, x, other, factor in zip((f1, f2), weights, constants, (x1, x2), (x2, x1), factors):
                grad = f.signal(f.mix(rows, w, constant, overwrite=overwrite))
                chunk_grads.append(grad.addcmul_(x[rows], factor).addcmul_(other[rows], minus_c))
            for grad, out in zip(chunk_grads, grads):  # after both: each reads x'1 and x'2
                _scatter_back(grad, rows, inverse, out)
        return grads[0], grads[1], None, None, None, None, None
