"""Argument checks shared by the loss functions.

Every check fails early with a message that names the argument, says what was expected and,
where there is one, the fix. The losses call these before any arithmetic, so a bad call never
gets as far as an obscure shape error deep inside a matmul or an FFT.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ._precision import is_transformed
from .methods import METHODS


def check_embeddings(z, name: str = "z", *, check_finite: bool = True, min_rows: int = 2) -> torch.Tensor:
    """Check that ``z`` is a finite floating (n, d) tensor with n >= ``min_rows`` and d >= 1.

    ``min_rows=0``: a rank's share of a distributed batch, where the global batch is what needs
    two rows (``_distributed.agree`` checks it)."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (n, d); got {type(z).__name__}.")
    if z.layout != torch.strided or z.is_meta:
        where = "on the meta device" if z.is_meta else f"with layout {z.layout}"
        raise TypeError(
            f"{name} is a tensor {where}; the losses need dense tensors on a real device. "
            f"Convert it with {name}.to_dense() or create it on 'cpu' or 'cuda'."
        )
    if z.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (n, d) = (batch size, embedding dimension); "
            f"got shape {tuple(z.shape)}. Flatten the other dimensions first: {name}.flatten(0, -2) makes every "
            f"token or patch a sample, {name}.flatten(1) makes one vector per sample."
        )
    if not z.is_floating_point():
        raise TypeError(
            f"{name} must have a real floating dtype (float16, bfloat16, float32 or float64); "
            f"got {z.dtype}. Convert it with {name}.float()."
        )
    n, d = z.shape
    if n < min_rows:
        raise ValueError(f"{name} has n = {n} sample(s); batch statistics (variance, covariance) need n >= 2.")
    if d < 1:
        raise ValueError(f"{name} has d = 0 features; an embedding needs d >= 1.")
    # A full pass over the data (and a device sync on GPU): training loops that have already
    # checked their inputs can pass check_finite=False.
    if check_flag(check_finite, "check_finite") and not _all_finite(z, name):
        raise ValueError(
            f"{name} contains NaN or Inf. Check the inputs and the learning rate; "
            "pass check_finite=False to skip this check inside a training loop."
        )
    return z


def _all_finite(z: torch.Tensor, name: str) -> bool:
    try:
        return bool(torch.isfinite(z).all())
    except RuntimeError as error:  # torch.func.vmap refuses a branch on the data
        if not is_transformed(z):
            raise
        raise RuntimeError(
            f"check_finite=True cannot run under torch.func.vmap: the check of {name} for NaN and Inf "
            "is a branch on the data, which vmap does not support. Pass check_finite=False (and "
            "check the inputs before the vmap, e.g. torch.isfinite(z).all(), if you need to)."
        ) from error


