"""Batch statistics over every process of ``torch.distributed``, with the gradients DDP expects.

With ``gather_distributed=True`` the losses are computed on the *global* batch: the
concatenation of every rank's local batch. Each method communicates what it needs:

- ``"exact"`` and ``"gram"`` gather the embeddings (``gather_rows``: O(n*d) per rank);
- ``"fft"`` all-reduces sums only: per-feature sums for the means and variances (O(d)), and the
  local sums of wrapped diagonals (O(g*g*b)); never the embeddings.

Agreement. Every rank must call the loss with the same arguments: a permutation drawn with each
rank's own seed, a different exponent or block size would give each rank a different loss (or
an abort inside the collectives, or a hang). So each call first exchanges a fingerprint of its
arguments and its row count (``agree``: one all-gather of 16 integers per rank); a rank whose
arguments differ, or fail their checks (``checked_together``), makes every rank raise the same
error. The row counts give the global batch size, which is what must be at least 2: a rank may
hold 0 or 1 rows.

Gradient convention. Every rank computes the same global loss L. The backward of these
collectives sums over ranks, so the gradient of rank r's loss with respect to its local
embeddings is ``world_size * dL/dz_r``: world_size times the corresponding slice of the
single-process gradient. DistributedDataParallel then *averages* parameter gradients over the
ranks, which divides by world_size again: each parameter ends with exactly the gradient of the
single-process loss on the global batch. (Sum instead of average, and you would need to divide
the loss by world_size.)
"""

from __future__ import annotations

import contextlib
import hashlib
import numbers
import struct

import torch
import torch.distributed as dist


def active() -> bool:
    """True when a default process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over the ranks; its backward sums the gradients over the ranks too."""
    return _AllReduceSum.apply(x)


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def global_mean(z: torch.Tensor, n: int) -> torch.Tensor:
    """Per-feature mean of the global batch of ``n`` rows, of which ``z`` holds this rank's."""
    return all_reduce_sum(z.sum(dim=0)) / n


def global_max(x: torch.Tensor) -> torch.Tensor:
    """Elementwise maximum of ``x`` over the ranks (no gradient: for detached statistics)."""
    x = x.detach().clone(memory_format=torch.contiguous_format)
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


SLOTS = 16  # fingerprint length: status, schema, rows, then one slot per argument
_FAILED, _NONE = 1, 0x5E7_0_DEC0  # status of a rank whose checks failed; the code of None
PERMUTATION_HINT = (
    "Every rank must use the same permutation: draw it from a generator seeded the same on every "
    "rank (torch.randperm(d, generator=torch.Generator().manual_seed(step))), or broadcast rank "
    "0's (torch.distributed.broadcast(permutation, src=0))."
)


def _device() -> torch.device:
    """Where the collectives' tensors live: the current GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _code(value) -> int:
    """A 64-bit code of an argument, equal on every rank for equal values: numbers by their float64
    bits (so that 2 and 2.0 agree), None by a constant, anything else by a hash of its content."""
    if value is None:
        return _NONE
    if isinstance(value, numbers.Real):
        return struct.unpack("<q", struct.pack("<d", float(value)))[0]
    data = (
        value.detach().cpu().to(torch.int64).numpy().tobytes()
        if isinstance(value, torch.Tensor)
        else repr(value).encode()
    )
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little", signed=True)


def _exchange(status: int, schema, rows: int, values: list[int]) -> torch.Tensor:
    """(world, SLOTS): every rank's fingerprint, one all-gather."""
    fingerprint = torch.zeros(SLOTS, dtype=torch.int64)
    fingerprint[:3] = torch.tensor([status, _code(schema), rows])
    fingerprint[3 : 3 + len(values)] = torch.tensor(values, dtype=torch.int64)
    fingerprint = fingerprint.to(_device())
    table = [torch.empty_like(fingerprint) for _ in range(dist.get_world_size())]
    dist.all_gather(table, fingerprint)
    return torch.stack(table).cpu()


@contextlib.contextmanager
def checked_together(distributed: bool):
    """The argument checks of a distributed call. A rank whose checks fail still joins the
    fingerprint exchange (flagged as failed) before raising, so that the other ranks raise too
    instead of waiting for it in a collective until the timeout."""
    if not distributed:
        yield
        return
    try:
        yield
    except (TypeError, ValueError):
        _exchange(_FAILED, None, 0, [])
        raise


def agree(loss: str, arguments: dict, rows: int) -> list[int]:
    """Check that every rank called ``loss`` with the same ``arguments`` (name -> value; a
    permutation tensor among them) and return every rank's number of rows.

    Raises ``ValueError`` on every rank, naming the arguments that differ, when they differ,
    when some rank's arguments failed their checks, or when the global batch has fewer than 2
    rows. One all-gather of ``SLOTS`` integers per rank.
    """
    names = list(arguments)
    if len(names) > SLOTS - 3:
        raise ValueError(f"at most {SLOTS - 3} arguments can be compared across ranks, got {len(names)}")
    table = _exchange(0, (loss, *names), rows, [_code(arguments[name]) for name in names])
    prefix = f"{loss} with gather_distributed=True:"
    failed = (table[:, 0] == _FAILED).nonzero().flatten().tolist()
    if failed:
        raise ValueError(
            f"{prefix} rank(s) {failed} rejected their arguments (see the error there); no rank computed the loss."
        )
    if bool((table[:, 1] != table[0, 1]).any()):
        raise ValueError(f"{prefix} the ranks called different losses or terms; every rank must make the same call.")
    differ = [name for i, name in enumerate(names) if bool((table[:, 3 + i] != table[0, 3 + i]).any())]
    if differ:
        mine = ", ".join(f"{name}={_describe(arguments[name])}" for name in differ)
        hint = f" {PERMUTATION_HINT}" if "permutation" in differ else ""
        raise ValueError(
            f"{prefix} the ranks passed different {', '.join(differ)} (rank {dist.get_rank()}: {mine}); "
            f"every rank must pass the same arguments, or the loss is neither rank's.{hint}"
        )
    sizes = table[:, 2].tolist()
    if sum(sizes) < 2:
        raise ValueError(
            f"{prefix} the global batch has n = {sum(sizes)} sample(s) (rows per rank: {sizes}); "
            "batch statistics (variance, covariance) need n >= 2 over all ranks."
        )
    return sizes


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of {value.numel()} entries"
    return repr(value)


def gather_rows(z: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """The (N, d) concatenation, in rank order, of every rank's (n_r, d) tensor; ranks may hold
    different n_r (``sizes``, from ``agree``). Backward: rank r receives the sum over ranks of the
    gradient of its rows."""
    return _GatherRows.apply(z, sizes)


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, sizes):
        world = dist.get_world_size()
        # all_gather needs equal shapes: pad every rank's rows to the largest count
        padded = z.new_zeros((max(sizes), *z.shape[1:]))
        padded[: z.shape[0]] = z
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, dist.get_rank()
        return torch.cat([part[:size] for part, size in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # every rank's loss depends on these rows
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None
