"""ipywidgets panels for the notebooks.

Each panel is an object, not a bare ``interact``: ``panel.widget`` is what the notebook displays,
``panel.controls`` the widgets a test (or a curious student) can set, and after each update
``panel.result`` and ``panel.figure`` hold what was computed and drawn. Results are memoised by
the controls' values, so toggling back to a setting seen before redraws at once.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from . import jobs, plots
from .jobs import TrainingCancelled
from .losses import barlow_twins_loss, loss_spec
from .plots import toy_figure  # notebook 01 draws a toy run with widgets.toy_figure
from .toy import toy_data, train_toy


def term_controls(loss: str) -> dict[str, tuple[str, float]]:
    """{coefficient: (label, default weight)} for each term of ``loss``, from its spec."""
    return {term.coefficient: (term.label, term.default) for term in loss_spec(loss).terms}


def term_widgets(
    terms: dict[str, tuple[str, float]], weights: dict[str, float] | None = None, width: str | None = None
):
    """A checkbox (on/off) and a log-scale weight slider (two decades below the weight, one
    above; applied on release) per term of ``term_controls``; ``weights`` replaces the defaults
    (a weight of 0, which a log scale cannot show, leaves the slider at the term's default)."""
    import ipywidgets as W

    checkboxes = {k: W.Checkbox(value=True, description=label, indent=False) for k, (label, _) in terms.items()}
    sliders = {}
    for k, (_, default) in terms.items():
        value = (weights or {}).get(k, default)
        if not (math.isfinite(value) and value > 0):
            value = default
        sliders[k] = W.FloatLogSlider(value=value, base=10, min=math.log10(value) - 2, max=math.log10(value) + 1,
                                      step=0.1, description="weight", continuous_update=False, readout_format=".3g",
                                      **({"layout": W.Layout(width=width)} if width else {}))  # fmt: skip
    return checkboxes, sliders


def _show(output, fig) -> None:
    """Replace what ``output`` shows by ``fig`` as a PNG, then close the figure: it lives on as
    the image in the output, and an open figure would be drawn a second time below the cell.
    The output's contents are set directly, not captured with ``with output:``, which works only
    from the kernel's main thread: a panel's background training draws from its own thread."""
    output.outputs = (_png_output(fig),)
    plots.close(fig)


def _png_output(fig) -> dict:
    """The figure as a notebook display output (what an Output widget's ``outputs`` holds)."""
    return {
        "output_type": "display_data",
        "metadata": {},
        "data": {"image/png": plots.png_base64(fig), "text/plain": repr(fig)},
    }


class TermPanel:
    """A checkbox and a weight slider per loss term; any change re-runs ``run(**weights)``
    (a switched-off term gets weight 0) and redraws ``draw(result)`` below the controls."""

    def __init__(
        self, terms: dict[str, tuple[str, float]], run: Callable[..., Any], draw: Callable[[Any], Any]
    ) -> None:
        import ipywidgets as W

        self.run, self.draw = run, draw
        self.checkboxes, self.sliders = term_widgets(terms)
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
        weights = self.weights()
        key = tuple(sorted(weights.items()))
        t0 = time.perf_counter()
        if key not in self._memo:
            self._memo[key] = self.run(**weights)
        self.result = self._memo[key]
        self.figure = self.draw(self.result)
        self.updates += 1
        on = [k for k, w in weights.items() if w]
        self.status.value = (
            f"<small>terms on: {', '.join(on) or 'none'} &mdash; {time.perf_counter() - t0:.1f} s</small>"
        )
        _show(self.output, self.figure)


def toy_panel(loss: str = "vicreg", **train_kwargs) -> TermPanel:
    """The notebook 01 panel: toggle and weigh each term, retrain the toy encoder, redraw."""
    terms = term_controls(loss)
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
        self.slider = W.SelectionSlider(
            options=list(range(1, d + 1)), value=d, description="block size b", continuous_update=False
        )
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
        _show(self.output, fig)


_PANELS_MADE = itertools.count()
_DRAWING = threading.Lock()  # held while a panel draws a figure


class TrainPanel:
    """Choose a CIFAR-10 run: each term on or off and its weight, and the embedding width d;
    see its figure, and train a setting that nobody has trained yet in the background.

    A checkbox and a log-scale weight slider per term (a term that is off gets weight 0; the
    slider applies on release), a choice of d, a "Train" and a "Cancel" button with a progress
    bar, and ``draw(result)`` (or ``draw(result, at)`` with a slider over the recorded
    evaluation steps, ``step_slider=True``) below. A setting held by the user's run cache or by
    the run bank (every checkbox combination at the default weights and d) is drawn as soon as it
    is chosen. Any other setting waits for "Train", which trains it in the background (a
    ``jobs.TrainingJob``): the kernel stays free for other cells, the progress bar advances with
    the time left beside it (estimated from the steps timed so far on this machine), "Cancel"
    stops the run (nothing is cached, also when pressed during its final evaluation), an error is
    shown in the panel, and the figure is drawn when the run ends. One run trains at a time per panel; a setting
    chosen meanwhile is offered for training once it ends; ``panel.join()`` waits for it
    (scripts and tests). With ``prefetch`` (the default), every checkbox combination that is
    ready is drawn ahead, one at a time between the student's own requests, which come first,
    so that choosing one shows it at once. A term that ``settings`` weigh 0 starts switched off.

    ``settings`` are the ``TrainConfig`` fields shared by every run of the panel (budget, d, ...).
    """

    DIMS = (256, 512, 1024, 2048)

    def __init__(
        self,
        loss: str = "vicreg",
        *,
        draw: Callable[..., Any],
        settings: dict | None = None,
        step_slider: bool = False,
        prefetch: bool = True,
    ) -> None:
        import threading

        import ipywidgets as W

        terms = term_controls(loss)  # a clear error for an unknown loss
        self.loss, self.draw, self.settings = loss, draw, dict(settings or {})
        weights = {**(self.settings.pop("weights", None) or {}), **self.settings}  # a mapping, or keywords
        given = {k: float(weights[k]) for k in terms if k in weights}
        for k, weight in given.items():
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"{k} must be a finite number >= 0, got {weights[k]!r}")
        # a term's weight when on: the settings', else the loss's default; a term the settings
        # weigh 0 starts switched off, its slider at the default
        self.defaults = {k: given.get(k) or default for k, (_, default) in terms.items()}
        self.checkboxes, self.sliders = term_widgets(terms, self.defaults, width="300px")
        for k, weight in given.items():
            self.checkboxes[k].value = weight > 0
        dim = int(self.settings.get("dim", 1024))
        self.dim = W.Dropdown(
            options=sorted({*self.DIMS, dim}), value=dim, description="d", layout=W.Layout(width="160px")
        )
        self.train_button = W.Button(
            description="Train",
            icon="play",
            button_style="primary",
            tooltip="train this setting in the background (cached afterwards)",
        )
        self.cancel_button = W.Button(
            description="Cancel", icon="stop", disabled=True, tooltip="stop the training run (nothing is cached)"
        )
        self.progress = W.IntProgress(value=0, min=0, max=1, description="", layout=W.Layout(width="240px"))
        self.remaining = W.Label(value="")  # the time left of the run training now (a Label: not the status HTML)
        self.step = (
            W.SelectionSlider(
                options=[0], value=0, description="step", continuous_update=False, layout=W.Layout(width="420px")
            )
            if step_slider
            else None
        )
        self.controls = {**{f"{k}_on": c for k, c in self.checkboxes.items()}, **self.sliders, "dim": self.dim}
        if self.step is not None:
            self.controls["step"] = self.step
        self.status = W.HTML()
        self.output = W.Output()
        self.result = None
        self.figure = None
        self.updates = 0
        self.trained = 0  # runs trained by the button (not loaded)
        self._memo: dict[str, Any] = {}
        self._images: dict[tuple, tuple] = {}  # (run key, evaluation point) -> (figure, PNG output)
        self._syncing = False
        self._job: jobs.TrainingJob | None = None  # the last run started by Train
        self._order = next(_PANELS_MADE)  # its figures are drawn ahead after earlier panels'
        for control in [*self.checkboxes.values(), *self.sliders.values(), self.dim]:
            control.observe(self.update, names="value")
        if self.step is not None:
            self.step.observe(self._redraw, names="value")
        self.train_button.on_click(self.train)
        self.cancel_button.on_click(self.cancel)
        rows = [W.HBox([self.checkboxes[k], self.sliders[k]]) for k in terms]
        rows.append(W.HBox([self.dim, self.train_button, self.cancel_button, self.progress, self.remaining]))
        if self.step is not None:
            rows.append(self.step)
        self.widget = W.VBox([*rows, self.status, self.output])
        self.update()
        if prefetch and jobs.kernel_loop() is not None:  # the runs load in a thread, the figures draw on the main one
            threading.Thread(target=self._prefetch, daemon=True, name="TrainPanel prefetch").start()
        elif prefetch:  # no kernel (a script, a test): at once
            self._prefetch()

    def snapshot(self):
        """What the panel shows now, as an ordinary image output (``display(panel.snapshot())``):
        a static copy of the notebook (GitHub, nbviewer) shows a widget only as a line of text."""
        import base64

        from IPython.display import Image, Markdown

        if not self.output.outputs:
            return Markdown(f"*{self._describe()}: not trained yet.*")
        return Image(data=base64.b64decode(self.output.outputs[0]["data"]["image/png"]))

    @property
    def training(self) -> bool:
        """Whether a run of this panel is training now (from "Train" until its end is shown)."""
        return self._job is not None and self._job.running

    @property
    def error(self) -> BaseException | None:
        """The last training run's error (a ``TrainingCancelled`` if it was cancelled), if it failed."""
        return None if self._job is None else self._job.error

    def config(self):
        from .train import TrainConfig

        weights = {k: (float(self.sliders[k].value) if box.value else 0.0) for k, box in self.checkboxes.items()}
        return TrainConfig(**{**self.settings, "loss": self.loss, "dim": int(self.dim.value), **weights})

    def _describe(self, config=None) -> str:
        config = config or self.config()
        on = [f"{box.description} {config.weights[k]:.3g}" for k, box in self.checkboxes.items() if config.weights[k]]
        return f"{self.loss}, d = {config.dim}, terms on: {', '.join(on) or 'none'}"

    def update(self, change=None) -> None:
        """Show the run of the chosen setting if it exists; otherwise offer the button."""
        if change is not None:  # a student moved a control
            DRAW_AHEAD.last_request = time.monotonic()
        from .train import cached_run, run_key

        config = self.config()
        key = run_key(config)
        if key not in self._memo:
            found = cached_run(config)
            if found is not None:
                self._memo[key] = found
        if key in self._memo:
            self._show(self._memo[key])
            return
        self.result = self.figure = None
        if not self.training:
            self.progress.value = 0
            self.train_button.disabled = False
            self.status.value = (
                f"<small>{self._describe(config)} &mdash; not in the run bank or your run cache: press "
                "<b>Train</b> to train it from CIFAR-10 in the background (the time left shows beside "
                "the progress bar, estimated from the steps done so far on this machine).</small>"
            )
        else:
            self.status.value = (
                f"<small>{self._describe(config)} &mdash; not trained yet; the panel is busy with "
                "another run (one at a time): Cancel it, or wait.</small>"
            )
        self.output.outputs = ()

    def train(self, button=None) -> None:
        """Train the chosen setting in the background (the button's handler); the figure is drawn
        when it ends. Does nothing while another run of this panel trains."""
        if self.training:
            return
        config = self.config()
        job = jobs.TrainingJob(
            config,
            on_progress=self._progress,
            on_result=lambda result: self._ended(job, result, None),
            on_error=lambda error: self._ended(job, None, error),
        )
        self._job = job
        self.train_button.disabled = True
        self.cancel_button.disabled = False
        self.progress.value = 0
        self.remaining.value = jobs.remaining_text(None)
        self.status.value = f"<small>{self._describe(config)} &mdash; training in the background&hellip;</small>"
        job.start()

    def cancel(self, button=None) -> None:
        """Stop the run that is training: it stops after its current step, or, pressed during
        its final evaluation, when that ends; either way nothing is cached or shown."""
        if not self.training or not self._job.cancel():
            return
        self.status.value = (
            f"<small>{self._describe(self._job.config)} &mdash; cancelling&hellip; (nothing will be cached)</small>"
        )

    def join(self, timeout: float | None = None) -> None:
        """Wait until the run training now (if any) has ended, and re-raise its error."""
        if self._job is not None:
            self._job.join(timeout)
        if self.error is not None and not isinstance(self.error, TrainingCancelled):
            raise self.error

    def _progress(self, done: int, total: int, seconds_left: float | None) -> None:
        """The job's progress, after each training step (in the job's thread)."""
        self.progress.max = max(total, 1)
        self.progress.value = done
        self.remaining.value = jobs.remaining_text(seconds_left)

    def _ended(self, job, result, error: BaseException | None) -> None:
        """A training run has ended (on the main thread): keep it and draw it if it is still the
        chosen setting, else show the chosen one; or say why it failed or that it was cancelled."""
        from .train import run_key

        if job is not self._job:  # not the panel's run (cannot happen: one run at a time)
            return
        self.cancel_button.disabled = True
        self.remaining.value = ""
        chosen = run_key(self.config()) == run_key(job.config)
        if error is None:
            self.trained += not result.from_cache
            self._memo[run_key(job.config)] = result
            if chosen:
                self._show(result, seconds=job.seconds)
            else:
                self.update()
            return
        self.update()  # the chosen setting, now that nothing trains: its run, or the Train button
        what = "cancelled: nothing was cached" if isinstance(error, TrainingCancelled) else "training failed"
        note = f"<small>{self._describe(job.config)} &mdash; {what} ({type(error).__name__}: {error})</small>"
        self.status.value = note if chosen else f"{self.status.value}<br>{note}"

    def _show(self, result, seconds: float | None = None) -> None:
        self.result = result
        if not self.training or seconds is not None:
            self.progress.max = max(result.final.get("steps", 1), 1)
            self.progress.value = self.progress.max
        self.train_button.disabled = True  # this setting is trained; change a control for another
        if self.step is not None:  # the slider offers this run's evaluation steps, at the last one
            steps = [e["step"] for e in result.history]
            self._syncing = True
            try:
                if list(self.step.options) != steps:
                    self.step.options = steps
                self.step.value = steps[-1]
            finally:
                self._syncing = False
        if seconds is not None:
            took = f"trained in {seconds:.0f} s"
        elif result.from_bank:
            took = "from the run bank"
        else:
            took = "from the cache"
        self.status.value = (
            f"<small>{self._describe(_config_of(result))} &mdash; {took}: kNN "
            f"{result.final['knn_top1']:.3f}, effective rank {result.final['effective_rank']:.1f}, "
            f"{result.final['verdict']}</small>"
        )
        self._redraw()

    def _redraw(self, change=None) -> None:
        if self.result is None or (change is not None and self._syncing):
            return
        at = None
        if self.step is not None:
            at = [e["step"] for e in self.result.history].index(self.step.value)
        self.figure, image = self._render(self.result, at)
        self.updates += 1
        self.output.outputs = (image,)

    def _render(self, result, at: int | None):
        """The figure of ``result`` (at evaluation point ``at``) and its PNG output, drawn once:
        a setting seen before, or drawn ahead by ``_prefetch``, is shown without drawing."""
        from .train import run_key

        key = (run_key(_config_of(result)), at)
        # One figure at a time: a control's change can be handled on another thread of the
        # kernel (a subshell) while the main one draws ahead, and matplotlib is not thread-safe.
        # Waiting also means a figure is never drawn twice at once.
        with _DRAWING:
            if key not in self._images:
                figure = self.draw(result) if at is None else self.draw(result, at)
                image = _png_output(figure)
                plots.close(figure)
                self._images[key] = (figure, image)
        return self._images[key]

    def _prefetch(self) -> None:
        """Draw every checkbox combination the run bank or the run cache holds, so that the first
        visit to each is as quick as a return to it (drawing one of these figures takes a
        fraction of a second, longer on a slow machine). In a kernel this loads the runs in a
        background thread and ``DRAW_AHEAD`` draws them on the main thread one at a time, after
        whatever the student asked for in between: first the combinations one click away from
        the one shown, then the others, and every panel's after those of the panels made before."""
        import itertools

        from .train import TrainConfig, cached_run

        base = self.config().as_dict()
        shown = tuple(box.value for box in self.checkboxes.values())
        combinations = sorted(
            itertools.product((True, False), repeat=len(self.checkboxes)),
            key=lambda on: sum(a != b for a, b in zip(on, shown)),  # clicks away from the one shown
        )
        for rank, on in enumerate(combinations):
            weights = {k: (self.defaults[k] if o else 0.0) for k, o in zip(self.checkboxes, on)}
            found = cached_run(TrainConfig(**{**base, **weights}))
            if found is not None:
                DRAW_AHEAD.add((self._order, rank), self, found, None if self.step is None else len(found.history) - 1)

    def _draw_ahead(self, result, at) -> None:
        """Draw ``result`` unless the student has chosen it already."""
        from .train import run_key

        key = run_key(_config_of(result))
        self._memo.setdefault(key, result)
        if (key, at) not in self._images:
            self._render(result, at)


