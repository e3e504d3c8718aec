"""``gather_distributed=True`` across real processes (gloo on loopback): the loss equals the
single-process loss of the global batch, for every method, and each rank's gradient with
respect to its local embeddings is world_size times its slice of the single-process gradient
(the convention under which DDP's averaging yields the single-process parameter gradients,
which the last test checks by training).

Splits are uneven (11 samples over 2 and 3 ranks). Everything is float64; the workers write
their results to files that the test compares with a single-process computation.
"""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from decorr_lite import LOSSES, barlow_twins_loss, vicreg_loss

N, D = 11, 8
# Rows per rank. The global batch must have n >= 2; a rank may hold 0 or 1 rows.
SPLITS = {2: [6, 5], 3: [4, 3, 4], "2, one row": [1, 10], "3, an empty rank": [0, 5, 6]}


def cases():
    """(name, loss function, keyword arguments): every method, both exponents, b dividing d
    and not, with and without a permutation, and VICReg with single terms switched off."""
    perm = torch.randperm(D, generator=torch.Generator().manual_seed(3))
    out = []
    settings = [
        ("exact", {}),
        ("exact q=1", {"exponent": 1}),
        ("gram", {"method": "gram"}),
        ("fft b=d", {"method": "fft"}),
        ("fft b=d q=1 perm", {"method": "fft", "exponent": 1, "permutation": perm}),
        ("fft b=3 perm", {"method": "fft", "block_size": 3, "permutation": perm}),
        ("fft b=4", {"method": "fft", "block_size": 4}),
    ]
    for name, spec in LOSSES.items():  # every loss, with every setting of a method it supports
        out += [
            (f"{name} {label}", spec.loss_function, kwargs)
            for label, kwargs in settings
            if kwargs.get("method", "exact") in spec.methods
        ]
    out += [
        ("vicreg invariance off", vicreg_loss, {"sim_coeff": 0.0, "method": "fft"}),
        ("vicreg variance only", vicreg_loss, {"sim_coeff": 0.0, "cov_coeff": 0.0}),
        ("vicreg variance only fft", vicreg_loss, {"sim_coeff": 0.0, "cov_coeff": 0.0, "method": "fft"}),
        ("barlow on-diagonal only fft", barlow_twins_loss, {"lambd": 0.0, "method": "fft"}),
    ]
    return out


def global_batch():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(N, D, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(N, D, generator=g, dtype=torch.float64)
    return z1, z2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(split, rank: int) -> slice:
    """The rows of the global batch that ``rank`` holds."""
    start = sum(SPLITS[split][:rank])
    return slice(start, start + SPLITS[split][rank])


def _init(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    # a short timeout: a collective that one rank never joins fails the test instead of hanging it
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))


def _worker(rank: int, world: int, port: int, out: str, job, split=None) -> None:
    """One spawned process: join the group, run ``job(split, rank)``, save what it returns."""
    _init(rank, world, port)
    try:
        torch.save(job(world if split is None else split, rank), Path(out) / f"rank{rank}.pt")
        # no rank leaves while another still talks to it: gloo aborts a process whose peer has gone
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _loss_results(split, rank: int) -> list:
    z1, z2 = global_batch()
    rows = _rows(split, rank)
    results = []
    for _, fn, kwargs in cases():
        a, b = z1[rows].clone().requires_grad_(), z2[rows].clone().requires_grad_()
        loss = fn(a, b, gather_distributed=True, **kwargs)
        loss.backward()
        results.append((loss.detach(), a.grad, b.grad))
    return results


@pytest.mark.parametrize("split", list(SPLITS))
def test_distributed_loss_and_gradients_equal_single_process(split, tmp_path):
    world = len(SPLITS[split])
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path), _loss_results, split), nprocs=world, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    z1, z2 = global_batch()
    for i, (name, fn, kwargs) in enumerate(cases()):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        loss = fn(a, b, **kwargs)
        loss.backward()
        for rank in range(world):
            rows = _rows(split, rank)
            got_loss, got_a, got_b = per_rank[rank][i]
            torch.testing.assert_close(got_loss, loss.detach(), rtol=1e-10, atol=1e-12, msg=f"{name}, rank {rank}")
            torch.testing.assert_close(got_a, world * a.grad[rows], rtol=1e-9, atol=1e-12, msg=f"{name}, rank {rank}")
            torch.testing.assert_close(got_b, world * b.grad[rows], rtol=1e-9, atol=1e-12, msg=f"{name}, rank {rank}")


def test_without_a_process_group_the_flag_changes_nothing():
    z1, z2 = global_batch()
    for name, fn, kwargs in cases():
        assert torch.equal(fn(z1, z2, gather_distributed=True, **kwargs), fn(z1, z2, **kwargs)), name


# ------------------------------------------------------------------- DDP training = one process


STEPS, LR = 3, 0.05
TRAIN_CASES = [
    ("vicreg", {"method": "exact"}),
    ("vicreg", {"method": "fft", "exponent": 1}),
    ("barlow", {"method": "gram"}),
    ("barlow", {"method": "fft", "block_size": 3}),
]


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, D)).double()


def _inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, N, 5, generator=g, dtype=torch.float64)
    return x, x + 0.1 * torch.randn(STEPS, N, 5, generator=g, dtype=torch.float64)


