"""``gather_distributed=True`` across real processes (gloo on loopback): the loss equals the
single-process loss of the global batch, for every method, and each rank's gradient with
respect to its local embeddings is world_size times its slice of the single-process gradient
(the convention under which DDP's averaging yields the single-process parameter gradients,
which the last test checks by training).

Splits are uneven (11 samples over 2 and 3 ranks). Everything is float64; the workers write
their results to files that the test compares with a single-process computation.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from decorr_lite import barlow_twins_loss, vicreg_loss

N, D = 11, 8
SPLITS = {2: [6, 5], 3: [4, 3, 4]}


def cases():
    """(name, loss function, keyword arguments): every method, both exponents, b dividing d
    and not, with and without a permutation, and VICReg with single terms switched off."""
    perm = torch.randperm(D, generator=torch.Generator().manual_seed(3))
    out = []
    for name, fn in (("vicreg", vicreg_loss), ("barlow", barlow_twins_loss)):
        out += [
            (f"{name} exact", fn, {}),
            (f"{name} exact q=1", fn, {"exponent": 1}),
            (f"{name} gram", fn, {"method": "gram"}),
            (f"{name} fft b=d", fn, {"method": "fft"}),
            (f"{name} fft b=d q=1 perm", fn, {"method": "fft", "exponent": 1, "permutation": perm}),
            (f"{name} fft b=3 perm", fn, {"method": "fft", "block_size": 3, "permutation": perm}),
            (f"{name} fft b=4", fn, {"method": "fft", "block_size": 4}),
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


def _rows(world: int, rank: int) -> slice:
    """The rows of the global batch that ``rank`` holds."""
    start = sum(SPLITS[world][:rank])
    return slice(start, start + SPLITS[world][rank])


def _init(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _worker(rank: int, world: int, port: int, out: str, job) -> None:
    """One spawned process: join the group, run ``job(world, rank)``, save what it returns."""
    _init(rank, world, port)
    try:
        torch.save(job(world, rank), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _loss_results(world: int, rank: int) -> list:
    z1, z2 = global_batch()
    rows = _rows(world, rank)
    results = []
    for _, fn, kwargs in cases():
        a, b = z1[rows].clone().requires_grad_(), z2[rows].clone().requires_grad_()
        loss = fn(a, b, gather_distributed=True, **kwargs)
        loss.backward()
        results.append((loss.detach(), a.grad, b.grad))
    return results


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_loss_and_gradients_equal_single_process(world, tmp_path):
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path), _loss_results), nprocs=world, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    z1, z2 = global_batch()
    for i, (name, fn, kwargs) in enumerate(cases()):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        loss = fn(a, b, **kwargs)
        loss.backward()
        for rank in range(world):
            rows = _rows(world, rank)
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
TRAIN_CASES = [("vicreg", {"method": "exact"}), ("vicreg", {"method": "fft", "exponent": 1}),
               ("barlow", {"method": "gram"}), ("barlow", {"method": "fft", "block_size": 3})]


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
