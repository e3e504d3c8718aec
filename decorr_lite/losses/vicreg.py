r"""VICReg: Variance-Invariance-Covariance Regularization (Bardes, Ponce, LeCun, ICLR 2022).

.. math:: L = \lambda\, s(Z_1, Z_2) + \mu\, \frac{v(Z_1) + v(Z_2)}{2} + \nu\, (c(Z_1) + c(Z_2))

with s the invariance term (``invariance.py``), v the variance hinge (``variance.py``) and c the
covariance penalty (``covariance.py``, exact or FFT-relaxed). Defaults lambda = mu = 25, nu = 1
are the paper's. This is the official implementation's formula term for term.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from . import _distributed, _fused
from ._checks import (
    check_decorrelation_options,
    check_eps,
    check_flag,
    check_not_transformed,
    check_pair,
    check_positive,
    check_result,
)
from ._module import DecorrelationLoss
from ._precision import full_precision, upcast
from ._spec import LossSpec, Term
from .covariance import covariance_penalty
from .invariance import invariance_loss
from .methods import METHODS, check_impl, use_fused
from .relaxed import mean_over_block_pairs, vicreg_block_scale
from .variance import hinge_from_squares, variance_penalty

# The paper's weights, written once: the functions, the module, training and the widgets read them here.
VICREG_TERMS = (
    Term("invariance", "sim_coeff", 25.0, "invariance"),
    Term("variance", "std_coeff", 25.0, "variance"),
    Term("covariance", "cov_coeff", 1.0, "covariance"),
)
TERMS = tuple(term.name for term in VICREG_TERMS)
GROWTH = (
    "VICReg is not scale-free: its covariance term grows as the fourth power of the embeddings' scale, "
    "its invariance term as the square"
)
_DEFAULT = {term.coefficient: term.default for term in VICREG_TERMS}


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    sim_coeff: float = _DEFAULT["sim_coeff"],
    std_coeff: float = _DEFAULT["std_coeff"],
    cov_coeff: float = _DEFAULT["cov_coeff"],
    method: str = "exact",
    block_size: int | None = None,
    exponent: float = 2,
    permutation: torch.Tensor | None = None,
    gamma: float = 1.0,
    eps: float = 1e-4,
    check_finite: bool = True,
    gather_distributed: bool = False,
    impl: str = "auto",
) -> torch.Tensor:
    """VICReg loss of two views.

    Args:
        z1, z2: (n, d) embeddings of the two views. Any floating dtype: the loss is computed
            in float32 (float64 stays float64), also inside a ``torch.autocast`` region, and is
            float32 for half-precision inputs.
        sim_coeff, std_coeff, cov_coeff: weights of the invariance, variance and covariance
            terms (>= 0). A weight of 0 switches the term off and skips its computation.
        method, block_size, exponent, permutation: how the covariance term is computed;
            see ``covariance_loss``. The invariance and variance terms are not relaxed.
        gamma, eps: margin and epsilon (> 0) of the variance hinge; see ``variance_loss``.
        check_finite: reject NaN/Inf in the inputs (a full pass over the data; training loops
            may skip it), and terms that overflow the dtype although the inputs are finite
            (VICReg is not scale-free: its covariance term grows as the fourth power of the
            scale, and at d = 1024 in float32 overflows from a std of about 1e8). With
            ``check_finite=False`` such a term comes back as inf or NaN.
        gather_distributed: when a ``torch.distributed`` process group is initialised, compute
            the loss of the global batch (every rank's rows), as one process would. Every rank
            must pass the same arguments (the same permutation too): they are compared, and a
            difference raises on every rank. A rank may hold 0 or 1 rows; the global batch needs
            2. Gradients with respect to the local embeddings are world_size times the
            single-process ones, so that DDP's gradient averaging gives the single-process
            parameter gradients (``losses/_distributed.py``). ``"exact"``/``"gram"`` gather the
            embeddings; ``"fft"`` all-reduces only sums.
        impl: ``"auto"``, ``"fused"`` or ``"modular"``: which implementation computes
            ``method="fft"`` (``methods.py``); the same value and gradients either way.

    Inputs of more than two dimensions are refused: flatten them first, ``z.flatten(0, -2)`` to
    treat every token or patch as a sample, ``z.flatten(1)`` to make one vector per sample.

    Returns:
        0-dim tensor. Cost: O(n*d) plus that of the covariance method, twice.

    ``method="fft"`` supports first derivatives only (no double backward, no ``torch.func``).
    """
    weights = {"invariance": sim_coeff, "variance": std_coeff, "covariance": cov_coeff}
    for name, value in zip(("sim_coeff", "std_coeff", "cov_coeff"), weights.values()):
        check_positive(value, name, allow_zero=True)
    terms = _terms(
        z1,
        z2,
        [name for name, w in weights.items() if w],
        method,
        block_size,
        exponent,
        permutation,
        gamma,
        eps,
        check_finite,
        gather_distributed,
        weights,
        impl,
    )
    if not terms:  # every weight 0
        return z1.new_zeros((), dtype=upcast(z1).dtype)
    first, *rest = (weights[name] * value for name, value in terms.items())
    return sum(rest, start=first)


def vicreg_terms(
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    terms: str | Iterable[str] = TERMS,
    method: str = "exact",
    block_size: int | None = None,
    exponent: float = 2,
    permutation: torch.Tensor | None = None,
    gamma: float = 1.0,
    eps: float = 1e-4,
    check_finite: bool = True,
    gather_distributed: bool = False,
    impl: str = "auto",
) -> dict[str, torch.Tensor]:
    """The unweighted VICReg terms, for logging each one (training curves, notebooks).

    Returns ``{"invariance": s, "variance": (v(z1) + v(z2)) / 2, "covariance": c(z1) + c(z2)}``
    restricted to ``terms`` (one name or several), so that ``vicreg_loss`` is
    ``sum(weight * term)``. Arguments as in ``vicreg_loss``; only the requested terms are computed.
    """
    terms = [terms] if isinstance(terms, str) else list(terms)
    return _terms(
        z1,
        z2,
        terms,
        method,
        block_size,
        exponent,
        permutation,
        gamma,
        eps,
        check_finite,
        gather_distributed,
        None,
        impl,
    )


def _terms(
    z1,
    z2,
    terms,
    method,
    block_size,
    exponent,
    permutation,
    gamma,
    eps,
    check_finite,
    gather_distributed,
    weights,
    impl,
) -> dict[str, torch.Tensor]:
    """Check, agree across ranks (``gather_distributed``), then compute in float32 or float64."""
    distributed = check_flag(gather_distributed, "gather_distributed") and _distributed.active()
    with _distributed.checked_together(distributed):
        check_pair(z1, z2, check_finite=check_finite, min_rows=0 if distributed else 2)
        unknown = sorted(set(terms) - set(TERMS))
        if unknown:
            raise ValueError(f"terms must be a name or a list of names from {TERMS}; got unknown {unknown}.")
        check_positive(gamma, "gamma")
        check_eps(eps)
        check_impl(impl)
        method, block_size, exponent, permutation = check_decorrelation_options(
            method, block_size, exponent, permutation, z1.shape[1], z1.device
        )
        if method == "fft":
            check_not_transformed(z1, 'VICReg with method="fft"')
    sizes = None
    if distributed:
        arguments = dict(
            terms=tuple(sorted(terms)),
            method=method,
            d=z1.shape[1],
            block_size=block_size,
            exponent=exponent,
            gamma=gamma,
            eps=eps,
            permutation=permutation,
        )
        if weights is not None:
            arguments.update(
                sim_coeff=weights["invariance"], std_coeff=weights["variance"], cov_coeff=weights["covariance"]
            )
        sizes = _distributed.agree("vicreg", arguments, z1.shape[0])
    with full_precision(z1.device):
        z1, z2 = upcast(z1), upcast(z2)
        if sizes is not None and method != "fft":  # exact and gram need every row: gather them
            z1, z2, sizes = _distributed.gather_rows(z1, sizes), _distributed.gather_rows(z2, sizes), None
        if "covariance" in terms and use_fused(impl, method, z1, sizes is not None):
            out = _fused_terms(z1, z2, terms, block_size, exponent, permutation, gamma, eps)
        else:
            global_n = None if sizes is None else sum(sizes)
            out = _modular_terms(z1, z2, terms, method, block_size, exponent, permutation, gamma, eps, global_n)
    if check_finite:  # every rank holds the same terms: all raise, or none
        check_result(out, "VICReg", {"z1": z1, "z2": z2}, GROWTH)
    return out


def _modular_terms(z1, z2, terms, method, block_size, exponent, permutation, gamma, eps, global_n):
    """Each term on its own (the reference path). ``global_n``: z1 and z2 are this rank's rows
    of a global batch of ``global_n`` rows (``"fft"`` across processes): sums are all-reduced."""
    out = {}
    if "invariance" in terms:
        out["invariance"] = _invariance(z1, z2, global_n)
    if "variance" in terms or "covariance" in terms:
        # both the variance and the covariance term work on the centred views: centre once
        c1, c2 = _centre(z1, global_n), _centre(z2, global_n)
        if "variance" in terms:
            out["variance"] = (
                variance_penalty(c1, gamma, eps, global_n) + variance_penalty(c2, gamma, eps, global_n)
            ) / 2
        if "covariance" in terms:
            out["covariance"] = covariance_penalty(c1, method, block_size, exponent, permutation, global_n) + (
                covariance_penalty(c2, method, block_size, exponent, permutation, global_n)
            )
    return out


def _fused_terms(z1, z2, terms, block_size, exponent, permutation, gamma, eps) -> dict[str, torch.Tensor]:
    """The fast single-process path of the relaxation: every term from the fused pass (``_fused.py``)."""
    n, d = z1.shape
    scale = vicreg_block_scale(n, d, block_size, z1)
    squared_difference, squares, pairs, diagonal = _fused.RelaxedVICReg.apply(
        z1, z2, permutation, block_size, exponent, _fused.row_chunks(n, d, z1), scale
    )
    out = {}
    if "invariance" in terms:
        out["invariance"] = squared_difference / (n * d)
    if "variance" in terms:
        out["variance"] = hinge_from_squares(squares, n, gamma, eps).mean()  # of the two views
    out["covariance"] = mean_over_block_pairs(pairs[0], diagonal[0]) + (mean_over_block_pairs(pairs[1], diagonal[1]))
    return out


def _invariance(z1: torch.Tensor, z2: torch.Tensor, global_n: int | None) -> torch.Tensor:
    if global_n is None:
        return invariance_loss(z1, z2, check_finite=False)
    return _distributed.all_reduce_sum((z1 - z2).pow(2).sum()) / (global_n * z1.shape[1])


def _centre(z: torch.Tensor, global_n: int | None) -> torch.Tensor:
    """Subtract the batch mean: of the local rows, or of the global batch of ``global_n`` rows."""
    if global_n is None:
        return z - z.mean(dim=0)
    return z - _distributed.global_mean(z, global_n)


class VICRegLoss(DecorrelationLoss):
    """VICReg as a ``torch.nn.Module`` (lightly's name): ``loss_fn(z1, z2)`` returns
    ``vicreg_loss(z1, z2, ...)`` with the module's arguments, and ``loss_fn.terms`` the last
    call's unweighted terms (detached), for logging.

    Arguments as in ``vicreg_loss``, plus:
        permute: with ``method="fft"``, a fresh random feature permutation on every call in
            training mode, none in eval mode (``_module.py``). The permutation is the module's
            business: pass none.
        seed: of the module's generator for the permutations, an integer in [0, 2**64 - 1]
            (default: drawn from torch's global generator when the module is made). Part of
            the ``state_dict``.
        measure_all_terms: also measure the terms whose weight is 0 (without a gradient) and
            put them in ``terms``, as the training curves do.

    Example::

        loss_fn = VICRegLoss(method="fft", exponent=1)  # relaxed, a fresh permutation each step
        loss = loss_fn(projector(backbone(x1)), projector(backbone(x2)))
        loss.backward(); print({k: float(v) for k, v in loss_fn.terms.items()})
    """

    def __init__(
        self,
        sim_coeff: float = _DEFAULT["sim_coeff"],
        std_coeff: float = _DEFAULT["std_coeff"],
        cov_coeff: float = _DEFAULT["cov_coeff"],
        *,
        method: str = "exact",
        block_size: int | None = None,
        exponent: float = 2,
        permute: bool = True,
        seed: int | None = None,
        gamma: float = 1.0,
        eps: float = 1e-4,
        check_finite: bool = True,
        gather_distributed: bool = False,
        impl: str = "auto",
        measure_all_terms: bool = False,
    ) -> None:
        check_positive(gamma, "gamma")
        check_eps(eps)
        super().__init__(
            dict(sim_coeff=sim_coeff, std_coeff=std_coeff, cov_coeff=cov_coeff),
            method=method,
            block_size=block_size,
            exponent=exponent,
            permute=permute,
            seed=seed,
            check_finite=check_finite,
            gather_distributed=gather_distributed,
            impl=impl,
            measure_all_terms=measure_all_terms,
            gamma=gamma,
            eps=eps,
        )


SPEC = LossSpec(
    name="vicreg",
    title="VICReg",
    terms=VICREG_TERMS,
    terms_function=vicreg_terms,
    loss_function=vicreg_loss,
    module=VICRegLoss,
    methods=METHODS,
)
VICRegLoss.spec = SPEC
