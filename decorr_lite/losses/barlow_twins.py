r"""Barlow Twins (Zbontar, Jing, Misra, LeCun, Deny, ICML 2021), exact and FFT-relaxed.

With C the cross-correlation matrix of the batch-standardised views (``cross_correlation``):

.. math:: L = \sum_i (1 - C_{ii})^2 + \lambda \sum_{i \ne j} |C_{ij}|^q

q = 2 in Barlow Twins. The relaxation of Shigeto et al. (CVPR 2023, arXiv:2301.01569) keeps the
on-diagonal term and replaces the off-diagonal entries by the sums of wrapped diagonals
s[u, v, k] of the b x b blocks of A^T B (A, B the standardised views), normalised as the
authors' released code does::

    off_fft = sum_u sum_{k>=1} |s[u, u, k] / n|^q  +  sum_{u != v} sum_k |s[u, v, k] / n|^q

With b = 1 every "wrapped diagonal" is a single entry and the relaxed loss equals the exact one.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from . import _distributed, _fused
from ._checks import check_decorrelation_options, check_flag, check_not_transformed, check_pair, check_positive
from ._magnitude import downscale, moderate, peaks, scaled_eps
from ._module import DecorrelationLoss
from ._precision import full_precision, upcast
from ._spec import LossSpec, Term
from .cross_correlation import BATCHNORM_EPS, batch_standardize
from .methods import METHODS, check_impl, use_fused
from .off_diagonal import off_diagonal_penalty
from .relaxed import barlow_twins_block_scale, sum_over_block_pairs

# The paper's weights, written once: the functions, the module, training and the widgets read them here.
BARLOW_TWINS_TERMS = (
    Term("on_diagonal", "on_diag_coeff", 1.0, "on-diagonal"),
    Term("off_diagonal", "lambd", 0.0051, "off-diagonal"),
)
TERMS = tuple(term.name for term in BARLOW_TWINS_TERMS)
_DEFAULT = {term.coefficient: term.default for term in BARLOW_TWINS_TERMS}


def barlow_twins_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    lambd: float = _DEFAULT["lambd"],
    on_diag_coeff: float = _DEFAULT["on_diag_coeff"],
    method: str = "exact",
    block_size: int | None = None,
    exponent: float = 2,
    permutation: torch.Tensor | None = None,
    check_finite: bool = True,
    gather_distributed: bool = False,
    impl: str = "auto",
) -> torch.Tensor:
    """Barlow Twins loss of two views, as the official implementation computes it.

    Args:
        z1, z2: (n, d) embeddings of the two views; standardised here per feature over the
            batch (as ``BatchNorm1d(affine=False)`` in training mode). Any floating dtype: the
            loss is computed in float32 (float64 stays float64), also inside a
            ``torch.autocast`` region, and is float32 for half-precision inputs. Any finite
            magnitude: a feature whose variance would overflow is standardised after an exact
            division by a power of two (``_magnitude.py``), so the loss stays scale-free.
        lambd: weight of the off-diagonal (redundancy reduction) term; 0 switches it off.
        on_diag_coeff: weight of the on-diagonal (invariance) term, 1 in the paper; 0 switches
            it off (the notebooks' "on-diagonal off" runs).
        method: ``"exact"`` forms the d x d matrix C: O(n*d^2) time, O(d^2) memory.
            ``"gram"`` gives the same value through n x n Gram matrices,
            ||A^T B||_F^2 = sum((A A^T) * (B B^T)): O(n^2*d) time, O(n^2) memory, faster when
            n < d (exponent must be 2). ``"fft"`` is the relaxation: O(n*d*log b + n*d*g) time,
            O(n*d + g^2*b) memory, g = ceil(d / b).
        block_size: b in [1, d] for ``"fft"``; None means b = d (fully relaxed).
        exponent: q >= 1 in ``|.|^q`` for the off-diagonal term (2 in Barlow Twins).
        permutation: a permutation of range(d) applied to the features of both views before
            blocking (``"fft"`` only; the exact value does not depend on it).
        check_finite: reject NaN/Inf (a full pass over the data; training loops may skip it).
        gather_distributed: when a ``torch.distributed`` process group is initialised, compute
            the loss of the global batch (standardised with global statistics), as one process
            would. Every rank must pass the same arguments (the same permutation too): they are
            compared, and a difference raises on every rank. A rank may hold 0 or 1 rows; the
            global batch needs 2. Gradients with respect to the local embeddings are world_size
            times the single-process ones, so that DDP's gradient averaging gives the
            single-process parameter gradients (``losses/_distributed.py``). ``"exact"``/``"gram"``
            gather the embeddings; ``"fft"`` all-reduces only sums.
        impl: ``"auto"``, ``"fused"`` or ``"modular"``: which implementation computes
            ``method="fft"`` (``methods.py``); the same value and gradients either way.

    Inputs of more than two dimensions are refused: flatten them first, ``z.flatten(0, -2)`` to
    treat every token or patch as a sample, ``z.flatten(1)`` to make one vector per sample.

    Returns:
        0-dim tensor.

    Supports first derivatives only (every method: the batch standardisation has a written-out
    backward): no double backward, no ``torch.func`` transforms.
    """
    check_positive(lambd, "lambd", allow_zero=True)
    check_positive(on_diag_coeff, "on_diag_coeff", allow_zero=True)
    weights = {"on_diagonal": on_diag_coeff, "off_diagonal": lambd}
    # the on-diagonal term costs O(n*d) and comes with every call; only the off-diagonal one is skipped
    terms = _terms(
        z1,
        z2,
        TERMS if lambd else ("on_diagonal",),
        method,
        block_size,
        exponent,
        permutation,
        check_finite,
        gather_distributed,
        weights,
        impl,
    )
    loss = on_diag_coeff * terms["on_diagonal"]
    return loss + lambd * terms["off_diagonal"] if lambd else loss


def barlow_twins_terms(
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    terms: str | Iterable[str] = TERMS,
    method: str = "exact",
    block_size: int | None = None,
    exponent: float = 2,
    permutation: torch.Tensor | None = None,
    check_finite: bool = True,
    gather_distributed: bool = False,
    impl: str = "auto",
) -> dict[str, torch.Tensor]:
    """The unweighted Barlow Twins terms, for logging each one.

    Returns ``{"on_diagonal": sum_i (1 - C_ii)^2, "off_diagonal": sum_{i != j} |C_ij|^q}`` (the
    latter relaxed for ``method="fft"``) restricted to ``terms`` (one name or several; the
    on-diagonal term costs O(n*d) and is always included), so that ``barlow_twins_loss`` is
    ``on_diag_coeff * on_diagonal + lambd * off_diagonal``. Arguments as in ``barlow_twins_loss``.
    """
    terms = [terms] if isinstance(terms, str) else list(terms)
    return _terms(
        z1, z2, terms, method, block_size, exponent, permutation, check_finite, gather_distributed, None, impl
    )


def _terms(
    z1, z2, terms, method, block_size, exponent, permutation, check_finite, gather_distributed, weights, impl
) -> dict[str, torch.Tensor]:
    """Check, agree across ranks (``gather_distributed``), then compute in float32 or float64."""
    distributed = check_flag(gather_distributed, "gather_distributed") and _distributed.active()
    with _distributed.checked_together(distributed):
        check_pair(z1, z2, check_finite=check_finite, min_rows=0 if distributed else 2)
        unknown = sorted(set(terms) - set(TERMS))
        if unknown:
            raise ValueError(f"terms must be a name or a list of names from {TERMS}; got unknown {unknown}.")
        method, block_size, exponent, permutation = check_decorrelation_options(
            method, block_size, exponent, permutation, z1.shape[1], z1.device
        )
        check_impl(impl)
        check_not_transformed(z1, "Barlow Twins")
    off_diagonal = "off_diagonal" in terms
    sizes = None
    if distributed:
        arguments = dict(
            off_diagonal=off_diagonal,
            method=method,
            d=z1.shape[1],
            block_size=block_size,
            exponent=exponent,
            permutation=permutation,
        )
        if weights is not None:
            arguments.update(lambd=weights["off_diagonal"], on_diag_coeff=weights["on_diagonal"])
        sizes = _distributed.agree("barlow_twins", arguments, z1.shape[0])
    with full_precision(z1.device):
        z1, z2 = upcast(z1), upcast(z2)
        if sizes is not None and method != "fft":  # exact and gram need every row: gather them
            z1, z2, sizes = _distributed.gather_rows(z1, sizes), _distributed.gather_rows(z2, sizes), None
        if off_diagonal and use_fused(impl, method, z1, sizes is not None):
            return _fused_terms(z1, z2, block_size, exponent, permutation)
        return _modular_terms(
            z1, z2, terms, method, block_size, exponent, permutation, None if sizes is None else sum(sizes)
        )


def _modular_terms(z1, z2, terms, method, block_size, exponent, permutation, global_n) -> dict[str, torch.Tensor]:
    """Each term on its own, from the standardised views (the reference path). ``global_n``: z1
    and z2 are this rank's rows of a global batch of ``global_n`` rows (``"fft"`` across
    processes): statistics and sums are all-reduced."""
    n = z1.shape[0] if global_n is None else global_n
    a, b = _standardize(z1, global_n), _standardize(z2, global_n)
    c = a.T @ b / n if method == "exact" else None  # the exact method forms C: both terms read it
    c_diag = c.diagonal() if c is not None else _sum_rows(a * b, global_n) / n  # C_ii in O(n*d)
    out = {"on_diagonal": (1 - c_diag).pow(2).sum()}
    if "off_diagonal" in terms:
        out["off_diagonal"] = off_diagonal_penalty(a, b, c_diag, method, block_size, exponent, permutation, global_n, c)
    return out


def _fused_terms(z1, z2, block_size, exponent, permutation) -> dict[str, torch.Tensor]:
    """The fast single-process path of the relaxation: every term from the fused pass (``_fused.py``)."""
    n, d = z1.shape
    c_diag, pairs, diagonal = _fused.RelaxedBarlowTwins.apply(
        z1,
        z2,
        permutation,
        block_size,
        exponent,
        _fused.row_chunks(n, d, z1),
        barlow_twins_block_scale(n, d, block_size, z1),
    )
    return {
        "on_diagonal": (1 - c_diag / n).pow(2).sum(),
        "off_diagonal": sum_over_block_pairs(pairs, diagonal),
    }


def _standardize(z: torch.Tensor, global_n: int | None, eps: float = BATCHNORM_EPS) -> torch.Tensor:
    """``batch_standardize``: over the local rows, or with the mean and biased variance of the
    global batch of ``global_n`` rows (plain autograd through the all-reduces)."""
    if global_n is None:
        return batch_standardize(z)
    centred = z - _distributed.global_mean(z, global_n)
    variance = _distributed.all_reduce_sum(centred.pow(2).sum(dim=0)) / global_n
    # every rank holds the same all-reduced variance, so every rank takes the same branch
    if not moderate(variance):  # a magnitude where it overflows: standardise z * down (_magnitude.py)
        down = downscale(_distributed.global_max(peaks(z)))
        z = z * down
        centred = z - _distributed.global_mean(z, global_n)
        variance = _distributed.all_reduce_sum(centred.pow(2).sum(dim=0)) / global_n
        eps = scaled_eps(eps, down)
    return centred * torch.rsqrt(variance + eps)


def _sum_rows(x: torch.Tensor, global_n: int | None) -> torch.Tensor:
    """The sum over the rows: the local ones, or the global batch's."""
    total = x.sum(dim=0)
    return total if global_n is None else _distributed.all_reduce_sum(total)


