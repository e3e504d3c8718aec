"""How a decorrelation term is computed: the three methods, and which implementation of the
relaxed one runs.

- ``method``: ``"exact"`` forms the d x d matrix, ``"gram"`` computes the same value through
  n x n Gram matrices, ``"fft"`` is the relaxation of Shigeto et al. (CVPR 2023).
- ``impl`` (``"fft"`` only): ``"modular"`` computes each term on its own with plain autograd
  (``circular.py``; it also serves the distributed case), ``"fused"`` computes every term in a
  few passes over the data with a written-out backward (``_fused.py``; one process, float32 or
  float64), and ``"auto"`` takes the fused path wherever it applies. Both give the same values
  and gradients; ``reference.py`` is the short version of the relaxation that both are tested
  against.
"""

from __future__ import annotations

import torch

METHODS = ("exact", "gram", "fft")
IMPLEMENTATIONS = ("auto", "fused", "modular")


def check_impl(impl) -> str:
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl must be one of {IMPLEMENTATIONS}; got {impl!r}.")
    return impl


def use_fused(impl: str, method: str, z: torch.Tensor, distributed: bool) -> bool:
    """Whether the fused path computes this call (``z``: the input, already in the precision the
    loss computes in). ``impl="fused"`` where it cannot apply is an error, not a silent fallback."""
    applies = method == "fft" and not distributed and z.dtype in (torch.float32, torch.float64)
    if impl == "fused" and not applies:
        raise ValueError(
            'impl="fused" needs method="fft", one process (no gather_distributed across ranks) and '
            f"float32 or float64 embeddings; got method={method!r}, dtype {z.dtype}"
            f'{", distributed" if distributed else ""}. Use impl="auto" or "modular".'
        )
    return applies and impl != "modular"
