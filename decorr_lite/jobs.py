"""Background work of the notebook panels: a training run in its own thread (``TrainingJob``),
and the hand-over of its outcome to the IPython kernel's main thread (``on_main_thread``).

Nothing here needs ipywidgets: a panel gives a job callbacks that move its widgets, and a test
gives it plain functions and a fake event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def kernel_loop():
    """The event loop of the IPython kernel's main thread, or None outside a kernel."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return getattr(getattr(get_ipython(), "kernel", None), "io_loop", None)


def on_main_thread(fn: Callable, *args) -> None:
    """Call ``fn(*args)`` on the kernel's main thread, as soon as it is free; at once outside a
    kernel or when already there. matplotlib is not thread-safe (two threads drawing at once can
    fail, e.g. in its mathtext parser), so a panel's background work loads and trains in its
    own thread and draws on the main one, between the cells the student runs."""
    loop = kernel_loop()
    if loop is None or threading.current_thread() is threading.main_thread():
        fn(*args)
    else:
        loop.add_callback(fn, *args)  # tornado: safe to call from any thread


class TrainingCancelled(Exception):
    """A training job's outcome when it was cancelled (``TrainingJob.cancel``)."""


def estimate_remaining(first: tuple[int, float], latest: tuple[int, float], total: int) -> float | None:
    """Seconds that the steps not done yet will take, at the mean time per step measured from
    ``first`` to ``latest`` (each a pair: steps done, clock reading). Timing starts after the
    first step, which also warms up (and after what comes before it: reading the data, building
    the model); None until a step after it has been timed."""
    (done_first, t_first), (done, t) = first, latest
    if done <= done_first:
        return None
    return (t - t_first) / (done - done_first) * max(total - done, 0)


def remaining_text(seconds: float | None) -> str:
    """``estimate_remaining``'s answer in words, measured on this machine and said to be."""
    if seconds is None:
        return "timing the first steps…"
    if seconds <= 0:
        return "final evaluation…"
    if seconds < 100:
        return f"about {max(1, round(seconds))} s of training left on this machine"
    return f"about {round(seconds / 60)} min of training left on this machine"


class TrainingJob:
    """One CIFAR-10 training run (``train_ssl``) in a background thread.

    ``start()`` returns at once. After each training step the job calls
    ``on_progress(steps_done, total_steps, seconds_left)`` in its thread, ``seconds_left``
    estimated from the steps timed so far (``estimate_remaining``; None at first). When the run
    ends, its outcome is handed over on the kernel's main thread (``on_main_thread``):
    ``on_result(result)``, or ``on_error(error)`` for a run that failed or was cancelled
    (a ``TrainingCancelled``). ``cancel()`` counts until that hand-over: it stops the run after
    its current step, or, pressed during the final evaluation (``train_ssl`` calls no callback
    there) or after it, drops the run when it ends.

    The run is trained without the run cache (``train_ssl(cache=False)``) and stored in it
    (``runs.save_run``) at the hand-over, only when it was not cancelled: a cancelled run is never
    in the cache. A run that the cache or the run bank holds by then (trained meanwhile by
    another panel or process) is loaded instead of trained.

    ``result``, ``error`` and ``seconds`` (the time the run took) are set when it has ended;
    ``running`` is True from ``start()`` until the hand-over; ``join()`` waits for the thread.
    """

    def __init__(
        self,
        config,
        *,
        on_progress: Callable[[int, int, float | None], Any] | None = None,
        on_result: Callable[[Any], Any] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = config
        self.on_progress, self.on_result, self.on_error = on_progress, on_result, on_error
        self.clock = clock
        self.result = None
        self.error: BaseException | None = None
        self.seconds: float | None = None
        self.remaining: float | None = None  # the last estimate of the seconds left
        self.thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._lock = threading.Lock()  # cancel() against the hand-over
        self._handed_over = False
        self._first: tuple[int, float] | None = None  # (steps done, clock) at the first step

    @property
    def running(self) -> bool:
        """Started and not handed over yet (cancel still counts)."""
        return self.thread is not None and not self._handed_over

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def start(self) -> None:
        if self.thread is not None:
            raise RuntimeError("a training job runs once; make a new one for another run")
        self.thread = threading.Thread(target=self._run, daemon=True, name="TrainingJob")
        self.thread.start()

    def cancel(self) -> bool:
        """Cancel the run; False (and nothing done) once its outcome has been handed over."""
        with self._lock:
            if self._handed_over:
                return False
            self._cancel.set()
            return True

    def join(self, timeout: float | None = None) -> None:
        """Wait for the job's thread: the run has ended, and its hand-over is done (outside a
        kernel) or queued on the kernel's main thread."""
        if self.thread is not None:
            self.thread.join(timeout)

    def _tick(self, done: int, total: int) -> None:
        """``train_ssl``'s callback, after each training step."""
        if self._cancel.is_set():
            raise TrainingCancelled(f"cancelled after {done} of {total} steps")
        now = self.clock()
        if self._first is None:
            self._first = (done, now)
        self.remaining = estimate_remaining(self._first, (done, now), total)
        if self.on_progress is not None:
            self.on_progress(done, total, self.remaining)

    def _run(self) -> None:
        """The job's thread: find or train the run, then hand it over on the main thread."""
        from . import train

        t0 = self.clock()
        try:
            result = train.cached_run(self.config)
            if result is None:
                result = train.train_ssl(self.config, cache=False, progress=False, callback=self._tick)
            if self._cancel.is_set():  # pressed after the last step, during the final evaluation
                raise TrainingCancelled("cancelled during the final evaluation")
            self.result = result
        except BaseException as caught:  # handed over: a thread's exception is otherwise lost
            self.error = caught
        self.seconds = self.clock() - t0
        on_main_thread(self._hand_over)

    def _hand_over(self) -> None:
        """On the main thread: cache the run unless it was cancelled meanwhile, then pass it on."""
        with self._lock:
            self._handed_over = True
            if self.error is None and self._cancel.is_set():
                self.result, self.error = None, TrainingCancelled("cancelled after training ended")
        if self.error is None and not self.result.from_cache:
            from . import record, runs

            try:
                runs.save_run(self.result, record.run_key(self.config))  # a cache that cannot be written warns
            except Exception as caught:
                self.result, self.error = None, caught
        if self.error is None:
            if self.on_result is not None:
                self.on_result(self.result)
        elif self.on_error is not None:
            self.on_error(self.error)