class _DrawAhead:
    """The figures that panels draw ahead, one queue for the kernel: drawn on the main thread in
    order of (panel made, clicks away from what it shows), one per callback. In a kernel the next
    callback comes a moment later (``DRAW_AHEAD_PAUSE``), so a control the student moves
    meanwhile is handled, and its figure drawn, before the next prefetched one; and with several
    panels, the first one's neighbours are drawn before a later panel's figures. Outside a
    kernel, all at once."""

    def __init__(self) -> None:
        import threading

        self.items: list = []  # a heap of (priority, count, panel, run, evaluation point)
        self.count = 0
        self.lock = threading.Lock()
        self.scheduled = False  # a draw_next call is scheduled on the main thread
        self.last_request = float("-inf")  # when a student last changed a panel's control (monotonic)

    def add(self, priority, panel, result, at) -> None:
        import heapq

        with self.lock:
            self.count += 1
            heapq.heappush(self.items, (priority, self.count, panel, result, at))
            if self.scheduled:  # the scheduled draw_next will come to it
                return
            self.scheduled = True
        jobs.on_main_thread(self.draw_next)

    def draw_next(self) -> None:
        import heapq

        loop = jobs.kernel_loop()
        if loop is not None and time.monotonic() - self.last_request < DRAW_AHEAD_QUIET:
            # the student is clicking: their figures first, without a figure drawn ahead in the way
            loop.call_later(DRAW_AHEAD_QUIET, self.draw_next)
            return
        while True:
            with self.lock:
                if not self.items:
                    self.scheduled = False
                    return
                _, _, panel, result, at = heapq.heappop(self.items)
            try:
                panel._draw_ahead(result, at)
            except Exception:  # drawn again, and the error shown, when the student chooses it
                pass
            if loop is not None:
                # not add_callback: a student's click reaches its handler through several turns of
                # the kernel's loop, and a figure drawn ahead at each turn would delay it by each
                loop.call_later(DRAW_AHEAD_PAUSE, self.draw_next)
                return


DRAW_AHEAD = _DrawAhead()
DRAW_AHEAD_PAUSE = 0.2  # seconds the kernel's loop is left free between two figures drawn ahead
DRAW_AHEAD_QUIET = 1.0  # seconds after a student's change before figures are drawn ahead again


def _config_of(result):
    from .train import TrainConfig

    return TrainConfig(**result.config)
