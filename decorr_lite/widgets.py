"""ipywidgets panels for the notebooks.

Each panel is an object, not a bare ``interact``: ``panel.widget`` is what the notebook displays,
``panel.controls`` the widgets a test (or a curious student) can set, and after each update
``panel.result`` and ``panel.figure`` hold what was computed and drawn. Results are memoised by
the controls' values, so toggling back to a setting seen before redraws at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from . import plots
from .losses import barlow_twins_loss
from .toy import ToyRun, toy_data, train_toy

VICREG_TERMS = {"sim_coeff": ("invariance", 25.0), "std_coeff": ("variance", 25.0), "cov_coeff": ("covariance", 1.0)}
BARLOW_TERMS = {"on_diag_coeff": ("on-diagonal", 1.0), "lambd": ("off-diagonal", 0.0051)}


class TermPanel:
    """A checkbox and a weight slider per loss term; any change re-runs ``run(**weights)``
    (a switched-off term gets weight 0) and redraws ``draw(result)`` below the controls."""

    def __init__(self, terms: dict[str, tuple[str, float]], run: Callable[..., Any], draw: Callable[[Any], Any]) -> None:
        import ipywidgets as W

        self.run, self.draw = run, draw
        self.checkboxes = {k: W.Checkbox(value=True, description=label, indent=False) for k, (label, _) in terms.items()}
        self.sliders = {
            k: W.FloatLogSlider(value=default, base=10, min=math.log10(default) - 2, max=math.log10(default) + 1,
                                step=0.1, description="weight", continuous_update=False, readout_format=".3g")
            for k, (_, default) in terms.items()
        }
        self.controls = {**{f"{k}_on": c for k, c in self.checkboxes.items()}, **self.sliders}
        self.output = W.Output()
        self.status = W.HTML()
        self.result: Any = None
        self.figure = None
        self.updates = 0
        self._memo: dict[tuple, Any] = {}
        for control in self.controls.values():
            control.observe(self.update, names="value")
        rows = [W.HBox([self.checkboxes[k], self.sliders[k]]) for k in terms]
        self.widget = W.VBox([*rows, self.status, self.output])
        self.update()

    def weights(self) -> dict[str, float]:
        return {k: (self.sliders[k].value if self.checkboxes[k].value else 0.0) for k in self.checkboxes}

    def update(self, change=None) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        weights = self.weights()
        key = tuple(sorted(weights.items()))
        t0 = time.perf_counter()
        if key not in self._memo:
            self._memo[key] = self.run(**weights)
        self.result = self._memo[key]
        self.figure = self.draw(self.result)
        self.updates += 1
        on = [k for k, w in weights.items() if w]
        self.status.value = f"<small>terms on: {', '.join(on) or 'none'} &mdash; {time.perf_counter() - t0:.1f} s</small>"
        with self.output:
            self.output.clear_output(wait=True)
            display(self.figure)
        plt.close(self.figure)


def toy_figure(run: ToyRun, margin: float = 1.0):
    """The toy run's embedding cloud, per-dimension std against the margin, and spectrum."""
    fig, axes = plots.new_axes(3)
    plots.embedding_cloud(axes[0], run.z1, run.z2)
    plots.std_bars(axes[1], run.z1, margin=margin)
    plots.spectrum(axes[2], run.z1)
    report = run.report
    fig.suptitle(f"{report.verdict}: median std {report.median_std:.2f}, effective rank "
                 f"{report.effective_rank:.1f} of {report.max_rank}", fontsize=10)
    fig.tight_layout()
    return fig


def toy_panel(loss: str = "vicreg", **train_kwargs) -> TermPanel:
    """The notebook 01 panel: toggle and weigh each term, retrain the toy encoder, redraw."""
    terms = VICREG_TERMS if loss == "vicreg" else BARLOW_TERMS
    data = toy_data(seed=train_kwargs.pop("seed", 0))
    return TermPanel(terms, partial(train_toy, data, loss=loss, **train_kwargs), toy_figure)


class BlockSizePanel:
    """A slider for the block size b of the relaxation: which entries are penalised one by one
    and which only in sums, how many sums there are, and the measured cost of one
    forward+backward pass of the relaxed Barlow Twins loss at this b."""

    def __init__(self, d: int = 16, *, cost_n: int = 256, cost_d: int = 4096, repeats: int = 3) -> None:
        import ipywidgets as W

        self.d, self.cost_n, self.cost_d, self.repeats = d, cost_n, cost_d, repeats
        # any b from 1 to d works (the last block is zero-padded), not only divisors of d
        self.slider = W.SelectionSlider(options=list(range(1, d + 1)), value=d, description="block size b",
                                        continuous_update=False)
        self.controls = {"block_size": self.slider}
        self.output = W.Output()
        self.status = W.HTML()
        self.figure = None
        self.result: dict | None = None
        self._memo: dict[int, float] = {}
        self.slider.observe(self.update, names="value")
        self.widget = W.VBox([self.slider, self.status, self.output])
        self.update()

    def seconds_at(self, fraction: float) -> float:
        """Median time of one forward+backward pass at n = cost_n, d = cost_d and b = fraction * cost_d."""
        b = max(1, round(fraction * self.cost_d))
        if b not in self._memo:
            g = torch.Generator().manual_seed(0)
            z1 = torch.randn(self.cost_n, self.cost_d, generator=g, requires_grad=True)
            z2 = torch.randn(self.cost_n, self.cost_d, generator=g, requires_grad=True)
            times = []
            for _ in range(self.repeats + 1):
                t0 = time.perf_counter()
                barlow_twins_loss(z1, z2, method="fft", block_size=b, check_finite=False).backward()
                times.append(time.perf_counter() - t0)
            self._memo[b] = sorted(times[1:])[len(times[1:]) // 2]
        return self._memo[b]

    def update(self, change=None) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        b = self.slider.value
        fig, axes = plots.new_axes(1, size=4.2)
        plots.wrapped_diagonals(axes[0], self.d, b)
        seconds = self.seconds_at(b / self.d)
        self.result = {"block_size": b, "sums": plots.count_penalties(self.d, b), "seconds": seconds}
        self.status.value = (
            f"<small>b = {b}: {self.result['sums']} sums of off-diagonal entries are penalised "
            f"(exact: {self.d * (self.d - 1)} single entries). Cost at n = {self.cost_n}, "
            f"d = {self.cost_d}, b = {max(1, round(b / self.d * self.cost_d))}: "
            f"{1000 * seconds:.1f} ms per forward+backward.</small>"
        )
        self.figure = fig
        with self.output:
            self.output.clear_output(wait=True)
            display(fig)
        plt.close(fig)
