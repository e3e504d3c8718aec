"""The notebooks' timing claims (decorr_lite._claims): each prints what it measured and the noise
it allowed for, fails the test suite (DECORR_STRICT=1) and only prints a note in a student's
notebook; the tolerance helps a noisy run of correct code and never a regression."""

import pytest

from decorr_lite._claims import check_crossing, check_ratio, check_slope, expect
from decorr_lite.benchmark import crossing, tolerance


def test_expect_notes_a_failed_timing_claim_in_a_notebook_and_fails_the_test_suite(monkeypatch, capsys):
    monkeypatch.delenv("DECORR_STRICT", raising=False)  # a student's notebook
    assert expect(True, "anything", "anything") is True and capsys.readouterr().out == ""
    assert expect(False, "exact to grow like d^2", "p = 1.10") is False
    note = capsys.readouterr().out
    assert note.startswith("Note: expected exact to grow like d^2; this machine measured p = 1.10") and "busy" in note
    monkeypatch.setenv("DECORR_STRICT", "1")  # the test suite (root conftest.py)
    with pytest.raises(AssertionError, match="expected exact to grow like d\\^2; this machine measured p = 1.10"):
        expect(False, "exact to grow like d^2", "p = 1.10")


def test_claims_print_what_was_measured_and_the_tolerance(monkeypatch, capsys):
    monkeypatch.setenv("DECORR_STRICT", "1")
    ds = [1024, 4096, 16384]
    assert check_slope("the time of fft", ds, [d * 1e-6 for d in ds], (0.5, 1.5), 2.0)
    out = capsys.readouterr().out
    assert out.startswith("holds: the time of fft grows like d^p, p in (0.5, 1.5) | measured p = 1.00")
    assert "noise x2.00 over d = 1024..16384: p in (0.25, 1.75) accepted" in out
    assert check_ratio("exact at least twice as slow as fft", 0.3, 0.1, at_least=2, tol=1.25)
    assert "measured 300.0 ms / 100.0 ms = 3.00 | noise x1.25: ratio >= 1.60 accepted" in capsys.readouterr().out


def test_a_noisy_but_correct_measurement_passes_only_with_the_noise_tolerance(monkeypatch):
    """exact ~ d^1.5 at the band's edge, its smallest size measured 30 % slow: outside the band
    as written, inside it widened by the noise that the run measured."""
    monkeypatch.setenv("DECORR_STRICT", "1")
    ds = [1024, 2048, 4096]
    times = [d**1.5 * f for d, f in zip(ds, (1.3, 1.0, 1.0))]
    with pytest.raises(AssertionError, match="p = 1.31"):
        check_slope("the time of exact", ds, times, (1.5, 3.0), 1.0)
    assert check_slope("the time of exact", ds, times, (1.5, 3.0), 1.3)


def test_a_regression_still_fails_at_the_loosest_tolerance(monkeypatch):
    """However noisy the run, the tolerance stops at the cap, where these still fail: fft gone
    O(d^2), gram gone O(d^2), exact no slower than fft, b = mid four times b = d."""
    monkeypatch.setenv("DECORR_STRICT", "1")
    loosest = tolerance(100.0)
    ds = [1024, 4096, 16384]
    for m in ("fft", "gram"):
        with pytest.raises(AssertionError, match="p = 2.00"):
            check_slope(f"the time of {m}", ds, [d**2 * 1e-9 for d in ds], (0.5, 1.5), loosest)
    with pytest.raises(AssertionError, match="exact at least twice as slow as fft"):
        check_ratio("exact at least twice as slow as fft", 0.02, 0.021, at_least=2, tol=loosest)
    with pytest.raises(AssertionError, match="= 7.00"):
        check_ratio("b = 256 costs at most 3 times b = d", 0.07, 0.01, at_most=3, tol=loosest)


def test_crossing_and_its_claim(monkeypatch, capsys):
    monkeypatch.setenv("DECORR_STRICT", "1")
    ns = [128, 256, 512, 1024, 2048]
    exact = [n * 1e-6 for n in ns]
    gram = [n * n / 1024 * 1.1e-6 for n in ns]  # overtakes exact at n = 1024 (10 % slower there)
    assert crossing(ns, gram, exact) == (1024, 1024, 1024)
    assert crossing(ns, gram, exact, tol=1.2) == (1024, 2048, 1024)
    assert crossing(ns, exact, exact) == (None, None, None)
    assert check_crossing("gram becomes slower than exact", ns, gram, exact, near=1024, factor=4)
    assert "measured from n = 1024 on" in capsys.readouterr().out
    late = [t / 16 for t in gram]  # slower than exact only from n = 16 d on
    assert check_crossing("x", ns, late, exact, near=1024, factor=4)  # the sweep ends before 4 d: not seen is fine
    with pytest.raises(AssertionError, match="not up to n = 4096"):  # the sweep reaches 4 d, still faster
        check_crossing("x", [*ns, 4096], [*late, 4096**2 / 1024 * 1.1e-6 / 16], [*exact, 4096e-6], 1024, 4)
    early = [t * 12 for t in gram]  # 1.65 times slower already at n = d / 8
    with pytest.raises(AssertionError, match="from n = 128 on"):
        check_crossing("x", ns, early, exact, near=1024, factor=4)
    assert check_crossing("x", ns, early, exact, near=1024, factor=4, tol=2.0)  # within a noise of 2, from d / 4
