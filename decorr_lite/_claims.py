"""Claims about timings, checked in the notebooks and the test suite: not part of the library.

A claim that depends on the machine (a fitted slope, a ratio of two times, where one time overtakes
another) is checked once, with a tolerance widened by the noise that the same run measured
(``decorr_lite.benchmark``: ``timed_run``, ``widen``, ``ratio_holds``, ``crossing``). A failed
claim raises under ``DECORR_STRICT=1`` (the test suite sets it, so a real regression fails CI) and
prints a note in a student's notebook, where a busy machine can measure something else without
anything being wrong with the code.
"""

from __future__ import annotations

import os

from .benchmark import crossing, fit_slope, ratio_holds, widen


def strict() -> bool:
    """Whether a failed hardware-dependent claim is an error: under ``DECORR_STRICT=1`` (the
    test suite sets it, so a real regression fails CI); in a student's notebook it is a warning."""
    return os.environ.get("DECORR_STRICT", "").strip().lower() in {"1", "true", "yes", "on"}


def expect(ok: bool, claim: str, measured: str) -> bool:
    """Check a claim that depends on the machine (a fitted slope, a ratio of times).

    A slower or busy machine can measure something else than the committed figures without
    anything being wrong with the code, so outside the test suite a failed claim does not stop
    the notebook: it prints what was expected, what this machine measured and what that means,
    and returns False. Under ``DECORR_STRICT=1`` it raises an ``AssertionError`` with the same
    words.
    """
    if ok:
        return True
    message = (
        f"expected {claim}; this machine measured {measured}. Timings depend on the machine and on what "
        "else runs on it: a busy or different machine can measure this without anything being wrong. "
        "Run the cell again when the machine is idle, or compare with the figures committed with the notebook."
    )
    if strict():
        raise AssertionError(message)
    print("Note: " + message)
    return False


def check(ok: bool, claim: str, measured: str, allowance: str) -> bool:
    """Print one line for the reader (the claim, what this run measured and the allowance made for
    its noise), then ``expect`` (an error under ``DECORR_STRICT=1``, else a note). Returns ``ok``."""
    print(f"{'holds' if ok else 'FAILS'}: {claim} | measured {measured} | {allowance}")
    return expect(ok, claim, f"{measured} ({allowance})")


def check_slope(what: str, xs, times, band: tuple[float, float], tol: float, var: str = "d") -> bool:
    """Check that ``times`` grow like ``var``^p with p in ``band``, widened for noise ``tol``."""
    p = fit_slope(xs, times)
    lo, hi = widen(band, xs, tol)
    return check(
        lo < p < hi,
        f"{what} grows like {var}^p, p in ({band[0]:g}, {band[1]:g})",
        f"p = {p:.2f}",
        f"noise x{tol:.2f} over {var} = {min(xs)}..{max(xs)}: p in ({lo:.2f}, {hi:.2f}) accepted",
    )


def check_ratio(
    claim: str, a: float, b: float, at_least: float | None = None, at_most: float | None = None, tol: float = 1.0
) -> bool:
    """Check a claim on the ratio of two times (seconds), widened for noise ``tol`` (``ratio_holds``)."""
    bounds = []
    if at_least is not None:
        bounds.append(f">= {at_least / tol:.2f}")
    if at_most is not None:
        bounds.append(f"<= {at_most * tol:.2f}")
    return check(
        ratio_holds(a, b, at_least, at_most, tol),
        claim,
        f"{1000 * a:.1f} ms / {1000 * b:.1f} ms = {a / b:.2f}",
        f"noise x{tol:.2f}: ratio {' and '.join(bounds)} accepted",
    )


def check_crossing(what: str, xs, a, b, near: float, factor: float, tol: float = 1.0, var: str = "n") -> bool:
    """Check that times ``a`` overtake times ``b`` within ``factor`` of ``var`` = ``near``.

    Fails if ``a`` is slower beyond the noise already below near / factor, or is not slower even
    within the noise up to near * factor (when the sizes reach it); see ``crossing``."""
    measured, surely, maybe = crossing(xs, a, b, tol)
    seen = {x: "nowhere" if x is None else f"{var} = {x}" for x in (surely, maybe)}
    too_early = surely is not None and surely < near / factor
    too_late = max(xs) >= near * factor and (maybe is None or maybe > near * factor)
    return check(
        not (too_early or too_late),
        f"{what} within a factor {factor:g} of {var} = {near:g}",
        f"from {var} = {measured} on" if measured is not None else f"not up to {var} = {max(xs)}",
        f"noise x{tol:.2f}: slower beyond the noise from {seen[surely]}, within it from {seen[maybe]}",
    )
