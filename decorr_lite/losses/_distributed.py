"""Batch statistics over every process of ``torch.distributed``, with the gradients DDP expects.

With ``gather_distributed=True`` the losses are computed on the *global* batch: the
concatenation of every rank's local batch. Each method communicates what it needs:

- ``"exact"`` and ``"gram"`` gather the embeddings (``gather_rows``: O(n*d) per rank);
- ``"fft"`` all-reduces sums only: per-feature sums for the means and variances (O(d)), and the
  local sums of wrapped diagonals (O(g*g*b)); never the embeddings.

Gradient convention. Every rank computes the same global loss L. The backward of these
collectives sums over ranks, so the gradient of rank r's loss with respect to its local
embeddings is ``world_size * dL/dz_r``: world_size times the corresponding slice of the
single-process gradient. DistributedDataParallel then *averages* parameter gradients over the
ranks, which divides by world_size again: each parameter ends with exactly the gradient of the
single-process loss on the global batch. (Sum instead of average, and you would need to divide
the loss by world_size.)
"""

from __future__ import annotations

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


def global_count(n: int, device: torch.device) -> int:
    """The number of samples over all ranks."""
    count = torch.tensor([n], dtype=torch.int64, device=device)
    dist.all_reduce(count, op=dist.ReduceOp.SUM)
    return int(count.item())


def gather_rows(z: torch.Tensor) -> torch.Tensor:
    """The (N, d) concatenation, in rank order, of every rank's (n_r, d) tensor; ranks may hold
    different n_r. Backward: rank r receives the sum over ranks of the gradient of its rows."""
    return _GatherRows.apply(z)


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        world = dist.get_world_size()
        sizes = torch.zeros(world, dtype=torch.int64, device=z.device)
        sizes[dist.get_rank()] = z.shape[0]
        dist.all_reduce(sizes, op=dist.ReduceOp.SUM)
        sizes = sizes.tolist()
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
        return grad[start : start + ctx.sizes[ctx.rank]]
