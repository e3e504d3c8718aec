"""What ``VICRegLoss`` and ``BarlowTwinsLoss`` share: the weights of their spec's terms, the
options of the decorrelation method, and the feature permutation of the relaxed method.

The permutation policy. With ``method="fft"`` and ``permute=True``, every call in training mode
draws a fresh permutation of the d features from a generator the module owns (``seed``), and
a call in eval mode draws none, so that evaluating a model is deterministic. With
``gather_distributed=True`` in a process group, rank 0's permutation is broadcast to every rank,
so that all ranks use the same one whatever their seeds. The generator's state is part of the
``state_dict``: a resumed run continues the same sequence.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.distributed as dist
from torch import nn

from . import _distributed
from ._checks import check_block_size, check_exponent, check_flag, check_method, check_positive, check_seed
from ._spec import LossSpec
from .methods import check_impl


class DecorrelationLoss(nn.Module):
    spec: ClassVar[LossSpec]

    def __init__(
        self,
        weights: dict[str, float],
        *,
        method: str,
        block_size: int | None,
        exponent: float,
        permute: bool,
        seed: int | None,
        check_finite: bool,
        gather_distributed: bool,
        impl: str,
        measure_all_terms: bool,
        **options,
    ) -> None:
        super().__init__()
        for term in self.spec.terms:
            check_positive(weights[term.coefficient], term.coefficient, allow_zero=True)
        self.weights = self.spec.weights(weights)
        check_exponent(exponent)
        check_method(method, exponent)
        check_block_size(block_size, None)  # its upper bound, d, is checked at every call
        self.method, self.block_size, self.exponent = method, block_size, exponent
        self.permute, self.check_finite = check_flag(permute, "permute"), check_flag(check_finite, "check_finite")
        self.gather_distributed = check_flag(gather_distributed, "gather_distributed")
        self.impl, self.options = check_impl(impl), options
        self.measure_all_terms = check_flag(measure_all_terms, "measure_all_terms")
        seed = check_seed(seed)
        # A seed from torch's global generator when none is given: torch.manual_seed then makes
        # the module's permutations reproducible too, and the module has its own state after that.
        self.seed = int(torch.randint(2**62, ())) if seed is None else seed
        self.generator = torch.Generator().manual_seed(self.seed)
        self.terms: dict[str, torch.Tensor] = {}  # the last call's unweighted terms, detached

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """The weighted loss of the two views (n, d); ``self.terms`` holds its unweighted terms."""
        permutation = self.next_permutation(z1.shape[-1], z1.device)
        compute = lambda terms: self.spec.terms_function(  # noqa: E731
            z1,
            z2,
            terms=terms,
            method=self.method,
            block_size=self.block_size,
            exponent=self.exponent,
            permutation=permutation,
            check_finite=self.check_finite,
            gather_distributed=self.gather_distributed,
            impl=self.impl,
            **self.options,
        )
        active = [name for name, weight in self.weights.items() if weight]
        values = compute(active) if active else {}
        loss = sum((self.weights[name] * values[name] for name in active), z1.new_zeros((), dtype=torch.float32))
        inactive = [name for name in self.weights if name not in values]
        if self.measure_all_terms and inactive:
            with torch.no_grad():  # measured for the curves, without a gradient: the term is off
                values.update({k: v for k, v in compute(inactive).items() if k in inactive})
        self.terms = {name: value.detach() for name, value in values.items()}
        return loss

    def next_permutation(self, d: int, device: torch.device) -> torch.Tensor | None:
        """The permutation of this call: a fresh one in training mode with ``method="fft"`` and
        ``permute``, else None (it is drawn inside ``forward``; call this only to see the policy)."""
        if not (self.training and self.permute and self.method == "fft"):
            return None
        permutation = torch.randperm(d, generator=self.generator).to(device)
        if self.gather_distributed and _distributed.active():
            dist.broadcast(permutation, src=0)  # one permutation for every rank, by construction
        return permutation

    def get_extra_state(self) -> dict:
        return {"seed": self.seed, "generator": self.generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.seed = int(state["seed"])
        self.generator.set_state(state["generator"])

    def extra_repr(self) -> str:
        weights = ", ".join(f"{term.coefficient}={self.weights[term.name]:g}" for term in self.spec.terms)
        relaxed = f", block_size={self.block_size}, permute={self.permute}" if self.method == "fft" else ""
        return f"{weights}, method={self.method!r}, exponent={self.exponent:g}{relaxed}"