class BarlowTwinsLoss(DecorrelationLoss):
    """Barlow Twins as a ``torch.nn.Module`` (lightly's name): ``loss_fn(z1, z2)`` returns
    ``barlow_twins_loss(z1, z2, ...)`` with the module's arguments, and ``loss_fn.terms`` the last
    call's unweighted terms (detached), for logging.

    Arguments as in ``barlow_twins_loss``, plus ``permute``, ``seed`` and ``measure_all_terms`` as
    in ``VICRegLoss``: with ``method="fft"`` the module draws a fresh feature permutation on every
    call in training mode, none in eval mode.
    """

    def __init__(
        self,
        lambd: float = _DEFAULT["lambd"],
        on_diag_coeff: float = _DEFAULT["on_diag_coeff"],
        *,
        method: str = "exact",
        block_size: int | None = None,
        exponent: float = 2,
        permute: bool = True,
        seed: int | None = None,
        check_finite: bool = True,
        gather_distributed: bool = False,
        impl: str = "auto",
        measure_all_terms: bool = False,
    ) -> None:
        super().__init__(
            dict(lambd=lambd, on_diag_coeff=on_diag_coeff),
            method=method,
            block_size=block_size,
            exponent=exponent,
            permute=permute,
            seed=seed,
            check_finite=check_finite,
            gather_distributed=gather_distributed,
            impl=impl,
            measure_all_terms=measure_all_terms,
        )


SPEC = LossSpec(
    name="barlow",
    title="Barlow Twins",
    terms=BARLOW_TWINS_TERMS,
    terms_function=barlow_twins_terms,
    loss_function=barlow_twins_loss,
    module=BarlowTwinsLoss,
    methods=METHODS,
)
BarlowTwinsLoss.spec = SPEC
