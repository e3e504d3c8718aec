"""The fused single-process FFT path (losses/_fused.py) against the modular path, chunk by chunk.

test_losses.py checks the default path (the fused one, for float32/64) against brute-force
formulas. Here the two implementations are compared with each other in float64, values and
gradients, with the rows split into chunks of every awkward size, so that a bug in the chunk
bookkeeping (a row counted twice, a stale buffer, a chunk's statistics) cannot hide behind a
batch that happens to fit in one chunk.
"""

import pytest
import torch
from torch.autograd import gradcheck

import decorr_lite as dl
from decorr_lite.losses import _fused
from decorr_lite.losses.relaxed import block_power_sums

N, D = 11, 12
# every loss that has the relaxation
LOSSES = {name: spec.loss_function for name, spec in dl.LOSSES.items() if "fft" in spec.methods}


def views(seed=0, n=N, d=D, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.eye(d, dtype=torch.float64) + torch.randn(d, d, generator=g, dtype=torch.float64) / d
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ mix
    scale = torch.linspace(0.2, 1.5, d, dtype=torch.float64)  # some stds below the margin 1, some above
    z1 = (x + 0.4 * torch.randn(n, d, generator=g, dtype=torch.float64)) * scale + offset
    z2 = (x + 0.4 * torch.randn(n, d, generator=g, dtype=torch.float64)) * scale + offset
    return z1.requires_grad_(), z2.requires_grad_()


def chunk_rows(monkeypatch, rows, d=D, dtype=torch.float64):
    """Make the fused path split the batch into chunks of ``rows`` rows."""
    monkeypatch.setattr(_fused, "CHUNK_BYTES", rows * d * torch.finfo(dtype).bits // 8)


def value_and_grads(loss, z1, z2, **kwargs):
    value = loss(z1, z2, **kwargs)
    return (value, *torch.autograd.grad(value, (z1, z2)))


def modular(monkeypatch, loss, z1, z2, **kwargs):
    """The same call through the modular path (``impl="modular"``)."""
    return value_and_grads(loss, z1, z2, **kwargs, impl="modular")


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("rows", [1, 3, 4, N])  # 3 and 4 leave a short last chunk
@pytest.mark.parametrize("block_size", [None, 1, 4, 5])  # 4 divides d = 12, 5 does not
@pytest.mark.parametrize("exponent", [1, 2])
@pytest.mark.parametrize("use_permutation", [False, True])
def test_fused_equals_modular(monkeypatch, loss, rows, block_size, exponent, use_permutation):
    z1, z2 = views()
    permutation = torch.randperm(D, generator=torch.Generator().manual_seed(1)) if use_permutation else None
    kwargs = dict(method="fft", block_size=block_size, exponent=exponent, permutation=permutation)
    expected = modular(monkeypatch, LOSSES[loss], z1, z2, **kwargs)
    chunk_rows(monkeypatch, rows)
    assert len(_fused.row_chunks(N, D, z1)) == -(-N // rows)
    actual = value_and_grads(LOSSES[loss], z1, z2, **kwargs)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_fused_is_the_default_path_and_gives_the_same_terms(monkeypatch, loss):
    """The terms dictionaries agree too (the notebooks log them), for a subset of VICReg's terms."""
    z1, z2 = views(seed=2)
    calls = []
    original = _fused.row_chunks
    monkeypatch.setattr(_fused, "row_chunks", lambda *a: calls.append(a) or original(*a))
    if loss == "barlow":
        fused = dl.barlow_twins_terms(z1, z2, method="fft", block_size=5)
        reference = dl.barlow_twins_terms(z1, z2, method="fft", block_size=5, impl="modular")
    else:
        terms = ["variance", "covariance"]
        fused = dl.vicreg_terms(z1, z2, terms=terms, method="fft", block_size=5)
        reference = dl.vicreg_terms(z1, z2, terms=terms, method="fft", block_size=5, impl="modular")
    assert len(calls) == 1  # the first call went through the fused path, the second did not
    assert list(fused) == list(reference)
    for name in fused:
        torch.testing.assert_close(fused[name], reference[name], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("block_size", [None, 5])
def test_fused_gradcheck_with_several_chunks(monkeypatch, loss, block_size):
    chunk_rows(monkeypatch, 4)
    z1, z2 = views(seed=3)
    permutation = torch.randperm(D, generator=torch.Generator().manual_seed(4))
    assert gradcheck(
        lambda a, b: LOSSES[loss](a, b, method="fft", block_size=block_size, permutation=permutation), (z1, z2)
    )


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("block_size", [None, 5])
def test_fused_backward_twice_with_retain_graph(monkeypatch, loss, block_size):
    """A backward pass that frees the graph writes its gradients into the forward pass's buffers;
    with ``retain_graph`` it must leave them intact, so a second backward pass agrees."""
    z1, z2 = views(seed=8)
    kwargs = dict(
        method="fft", block_size=block_size, permutation=torch.randperm(D, generator=torch.Generator().manual_seed(9))
    )
    expected = modular(monkeypatch, LOSSES[loss], z1, z2, **kwargs)[1:]
    chunk_rows(monkeypatch, 4)
    value = LOSSES[loss](z1, z2, **kwargs)
    first = torch.autograd.grad(value, (z1, z2), retain_graph=True)
    second = torch.autograd.grad(value, (z1, z2))
    for a, b, e in zip(first, second, expected):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(b, e, rtol=1e-12, atol=1e-14)


def test_fused_backward_knows_when_the_graph_is_freed(monkeypatch):
    """The buffers are reused only when torch says the graph is freed after this backward pass
    (a private function: if a torch release drops it, this test says so)."""
    seen = []
    original = _fused._graph_freed_after_backward
    monkeypatch.setattr(_fused, "_graph_freed_after_backward", lambda: seen.append(original()) or seen[-1])
    z1, z2 = views(seed=10)
    value = dl.vicreg_loss(z1, z2, method="fft", block_size=5)
    torch.autograd.grad(value, (z1, z2), retain_graph=True)
    torch.autograd.grad(value, (z1, z2))
    assert seen == [False, True]


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_fused_statistics_survive_a_large_offset(monkeypatch, loss):
    """Embeddings far from zero (about a thousand times their spread): the fused path's one-pass
    statistics (shifted by a sample) agree with the modular path's centre-then-square in float32."""
    z1, z2 = views(seed=5, offset=1e3)
    kwargs = dict(method="fft", block_size=5)
    expected = modular(monkeypatch, LOSSES[loss], z1, z2, **kwargs)[0]
    chunk_rows(monkeypatch, 3, dtype=torch.float32)
    actual = LOSSES[loss](z1.detach().float(), z2.detach().float(), **kwargs)
    torch.testing.assert_close(actual.double(), expected.detach(), rtol=1e-3, atol=0)


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("block_size", [None, 5])
def test_fused_gradients_survive_a_large_offset_as_well_as_the_modular_path(monkeypatch, loss, block_size):
    """At the same offset, the float32 gradients lose no more digits on the fused path than on the
    modular one (both against float64). The fused VICReg path folds the mean into the spectrum:
    folding the raw mean of z instead of that of the views shifted by a sample would lose three
    digits here."""
    z1, z2 = views(seed=5, offset=1e3)
    kwargs = dict(
        method="fft", block_size=block_size, permutation=torch.randperm(D, generator=torch.Generator().manual_seed(11))
    )
    exact = modular(monkeypatch, LOSSES[loss], z1, z2, **kwargs)[1:]
    single = [z.detach().float().requires_grad_() for z in (z1, z2)]
    reference = modular(monkeypatch, LOSSES[loss], *single, **kwargs)[1:]
    chunk_rows(monkeypatch, 3, dtype=torch.float32)
    fused = value_and_grads(LOSSES[loss], *single, **kwargs)[1:]
    for f, r, e in zip(fused, reference, exact):
        fused_error, modular_error = ((x.double() - e).norm() / e.norm() for x in (f, r))
        assert fused_error <= 1.5 * modular_error + 1e-6, (fused_error, modular_error)


def test_half_precision_is_upcast_and_takes_the_fused_path(monkeypatch):
    z1, z2 = (z.detach().to(torch.bfloat16) for z in views(seed=6))
    calls = []
    original = _fused.row_chunks
    monkeypatch.setattr(_fused, "row_chunks", lambda *a: calls.append(a[2].dtype) or original(*a))
    assert torch.isfinite(dl.barlow_twins_loss(z1, z2, method="fft"))
    assert calls == [torch.float32]  # computed in float32, by the fused path


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_fused_accepts_non_contiguous_views(monkeypatch, loss):
    """A column-major view and a strided slice give the same values and gradients as their
    contiguous copies, over several chunks."""
    chunk_rows(monkeypatch, 4)
    g = torch.Generator().manual_seed(7)
    z1 = torch.randn(D, N, dtype=torch.float64, generator=g).T.requires_grad_()  # column-major
    z2 = torch.randn(N, 2 * D, dtype=torch.float64, generator=g)[:, ::2].requires_grad_()  # every other column
    assert not z1.is_contiguous() and not z2.is_contiguous()
    kwargs = dict(method="fft", block_size=5, permutation=torch.randperm(D, generator=g))
    actual = value_and_grads(LOSSES[loss], z1, z2, **kwargs)
    c1, c2 = (z.detach().contiguous().requires_grad_() for z in (z1, z2))
    expected = value_and_grads(LOSSES[loss], c1, c2, **kwargs)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("block_size", [1, 2, 5, 6])  # odd and even: the Nyquist frequency's weight
@pytest.mark.parametrize("exponent", [1, 2, 3])
def test_power_sums_from_the_spectrum_match_the_sums(block_size, exponent):
    """``_power_sums`` (Parseval for q = 2) equals ``block_power_sums`` of the inverse FFT, and
    ``_sums_gradient`` equals rfft over the shifts of autograd's dL/ds, for upstream gradients
    that weight every pair and diagonal block differently."""
    g, n = 3, 7
    gen = torch.Generator().manual_seed(block_size + 10 * exponent)
    x, y = (torch.randn(n, g, block_size, generator=gen, dtype=torch.float64) for _ in range(2))
    cross = torch.einsum("nuf,nvf->fuv", torch.fft.rfft(x).conj(), torch.fft.rfft(y))  # (m, g, g)
    sums = torch.fft.irfft(cross.permute(1, 2, 0), n=block_size).requires_grad_()  # (g, g, b)
    scale = torch.rand(g, g, generator=gen, dtype=torch.float64) + 0.5  # a normalisation per pair of blocks
    pairs, diagonal, saved = _fused._power_sums(cross, block_size, exponent, scale)
    expected_pairs, expected_diagonal = block_power_sums(sums, exponent, scale)
    torch.testing.assert_close(pairs, expected_pairs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(diagonal, expected_diagonal, rtol=1e-12, atol=1e-12)

    grad_pairs = torch.randn(g, g, generator=gen, dtype=torch.float64)
    grad_diagonal = torch.randn(g, generator=gen, dtype=torch.float64)
    grad_sums = torch.autograd.grad((expected_pairs, expected_diagonal), sums, (grad_pairs, grad_diagonal))[0]
    gradient = _fused._sums_gradient(cross, saved, grad_pairs, grad_diagonal, block_size, exponent, scale)
    torch.testing.assert_close(gradient, torch.fft.rfft(grad_sums).permute(2, 0, 1), rtol=1e-12, atol=1e-12)


def force_downscaling(monkeypatch):
    """Make every variance count as beyond range: the standardisation takes the path of huge
    inputs (``_magnitude.py``), here on numbers where the plain path can be compared."""
    from decorr_lite.losses import _magnitude

    monkeypatch.setattr(_magnitude, "_LIMIT", {torch.float32: 0.0, torch.float64: 0.0})


@pytest.mark.parametrize("rows", [3, N])
@pytest.mark.parametrize("block_size", [None, 5])
def test_the_downscaled_barlow_twins_path_equals_the_plain_one(monkeypatch, rows, block_size):
    """The path that standardises z * down (down a power of two per feature) is the same
    arithmetic: the same values and gradients as the plain path, through the chunks, and it
    passes gradcheck (its backward multiplies by down at the end)."""
    chunk_rows(monkeypatch, rows)
    z1, z2 = views(seed=9)
    z1, z2 = ((5 * z).detach().requires_grad_() for z in (z1, z2))  # every feature's largest |entry| > 1
    permutation = torch.randperm(D, generator=torch.Generator().manual_seed(5))
    kwargs = dict(method="fft", block_size=block_size, permutation=permutation)
    plain = value_and_grads(dl.barlow_twins_loss, z1, z2, **kwargs)
    force_downscaling(monkeypatch)
    for impl in ("fused", "modular"):
        downscaled = value_and_grads(dl.barlow_twins_loss, z1, z2, **kwargs, impl=impl)
        for a, e in zip(downscaled, plain):
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-14)
    assert gradcheck(lambda a, b: dl.barlow_twins_loss(a, b, **kwargs), (z1, z2))
