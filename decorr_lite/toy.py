"""A toy problem small enough to train live in a notebook, in the spirit of Jing et al. (ICLR 2022).

Inputs x in R^16: the first ``clean`` coordinates carry the "content" of an image, the others are
nuisance. An "augmentation" adds strong noise to the nuisance coordinates (and a little to the
content), so the two views of an input agree only on its content. A linear encoder z = W x maps
the inputs to d embedding dimensions and is trained with any weights of VICReg's three terms (or
Barlow Twins' two), by full-batch gradient descent, in about a second on a CPU.

What each term does is then visible in a few numbers:

- all terms on: the encoder keeps the content, drops the nuisance, spreads it over all d
  dimensions (std near the margin, full effective rank);
- variance off: invariance and covariance are both smallest at W = 0: the cloud shrinks to a point;
- covariance off: nothing stops the dimensions from repeating each other: the effective rank drops;
- invariance off: nothing tells the encoder that the nuisance is noise: the views disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import diagnostics
from .losses import loss_spec


@dataclass(frozen=True)
class ToyData:
    """``x`` (n, input_dim) and a function drawing the two noisy views of it."""

    x: torch.Tensor
    clean: int
    nuisance_noise: float
    content_noise: float

    def views(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n, dim = self.x.shape
        scale = torch.full((dim,), self.nuisance_noise, dtype=self.x.dtype)
        scale[: self.clean] = self.content_noise
        noise = lambda: torch.randn(n, dim, generator=generator, dtype=self.x.dtype) * scale  # noqa: E731
        return self.x + noise(), self.x + noise()


def toy_data(
    n: int = 512,
    input_dim: int = 16,
    clean: int = 8,
    *,
    nuisance_noise: float = 2.0,
    content_noise: float = 0.1,
    seed: int = 0,
) -> ToyData:
    """Gaussian inputs with unit variance per coordinate; see the module docstring."""
    if not 0 < clean <= input_dim:
        raise ValueError(f"clean must be in [1, input_dim={input_dim}], got {clean}")
    g = torch.Generator().manual_seed(seed)
    return ToyData(torch.randn(n, input_dim, generator=g), clean, nuisance_noise, content_noise)


@dataclass
class ToyRun:
    """The trained encoder ``weight`` (d, input_dim), the embeddings of both views at the end,
    and per-step histories of every term and of the embeddings' median std and effective rank."""

    weight: torch.Tensor
    z1: torch.Tensor
    z2: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def report(self) -> diagnostics.CollapseReport:
        """The collapse report of the final embeddings, their spread judged against the
        untrained encoder's (step 0), as for the CIFAR-10 runs."""
        return diagnostics.collapse_report(self.z1, reference_std=self.history["median_std"][0])


def train_toy(
    data: ToyData | None = None,
    *,
    loss: str = "vicreg",
    dim: int = 8,
    steps: int = 300,
    lr: float = 0.05,
    seed: int = 0,
    record_every: int = 10,
    **weights: float,
) -> ToyRun:
    """Train the linear toy encoder with ``loss`` (a name of ``decorr_lite.losses.LOSSES``) and
    its terms' weights by coefficient name (``std_coeff=0.0``: variance off; the others keep their
    defaults)."""
    spec = loss_spec(loss)
    unknown = sorted(set(weights) - set(spec.defaults))
    if unknown:
        raise ValueError(f"{spec.title}'s weights are {tuple(spec.defaults)}; got {unknown}")
    data = data if data is not None else toy_data(seed=seed)
    g = torch.Generator().manual_seed(seed)
    weight = (torch.randn(dim, data.x.shape[1], generator=g) / data.x.shape[1] ** 0.5).requires_grad_()
    optimizer = torch.optim.Adam([weight], lr=lr)
    weights = spec.weights(weights)
    history: dict[str, list[float]] = {"step": [], "median_std": [], "effective_rank": [], **{t: [] for t in weights}}

    def terms(z1, z2):
        return spec.terms_function(z1, z2, check_finite=False)

    for step in range(steps + 1):
        v1, v2 = data.views(g)
        z1, z2 = v1 @ weight.T, v2 @ weight.T
        values = terms(z1, z2)
        if step % record_every == 0 or step == steps:
            history["step"].append(step)
            for name, value in values.items():
                history[name].append(float(value.detach()))
            report = diagnostics.collapse_report(z1.detach())
            history["median_std"].append(report.median_std)
            history["effective_rank"].append(report.effective_rank)
        if step == steps:
            break
        total = sum(w * values[t] for t, w in weights.items() if w)
        optimizer.zero_grad()
        if isinstance(total, torch.Tensor):
            total.backward()
            optimizer.step()
    with torch.no_grad():
        v1, v2 = data.views(torch.Generator().manual_seed(seed + 1))
        w = weight.detach()
        return ToyRun(w, v1 @ w.T, v2 @ w.T, history)
