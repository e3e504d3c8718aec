"""``torch.compile`` of the loss modules: the compiled loss and its gradients equal eager mode's,
for the exact, Gram and relaxed methods. (The relaxed path's written-out backward runs as an
opaque autograd.Function inside the compiled graph.)"""

from __future__ import annotations

import shutil

import pytest
import torch
from helpers import losses_and_methods

import decorr_lite as dl

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("cc") is None and shutil.which("gcc") is None,
        reason="torch.compile's CPU backend needs a C compiler",
    ),
]


@pytest.mark.parametrize("loss, method", losses_and_methods())
def test_the_compiled_module_equals_eager(loss, method):
    module_class = dl.loss_spec(loss).module
    options = dict(method="fft", block_size=8, exponent=1) if method == "fft" else dict(method=method)
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, generator=g)
    z1, z2 = x + 0.3 * torch.randn(64, 32, generator=g), x + 0.3 * torch.randn(64, 32, generator=g)
    eager, compiled = module_class(**options, seed=1), module_class(**options, seed=1)
    step = torch.compile(compiled)
    for _ in range(2):  # two calls: two permutations for fft, and the compiled graph reused
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        want = eager(a, b)
        want_grads = torch.autograd.grad(want, (a, b))
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        got = step(a, b)
        got_grads = torch.autograd.grad(got, (a, b))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for g_got, g_want in zip(got_grads, want_grads):
            torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-6)
    assert set(compiled.terms) == set(eager.terms)