def check_flag(value, name: str) -> bool:
    """A switch: True or False (numpy's bool too), where ``bool(value)`` would turn any value,
    the string "False" included, into one without a word."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False; got {value!r} of type {type(value).__name__}.")


SEED_RANGE = (0, 2**64 - 1)  # what torch.Generator.manual_seed takes as a non-negative seed


def check_seed(seed) -> int | None:
    """A seed for ``torch.Generator.manual_seed``: None, or an integer (not a bool) in SEED_RANGE."""
    if seed is None:
        return None
    if not _is_integer(seed):
        raise TypeError(
            f"seed must be an integer in [0, 2**64 - 1], or None to draw one from torch's global "
            f"generator; got {seed!r} of type {type(seed).__name__}. Pass an int: seed=3, not 3.5, '3' or True."
        )
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ValueError(
            f"seed must be in [0, 2**64 - 1] (the seeds torch.Generator.manual_seed takes); got {seed}. "
            "Pass a seed in that range, e.g. seed % 2**64."
        )
    return int(seed)


def check_result(values: dict[str, torch.Tensor], what: str, inputs: dict[str, torch.Tensor], growth: str) -> None:
    """With ``check_finite``: refuse results (name -> tensor) that are inf or NaN although the
    ``inputs`` (name -> tensor) are finite (they were checked): their sums overflowed the dtype.
    ``growth`` says how the result grows with the scale of the inputs. One sync; only the error
    path looks at the inputs again."""
    flat = [v.detach().reshape(-1) for v in values.values()]
    if not flat or bool(torch.isfinite(flat[0] if len(flat) == 1 else torch.cat(flat)).all()):
        return
    bad = ", ".join(
        f"{name} {'inf' if bool(torch.isinf(v).any()) else 'NaN'}"
        for name, v in zip(values, flat)
        if not bool(torch.isfinite(v).all())
    )
    dtype = flat[0].dtype
    names = " and ".join(inputs)
    peak = max(z.detach().abs().max().item() for z in inputs.values())
    wider = f", or compute in float64 ({', '.join(f'{n}.double()' for n in inputs)})" if dtype != torch.float64 else ""
    raise ValueError(
        f"{what} overflowed {dtype} ({bad}) although {names} are finite: at their magnitude (largest "
        f"|entry| {peak:.3g}) its sums exceed {dtype}'s range ({torch.finfo(dtype).max:.3g}), and {growth}. "
        f"Bring the embeddings to a moderate scale (normalise them; in a diverging run, lower the learning "
        f"rate){wider}. check_finite=False skips this check and returns the inf or NaN."
    )


def check_pair(z1, z2, *, check_finite: bool = True, min_rows: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Check two views: each a valid embedding, same shape, dtype and device."""
    check_embeddings(z1, "z1", check_finite=check_finite, min_rows=min_rows)
    check_embeddings(z2, "z2", check_finite=check_finite, min_rows=min_rows)
    if z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must have the same shape (n, d): one row per sample in both views; "
            f"got z1 {tuple(z1.shape)} and z2 {tuple(z2.shape)}."
        )
    if z1.dtype != z2.dtype:
        raise TypeError(f"z1 and z2 must have the same dtype; got {z1.dtype} and {z2.dtype}.")
    if z1.device != z2.device:
        raise ValueError(f"z1 and z2 must be on the same device; got {z1.device} and {z2.device}.")
    return z1, z2


