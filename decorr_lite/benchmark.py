"""Time and peak memory of one forward+backward pass of a loss, for the scaling benchmarks.

Used by ``benchmarks/loss_scaling.py`` and the runtime notebook. Each case is measured in a
fresh Python process (``measure_isolated``): on the CPU, torch keeps no allocator statistics,
so peak memory is the growth of the process's resident-set high-water mark (VmHWM, reset
through /proc/self/clear_refs) during one pass, and a fresh process keeps one case's freed but
still-mapped memory from hiding the next case's peak. On CUDA it is torch's own
``max_memory_allocated``. Time is the median wall time of several passes after one warm-up.

The notebooks time with one fixed protocol instead (``timed``: cases in turn, one thread, CPU
time) and check their timing claims once, with a tolerance widened by the noise that the same run
measured (``noise_factor``, ``tolerance``, ``widen``, ``ratio_holds``, ``crossing``; the claims
themselves are checked by ``decorr_lite._claims``).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch

from .losses import LOSSES as _LOSSES
from .memory import peak_memory_since, start_peak_memory, synchronize
from .settings import resolve_device  # noqa: F401  (part of this module's API)

# every loss of the registry, and "rfft": two forward FFTs of the inputs, the floor for "fft"
LOSSES = (*_LOSSES, "rfft")


@dataclass(frozen=True)
class Case:
    """One measurement: a loss, a method, sizes and a device."""

    loss: str  # a name of decorr_lite.losses.LOSSES, or "rfft" (two forward torch.fft.rfft calls)
    n: int
    d: int
    method: str = "exact"
    block_size: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    impl: str = "auto"  # for method="fft": "fused" or "modular" to time one implementation

    @property
    def label(self) -> str:
        if self.loss == "rfft":
            return "rfft x2"
        if self.method != "fft":
            return self.method
        return "fft b=d" if self.block_size in (None, self.d) else f"fft b={self.block_size}"


def _forward_backward(case: Case):
    from .losses import loss_spec  # late import: keeps the worker's start small

    dtype = getattr(torch, case.dtype)
    gen = torch.Generator().manual_seed(0)
    z1 = torch.randn(case.n, case.d, generator=gen, dtype=dtype).to(case.device)
    z2 = (z1.cpu() + 0.5 * torch.randn(case.n, case.d, generator=gen, dtype=dtype)).to(case.device)
    if case.loss == "rfft":
        return lambda: (torch.fft.rfft(z1, dim=1), torch.fft.rfft(z2, dim=1))
    z1.requires_grad_()
    z2.requires_grad_()
    loss_fn = loss_spec(case.loss).loss_function
    perm = torch.randperm(case.d, generator=gen).to(case.device) if case.method == "fft" else None
    impl = {"impl": case.impl} if case.method == "fft" else {}

    def step():
        z1.grad = z2.grad = None
        loss = loss_fn(
            z1, z2, method=case.method, block_size=case.block_size, permutation=perm, check_finite=False, **impl
        )
        loss.backward()
        return loss

    return step


def measure(case: Case, repeats: int = 5, max_seconds: float = 30.0, min_seconds: float = 0.5) -> dict:
    """Peak memory of the first pass above the inputs, then the median time of the timed passes.

    Times at least ``repeats`` passes, and keeps going (up to 100) until ``min_seconds`` are
    spent so that millisecond cases get a stable median; stops once ``max_seconds`` are spent
    (after at least 3 passes) so that the slowest cases of a sweep stay affordable. Run this in
    a fresh process for a clean memory figure.
    """
    if case.loss not in LOSSES:
        raise ValueError(f"case.loss must be one of {LOSSES}; got {case.loss!r}.")
    step = _forward_backward(case)
    baseline = start_peak_memory(case.device)
    step()
    peak = peak_memory_since(case.device, baseline)

    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        step()
        synchronize(case.device)
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if len(times) >= repeats and (elapsed >= min_seconds or len(times) >= 100):
            break
        if len(times) >= 3 and elapsed >= max_seconds:
            break
    return {
        **asdict(case),
        "label": case.label,
        "seconds": statistics.median(times),
        "times": times,
        "peak_bytes": peak,
        "threads": torch.get_num_threads(),
    }


def measure_isolated(
    case: Case, repeats: int = 5, max_seconds: float = 30.0, min_seconds: float = 0.5, timeout: float = 900.0
) -> dict:
    """``measure`` in a fresh Python process; returns its result dictionary."""
    payload = json.dumps(
        {"case": asdict(case), "repeats": repeats, "max_seconds": max_seconds, "min_seconds": min_seconds}
    )
    return _run_worker(payload, timeout, case)


def alternate(
    steps, pairs: int, device: str = "cpu", clock=time.perf_counter
) -> tuple[list[list[float]], list[list[int]]]:
    """Run each step once (warm-up: plans, allocator, caches), then ``pairs`` rounds of one timed
    pass of each, in turn, so that all see the same machine. Returns, per step, the time of each
    pass on ``clock`` (wall time by default; ``time.process_time`` for the process's CPU time) and
    its minor page faults (first touches of fresh memory)."""
    for step in steps:
        step()
    times: list[list[float]] = [[] for _ in steps]
    faults: list[list[int]] = [[] for _ in steps]
    for _ in range(pairs):
        for step, record, faulted in zip(steps, times, faults):
            before, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, clock()
            step()
            synchronize(device)
            record.append(clock() - t0)
            faulted.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return times, faults


def time_alternated(cases: list[Case], passes: int = 10) -> list[dict]:
    """Time several cases (on one device) in this process, one pass of each in turn (``alternate``).

    On a shared host a busy spell then slows every case alike, where a sweep of separate
    processes lets it land on whichever case was running: use this to compare cases with each
    other (``sweep`` in fresh processes gives clean memory figures). Returns, per case in order,
    its fields, ``label``, the wall time of each pass (``times``), their median (``seconds``) and
    the minor page faults of each pass (``faults``).
    """
    times, faults = alternate([_forward_backward(c) for c in cases], passes, cases[0].device)
    return [
        {**asdict(c), "label": c.label, "times": t, "seconds": statistics.median(t), "faults": f}
        for c, t, f in zip(cases, times, faults)
    ]


def measure_pair(case: Case, reference: Case, pairs: int = 40) -> dict:
    """Time ``case`` and ``reference`` alternately in one process: their ratio, drift-free.

    Separate processes measured minutes apart see different machines on a shared host (the two
    ``rfft`` calls alone have measured 8.6 ms in one sweep and 18.4 ms in the next). Alternating
    the two, pass by pass, exposes both to the same conditions. Returns both time lists, the ratio
    of the medians and the ratio of the minima (the least disturbed passes of each).
    """
    timed, ref = time_alternated([case, reference], pairs)
    return {
        "case": asdict(case),
        "reference": asdict(reference),
        "pairs": pairs,
        "times": timed["times"],
        "reference_times": ref["times"],
        "median_ratio": timed["seconds"] / ref["seconds"],
        "min_ratio": min(timed["times"]) / min(ref["times"]),
        "threads": torch.get_num_threads(),
    }


def measure_pair_isolated(case: Case, reference: Case, pairs: int = 40, timeout: float = 900.0) -> dict:
    """``measure_pair`` in a fresh Python process."""
    payload = json.dumps({"pair": [asdict(case), asdict(reference)], "pairs": pairs})
    return _run_worker(payload, timeout, f"{case} against {reference}")


def _run_worker(payload: str, timeout: float, what) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "decorr_lite.benchmark", payload], capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed for {what}:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sweep(cases, *, isolated: bool = True, progress: bool = False, **kwargs) -> list[dict]:
    """Measure each case (in a fresh process when ``isolated``); keyword arguments go to ``measure``."""
    run = measure_isolated if isolated else measure
    results = []
    for case in cases:
        results.append(run(case, **kwargs))
        if progress:
            r = results[-1]
            print(
                f"{r['loss']:>7} {r['label']:>10} n={r['n']:<5} d={r['d']:<6} {1000 * r['seconds']:9.1f} ms "
                f"{r['peak_bytes'] / 2**20:8.1f} MB",
                flush=True,
            )
    return results


def fit_slope(x, y) -> float:
    """Least-squares slope of log(y) against log(x): the exponent p of y ~ x^p."""
    import numpy as np

    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    if len(lx) < 2:
        raise ValueError("fit_slope needs at least two points")
    return float(np.polyfit(lx, ly, 1)[0])


# The notebooks' fixed timing protocol and the noise tolerance of their claims.
#
# A claim about timings (a fitted slope, a ratio of two times) is checked once, on one run of a
# fixed protocol (``timed``), and its tolerance is widened by the noise that this same run
# measured (``noise_factor``): on a quiet machine the claims are as tight as written, on a busy
# one they loosen by what the run itself saw, up to ``NOISE_CAP``, beyond which a regression
# could hide in the noise.

NOISE_CAP = 2.0


def timed(cases: list[Case], passes: int = 5, threads: int = 1) -> list[dict]:
    """Time cases (on one device) once, with a fixed protocol; the notebooks' measurement.

    * Alternated (``alternate``): one warm-up pass of each case, then ``passes`` rounds of one
      pass of each, so that a busy spell slows every case alike.
    * On the CPU, in ``threads`` threads (one by default), timed on the process's CPU time. The
      threads of a pass meet at the end of every parallel operation; on a machine with other work
      the system deschedules one of them now and then and the others wait for it, spinning (so
      that even their CPU time counts the wait). On a 2-core host beside two busy processes that
      made two-thread passes 3 to 30 times slower, the short ones most, which bends slopes and
      ratios beyond what any tolerance could allow. One thread waits for nobody, and its CPU time
      leaves out the time other processes ran: what remains is the code's cost, plus what the
      others do to the caches, which ``noise_factor`` sees.
    * On CUDA: wall time after synchronising (the GPU's work is not the process's CPU time).

    Returns, per case in order: its fields, ``label``, the time of each pass (``times``), the
    fastest of them (``fastest``: a busy machine only adds time, so it is the steadiest estimate
    of the cost, and what the claims use), their median (``seconds``), ``clock`` and ``threads``.
    """
    device = cases[0].device
    on_cpu = not device.startswith("cuda")
    clock = time.process_time if on_cpu else time.perf_counter
    previous = torch.get_num_threads()
    if on_cpu:
        torch.set_num_threads(threads)
    try:
        times, _ = alternate([_forward_backward(c) for c in cases], passes, device, clock=clock)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    return [
        {
            **asdict(c),
            "label": c.label,
            "times": t,
            "fastest": min(t),
            "seconds": statistics.median(t),
            "clock": "cpu" if on_cpu else "wall",
            "threads": used if on_cpu else None,
        }
        for c, t in zip(cases, times)
    ]


def timed_run(cases: list[Case], passes: int = 5) -> tuple[list[dict], float]:
    """``timed``, then the run's ``noise_factor`` and ``tolerance``: prints them, for the reader,
    and returns the results and the tolerance for the claims on them."""
    rows = timed(cases, passes)
    noise = noise_factor(rows)
    tol = tolerance(noise)
    capped = f" (capped at {NOISE_CAP:g})" if tol < noise else ""
    threads = rows[0]["threads"]
    how = f"{rows[0]['clock']} time" + (f", {threads} thread{'s' * (threads != 1)}" if threads else "")
    print(
        f"timed {len(cases)} cases x {passes} passes, in turn ({how}): noise x{noise:.2f} (median pass / fastest "
        f"pass), so the claims on them tolerate x{tol:.2f}{capped}"
    )
    return rows, tol


def noise_factor(results: list[dict]) -> float:
    """The noise of one timed run: over its cases, the median of (median pass / fastest pass).

    1.0 when every case's passes agreed; 1.3 when a typical case's middle pass was 30 % slower
    than its fastest. A case's fastest pass may be off from its cost by about as much, so this is
    the factor by which the run's claims are widened (``tolerance``). Needs at least 3 passes a
    case (with 2 the median is their mean, and a single slow pass halves in weight)."""
    if not results or min(len(r["times"]) for r in results) < 3:
        raise ValueError("noise_factor needs at least one case, each timed at least 3 times")
    return statistics.median(statistics.median(r["times"]) / min(r["times"]) for r in results)


def tolerance(noise: float, cap: float = NOISE_CAP) -> float:
    """The factor a claim tolerates for a run of this ``noise``: the noise, at least 1 and at most
    ``cap`` (beyond it a claim would let a real regression pass, such as an O(d) loss gone O(d^2))."""
    return min(max(float(noise), 1.0), cap)


def slope_error(xs, tol: float) -> float:
    """How far a fitted slope (``fit_slope``) can move when each time may be up to ``tol`` times
    too slow: the slope is fitted by least squares to log(time) against log(x), so the most is
    log(tol) * sum(dx for dx > 0) / sum(dx^2), dx the deviations of log(x) from their mean. That
    is log(tol) / log(R) for two or three evenly spaced sizes spanning a factor R, somewhat more
    for more sizes (1.2 times for four or five); 0 for ``tol`` = 1."""
    import numpy as np

    lx = np.log(np.asarray(xs, dtype=float))
    dx = lx - lx.mean()
    if len(lx) < 2 or not (dx**2).sum() > 0:
        raise ValueError("slope_error needs at least two distinct sizes")
    return float(np.log(tol) * dx[dx > 0].sum() / (dx**2).sum())


def widen(band: tuple[float, float], xs, tol: float) -> tuple[float, float]:
    """A slope band ``(lo, hi)`` for sizes ``xs``, widened on each side by ``slope_error(xs, tol)``."""
    w = slope_error(xs, tol)
    return band[0] - w, band[1] + w


def ratio_holds(a: float, b: float, at_least: float | None = None, at_most: float | None = None, tol: float = 1.0):
    """Whether a / b >= ``at_least`` and <= ``at_most``, for times that may each be up to ``tol``
    times too slow: the measured ratio may then be off by ``tol`` either way, so the bounds are
    ``at_least / tol`` and ``at_most * tol``."""
    r = a / b
    return (at_least is None or r >= at_least / tol) and (at_most is None or r <= at_most * tol)


def crossing(xs, a, b, tol: float = 1.0) -> tuple:
    """Where times ``a`` overtake times ``b`` along sizes ``xs``: the first x where a > b as
    measured, the first where a > b * tol (slower beyond the noise) and the first where
    a * tol > b (slower within the noise); None where there is none."""

    def first(pred):
        return next((x for x, ta, tb in zip(xs, a, b) if pred(ta, tb)), None)

    return first(lambda ta, tb: ta > tb), first(lambda ta, tb: ta > tb * tol), first(lambda ta, tb: ta * tol > tb)


def peak_memory(cases: list[Case], timeout: float = 900.0) -> list[int]:
    """The peak memory of one pass of each case above its inputs, in bytes: all cases in one fresh
    worker process (one start instead of one per case), each after a warm-up pass.

    On the CPU the worker runs with a fixed malloc mmap threshold (``MALLOC_MMAP_THRESHOLD_``), so
    that every large buffer is mapped when allocated and returned to the system when freed: then
    the resident set's high-water mark, reset before each pass, sees each case's own buffers and
    not memory an earlier case left mapped. The warm-up leaves out one-time set-up (library and
    thread-pool initialisation, FFT plans), which ``measure_isolated``'s first pass includes, so
    its figures are the steady cost of a training step and somewhat lower. On CUDA: torch's
    allocator peak, in this process.
    """
    if cases and cases[0].device.startswith("cuda"):
        return [_steady_peak(case) for case in cases]
    payload = json.dumps({"memory": [asdict(c) for c in cases]})
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    proc = subprocess.run(
        [sys.executable, "-m", "decorr_lite.benchmark", payload],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _steady_peak(case: Case) -> int:
    step = _forward_backward(case)
    step()  # warm-up
    baseline = start_peak_memory(case.device)
    step()
    return peak_memory_since(case.device, baseline)


def describe_machine() -> dict:
    """What a measurement ran on: the CPU, the instruction set torch's kernels use (``AVX2`` on
    most laptops, ``AVX512`` where the CPU has it, unless ``ATEN_CPU_CAPABILITY`` limits it),
    whether bf16 is native (``precision="auto"`` picks it then), threads, versions and the date."""
    import datetime
    import platform

    from .record import _cpu_name
    from .settings import native_bf16

    return {
        "cpu": _cpu_name(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16("cpu"),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }


def machine_line(machine: dict) -> str:
    """``describe_machine()`` as the one line a benchmark prints first."""
    return (
        f"{machine['cpu']} | torch kernels: {machine['capability']} | native bf16: {machine['native_bf16']} | "
        f"{machine['threads']} threads | torch {machine['torch']} | {machine['date']}"
    )


if __name__ == "__main__":  # the worker process of measure_isolated, measure_pair_isolated and peak_memory
    request = json.loads(sys.argv[1])
    if "pair" in request:
        result = measure_pair(*(Case(**c) for c in request["pair"]), pairs=request["pairs"])
    elif "memory" in request:
        result = [_steady_peak(Case(**c)) for c in request["memory"]]
    else:
        result = measure(Case(**request["case"]), request["repeats"], request["max_seconds"], request["min_seconds"])
    print(json.dumps(result))