def _train(model, x1, x2, loss_name, kwargs, rows=slice(None), distributed=False):
    fn = vicreg_loss if loss_name == "vicreg" else barlow_twins_loss
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for step in range(STEPS):
        opt.zero_grad()
        loss = fn(model(x1[step, rows]), model(x2[step, rows]), gather_distributed=distributed, **kwargs)
        loss.backward()
        opt.step()
    return model


def _ddp_results(world: int, rank: int) -> list:
    x1, x2 = _inputs()
    rows = _rows(world, rank)
    params = []
    for loss_name, kwargs in TRAIN_CASES:
        ddp = torch.nn.parallel.DistributedDataParallel(_model())
        _train(ddp, x1, x2, loss_name, kwargs, rows, distributed=True)
        params.append([p.detach().clone() for p in ddp.module.parameters()])
    return params


def test_ddp_training_matches_single_process_training(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path), _ddp_results), nprocs=world, join=True)
    x1, x2 = _inputs()
    for i, (loss_name, kwargs) in enumerate(TRAIN_CASES):
        reference = [p.detach() for p in _train(_model(), x1, x2, loss_name, kwargs).parameters()]
        untrained = [p.detach() for p in _model().parameters()]
        assert any(not torch.allclose(r, u) for r, u in zip(reference, untrained))  # training moved them
        for rank in range(world):
            got = torch.load(tmp_path / f"rank{rank}.pt")[i]
            for p, q in zip(got, reference):
                torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=f"{loss_name} {kwargs}, rank {rank}")


# ------------------------------------------------- ranks that disagree fail together, at once


def _perm(seed: int) -> torch.Tensor:
    return torch.randperm(D, generator=torch.Generator().manual_seed(seed))


# (name, loss, arguments of rank 0, arguments of rank 1, what the error must name). A rank
# whose arguments differ would get a loss that is neither rank's, an abort inside gloo, or a hang.
MISMATCHES = [
    (
        "vicreg permutation",
        vicreg_loss,
        {"method": "fft", "permutation": _perm(0)},
        {"method": "fft", "permutation": _perm(1)},
        "permutation",
    ),
    (
        "barlow permutation",
        barlow_twins_loss,
        {"method": "fft", "permutation": _perm(0)},
        {"method": "fft", "permutation": _perm(1)},
        "permutation",
    ),
    ("vicreg exponent", vicreg_loss, {"method": "fft", "exponent": 1}, {"method": "fft", "exponent": 2}, "exponent"),
    ("vicreg gamma", vicreg_loss, {"method": "fft", "gamma": 1.0}, {"method": "fft", "gamma": 2.0}, "gamma"),
    (
        "barlow block_size",
        barlow_twins_loss,
        {"method": "fft", "block_size": 4},
        {"method": "fft", "block_size": 2},
        "block_size",
    ),
    ("vicreg exact vs fft", vicreg_loss, {"method": "exact"}, {"method": "fft"}, "method"),
    ("barlow gram vs fft", barlow_twins_loss, {"method": "gram"}, {"method": "fft"}, "method"),
    ("vicreg sim_coeff", vicreg_loss, {"sim_coeff": 25.0}, {"sim_coeff": 10.0}, "sim_coeff"),
    ("barlow lambd", barlow_twins_loss, {"lambd": 0.005}, {"lambd": 0.01}, "lambd"),
    ("a NaN on one rank", vicreg_loss, {"method": "fft"}, {"method": "fft", "nan": True}, "rejected their arguments"),
    (
        "a bad block size on one rank",
        barlow_twins_loss,
        {"method": "fft"},
        {"method": "fft", "block_size": 99},
        "rejected their arguments",
    ),
]


def _mismatch_results(world: int, rank: int) -> list:
    z1, z2 = global_batch()
    rows = _rows(world, rank)
    messages = []
    for _, fn, *per_rank, _ in MISMATCHES:
        kwargs = dict(per_rank[rank])
        a, b = z1[rows].clone(), z2[rows].clone()
        if kwargs.pop("nan", False):
            a[0, 0] = float("nan")
        try:
            fn(a, b, gather_distributed=True, **kwargs)
            messages.append(None)
        except (ValueError, TypeError) as err:
            messages.append(str(err))
    return messages


def test_ranks_that_disagree_raise_on_every_rank(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path), _mismatch_results), nprocs=world, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for i, (name, *_, expected) in enumerate(MISMATCHES):
        for rank in range(world):
            message = per_rank[rank][i]
            assert message is not None, f"{name}: rank {rank} computed a loss"
            if expected == "rejected their arguments" and rank == 1:
                continue  # the rank with the bad input raises its own error (checked below)
            assert expected in message, f"{name}, rank {rank}: {message}"
    assert "NaN" in per_rank[1][-2] and "block_size" in per_rank[1][-1]
    assert "torch.distributed.broadcast" in per_rank[0][0]  # the permutation's fix is named


def _too_few_rows(world: int, rank: int):
    z1, z2 = global_batch()
    try:
        vicreg_loss(z1[:1] if rank == 0 else z1[:0], z2[:1] if rank == 0 else z2[:0], gather_distributed=True)
    except ValueError as err:
        return str(err)
    return None


def test_a_global_batch_of_one_row_raises_on_every_rank(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), _too_few_rows), nprocs=2, join=True)
    for rank in range(2):
        message = torch.load(tmp_path / f"rank{rank}.pt")
        assert message is not None and "global batch has n = 1" in message, message