def _is_integer(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_block_size(block_size, d: int | None) -> int | None:
    """Return the block size b (None means b = d), checking 1 <= b <= d (b >= 1 for d None: a
    module's block size, before it sees its first batch)."""
    if block_size is None:
        return d
    if not _is_integer(block_size):
        raise TypeError(f"block_size must be an integer in [1, d] or None; got {block_size!r}.")
    if d is None:
        if block_size < 1:
            raise ValueError(f"block_size must be in [1, d] (1: exact, d: fully relaxed); got {block_size}.")
        return int(block_size)
    if not 1 <= block_size <= d:
        raise ValueError(f"block_size must be in [1, d] = [1, {d}] (1: exact, d: fully relaxed); got {block_size}.")
    return int(block_size)


def check_exponent(exponent) -> float:
    """Return the exponent q of |.|^q, checking it is a finite number >= 1.

    Below 1, |x|^q has an infinite slope at x = 0, so an exactly zero entry (a constant feature,
    a decorrelated pair) would give NaN gradients."""
    if isinstance(exponent, bool) or not isinstance(exponent, numbers.Real):
        raise TypeError(f"exponent must be a number >= 1 (1 or 2 in the paper); got {exponent!r}.")
    if not (math.isfinite(exponent) and exponent >= 1):
        raise ValueError(
            f"exponent must be a finite number >= 1 (1 or 2 in the paper); got {exponent}. Below 1, "
            "|x|^q has an infinite gradient at x = 0."
        )
    return exponent


def check_method(method, exponent) -> str:
    """Check the method name; "gram" computes a Frobenius norm, so it needs exponent 2."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
    if method == "gram" and exponent != 2:
        raise ValueError(
            f'method="gram" computes squared entries (a Frobenius norm), so it needs exponent=2; '
            f'got exponent={exponent}. Use method="exact" or "fft" for other exponents.'
        )
    return method


def check_permutation(permutation, d: int, device: torch.device) -> torch.Tensor | None:
    """Check that ``permutation`` is None or an integer tensor holding a permutation of range(d)."""
    if permutation is None:
        return None
    if not isinstance(permutation, torch.Tensor):
        raise TypeError(
            f"permutation must be a LongTensor permutation of range(d) or None; "
            f"got {type(permutation).__name__}. Draw one with torch.randperm(d)."
        )
    if permutation.dim() != 1 or permutation.numel() != d:
        raise ValueError(
            f"permutation must be 1-D with d = {d} entries; got shape {tuple(permutation.shape)}. "
            "Draw one with torch.randperm(d)."
        )
    if permutation.dtype.is_floating_point or permutation.dtype.is_complex or permutation.dtype == torch.bool:
        raise TypeError(f"permutation must have an integer dtype (torch.long); got {permutation.dtype}.")
    permutation = permutation.to(device=device, dtype=torch.long)
    # d indices, all in range, that hit every position: a permutation. O(d), where a sort costs
    # a millisecond per training step at d = 16384.
    valid = bool(((permutation >= 0) & (permutation < d)).all())
    if valid:
        seen = torch.zeros(d, dtype=torch.bool, device=device)
        seen[permutation] = True
        valid = bool(seen.all())
    if not valid:
        raise ValueError(
            f"permutation must contain every index 0..{d - 1} exactly once; draw one with torch.randperm(d)."
        )
    return permutation


def check_decorrelation_options(method, block_size, exponent, permutation, d: int, device: torch.device):
    """The four options shared by every decorrelation loss: (method, block_size, exponent, permutation)."""
    exponent = check_exponent(exponent)
    method = check_method(method, exponent)
    return method, check_block_size(block_size, d), exponent, check_permutation(permutation, d, device)


def check_positive(value, name: str, *, allow_zero: bool = False) -> float:
    """Check a real scalar hyper-parameter (coefficients, margins, eps)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite real number; got {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}; got {value}.")
    return value


def check_eps(eps) -> float:
    """The variance hinge's epsilon: > 0, since the hinge's gradient at a constant dimension
    (variance 0) is 1 / sqrt(variance + eps)."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps):
        raise TypeError(f"eps must be a finite real number > 0 (1e-4 in VICReg); got {eps!r}.")
    if eps <= 0:
        raise ValueError(
            f"eps must be > 0 (1e-4 in VICReg); got {eps}. The hinge's gradient at a constant "
            "dimension is 1 / sqrt(variance + eps), infinite for eps = 0."
        )
    return eps


FIRST_ORDER = (
    "supports first derivatives only: double backward (create_graph=True) and torch.func transforms "
    "(grad, vmap, jacrev, ...) are not supported. For higher-order derivatives use vicreg_loss with "
    'method="exact" or "gram", which is plain autograd.'
)


def check_not_transformed(z: torch.Tensor, what: str) -> None:
    """Reject inputs traced by torch.func, for paths written as custom autograd functions."""
    if is_transformed(z):
        raise NotImplementedError(f"{what} {FIRST_ORDER}")


def first_order(what: str):
    """``once_differentiable`` for a custom backward, failing at once with a message that says what
    is unsupported and what to use instead (torch's own error names neither)."""

    def decorate(backward):
        inner = once_differentiable(backward)

        @functools.wraps(backward)
        def run(ctx, *grads):
            if torch.is_grad_enabled():  # backward runs with grad enabled only for create_graph=True
                raise NotImplementedError(f"{what} {FIRST_ORDER}")
            return inner(ctx, *grads)

        return run

    return decorate
