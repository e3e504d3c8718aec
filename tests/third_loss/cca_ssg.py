"""CCA-SSG (Zhang, Wu, Yu, Gu, Ma 2021, arXiv 2106.12484), written as a new loss of decorr_lite
is written: one file, registered with one line (``LOSSES[SPEC.name] = SPEC``). The tests register
it to show that training, the command line, the checks and the run keys need nothing else.

With per-feature standardised views ``zt = (z - mean) / (std * sqrt(n))``, so that ``zt.T @ zt``
is the correlation matrix C of a view:

    L = invariance_weight * ||zt1 - zt2||_F^2
        + decorrelation_weight * (||C1 - I||_F^2 + ||C2 - I||_F^2)

``method="exact"`` forms C (d x d, O(n d^2)); ``method="gram"`` uses
``||C - I||^2 = ||zt zt^T||^2 - 2 tr(C) + d`` (n x n, O(n^2 d)). There is no relaxed method.
"""

from __future__ import annotations

import torch

from decorr_lite.losses._checks import check_pair
from decorr_lite.losses._module import DecorrelationLoss
from decorr_lite.losses._spec import LossSpec, Term

CCA_SSG_TERMS = (
    Term("invariance", "invariance_weight", 1.0, "invariance", help="CCA-SSG: weight of ||zt1 - zt2||^2"),
    Term("decorrelation", "decorrelation_weight", 5e-4, "decorrelation", help="CCA-SSG: weight of ||C - I||^2"),
)
METHODS = ("exact", "gram")
_DEFAULT = {term.coefficient: term.default for term in CCA_SSG_TERMS}


def _standardised(z: torch.Tensor) -> torch.Tensor:
    n = z.shape[0]
    return (z - z.mean(dim=0)) / (z.std(dim=0) * n**0.5)


def _off_identity(zt: torch.Tensor, method: str) -> torch.Tensor:
    if method == "exact":
        c = zt.T @ zt
        return (c - torch.eye(c.shape[0], dtype=c.dtype, device=c.device)).square().sum()
    gram = zt @ zt.T
    return gram.square().sum() - 2 * zt.square().sum() + zt.shape[1]


def cca_ssg_terms(z1, z2, *, terms=("invariance", "decorrelation"), method="exact", check_finite=True, **options):
    """{term: 0-dim tensor}, unweighted, for the requested terms of two (n, d) views."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} for CCA-SSG; got {method!r}.")
    z1, z2 = check_pair(z1, z2, check_finite=check_finite)
    zt1, zt2 = _standardised(z1), _standardised(z2)
    values = {}
    if "invariance" in terms:
        values["invariance"] = (zt1 - zt2).square().sum()
    if "decorrelation" in terms:
        values["decorrelation"] = _off_identity(zt1, method) + _off_identity(zt2, method)
    return values


def cca_ssg_loss(z1, z2, *, invariance_weight=_DEFAULT["invariance_weight"],
                 decorrelation_weight=_DEFAULT["decorrelation_weight"], method="exact", **options):  # fmt: skip
    weights = {"invariance": invariance_weight, "decorrelation": decorrelation_weight}
    values = cca_ssg_terms(z1, z2, terms=[t for t, w in weights.items() if w], method=method, **options)
    return sum((weights[t] * v for t, v in values.items()), torch.zeros((), device=z1.device))


class CCASSGLoss(DecorrelationLoss):
    def __init__(self, invariance_weight=_DEFAULT["invariance_weight"],
                 decorrelation_weight=_DEFAULT["decorrelation_weight"], *, method="exact", block_size=None,
                 exponent=2.0, permute=True, seed=None, check_finite=True, gather_distributed=False, impl="auto",
                 measure_all_terms=False):  # fmt: skip
        super().__init__(
            dict(invariance_weight=invariance_weight, decorrelation_weight=decorrelation_weight),
            method=method, block_size=block_size, exponent=exponent, permute=permute, seed=seed,
            check_finite=check_finite, gather_distributed=gather_distributed, impl=impl,
            measure_all_terms=measure_all_terms,
        )  # fmt: skip


SPEC = LossSpec(name="cca-ssg", title="CCA-SSG", terms=CCA_SSG_TERMS, terms_function=cca_ssg_terms,
                loss_function=cca_ssg_loss, module=CCASSGLoss, methods=METHODS)  # fmt: skip
CCASSGLoss.spec = SPEC
