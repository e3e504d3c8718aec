"""The benchmark harness: it measures what it says, and the script writes a complete table."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_run_settings

from decorr_lite.benchmark import Case, alternate, measure, measure_isolated, measure_pair, time_alternated, timed

ROOT = Path(__file__).resolve().parents[1]


def test_measure_reports_time_and_memory():
    row = measure(Case("barlow", n=16, d=64, method="fft", block_size=8), repeats=3, min_seconds=0)
    assert row["label"] == "fft b=8" and len(row["times"]) >= 3
    assert row["seconds"] > 0 and row["peak_bytes"] >= 0


def test_peak_memory_sees_the_d_by_d_matrix():
    """The exact loss forms d x d float32 matrices: at d = 2048 that is 16 MiB each, and the
    isolated measurement must see at least one of them (the inputs are only 0.5 MiB)."""
    row = measure_isolated(Case("vicreg", n=32, d=2048, method="exact"), repeats=1, min_seconds=0)
    assert row["peak_bytes"] >= 2048 * 2048 * 4


def test_measure_pair_alternates_and_sees_a_slower_case():
    """The paired ratio is > 1 for a case that does more work than its reference: the exact
    loss at d = 512 (a d x d matrix) against two FFTs of the same inputs."""
    result = measure_pair(Case("vicreg", n=64, d=512, method="exact"), Case("rfft", n=64, d=512), pairs=5)
    assert len(result["times"]) == len(result["reference_times"]) == 5
    assert result["median_ratio"] > 1 and result["min_ratio"] > 1


def test_time_alternated_keeps_the_order_and_times_every_pass():
    """Cases come back in the order given, each with ``passes`` times whose median is ``seconds``;
    the exact loss at d = 512 (a d x d matrix) takes longer than two FFTs of the same inputs."""
    cases = [
        Case("rfft", n=64, d=512),
        Case("barlow", n=64, d=512, method="exact"),
        Case("barlow", n=64, d=512, method="fft", block_size=64),
    ]
    results = time_alternated(cases, passes=3)
    assert [r["label"] for r in results] == ["rfft x2", "exact", "fft b=64"]
    for r in results:
        assert len(r["times"]) == len(r["faults"]) == 3 and r["seconds"] == statistics.median(r["times"])
    assert results[1]["seconds"] > results[0]["seconds"]


def test_unknown_loss_is_rejected():
    with pytest.raises(ValueError, match="case.loss"):
        measure(Case("simclr", n=4, d=8))


def test_script_writes_every_case(tmp_path):
    out = tmp_path / "scaling.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "loss_scaling.py"), *"--n 16 --dims 16 32 --losses barlow".split(),
           *"--small-block 8 --repeats 1 --min-seconds 0 --pairs 3".split(), "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    labels = {(r["label"], r["d"]) for r in result["rows"]}
    for d in (16, 32):
        assert {("rfft x2", d), ("exact", d), ("gram", d), ("fft b=d", d), ("fft b=8", d)} <= labels
    assert "exact / gram time at d=32 (target >= 40)" in result["ratios"]["barlow"]
    assert "fft(b=d) / two rfft at d=32, alternated, medians (target <= 6)" in result["ratios"]["barlow"]
    assert len(result["pairs"]["barlow"]["times"]) == 3
    assert "fft(b=8) / fft(b=d) time at d=32, alternated, medians (target <= 2)" in result["ratios"]["barlow"]
    assert (
        result["block_pairs"]["barlow"]["case"]["block_size"] == 8
        and len(result["block_pairs"]["barlow"]["times"]) == 3
    )
    assert "fft(b=8) / fft(b=d)" in proc.stdout and "barlow: forward+backward" in proc.stdout


def test_script_repeats_only_the_timing_targets(tmp_path):
    """--targets-only RUNS skips the sweep and times both alternated targets RUNS times."""
    out = tmp_path / "targets.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "loss_scaling.py"), *"--n 16 --dims 16 32 --losses vicreg".split(),
           *"--small-block 8 --pairs 2 --targets-only 2".split(), "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(out.read_text())["runs"]
    assert len(runs) == 2
    for run in runs:
        assert run["pairs"]["vicreg"]["case"]["d"] == 32 and run["pairs"]["vicreg"]["reference"]["loss"] == "rfft"
        assert (
            run["block_pairs"]["vicreg"]["case"]["block_size"] == 8 and len(run["block_pairs"]["vicreg"]["times"]) == 2
        )
    assert "run 2: vicreg rfft" in proc.stdout and "fft(b=8) / fft(b=d) at d=32 (target <= 2)" in proc.stdout
    assert "forward+backward" not in proc.stdout  # no sweep, no tables


PEAK_CHECK = """
import torch
from decorr_lite.benchmark import peak_memory_since, start_peak_memory
before = torch.ones(16 * 2**20 // 4)  # 16 MB, allocated before the measurement starts
baseline = start_peak_memory("cpu")
block = torch.ones(64 * 2**20 // 4)  # 64 MB
del block
print(peak_memory_since("cpu", baseline), before.numel())
"""


def test_peak_memory_helpers_see_a_freed_allocation():
    """start_peak_memory / peak_memory_since (what training records per step) see an
    allocation even after it has been freed, and not one made before the start. In a fresh
    process: in this one, earlier tests leave freed memory that the allocator reuses without
    touching new pages, which the resident set cannot see (the helpers give a lower bound)."""
    proc = subprocess.run([sys.executable, "-c", PEAK_CHECK], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    grown = int(proc.stdout.split()[0])
    assert 48 * 2**20 <= grown < 100 * 2**20, grown


def test_fused_vs_modular_script_times_both_paths(tmp_path):
    out = tmp_path / "fused.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "fused_vs_modular.py"),
           *"--n 16 --dims 24 --block-sizes 0 5 --pairs 2 --out".split(), str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {(r["loss"], r["block_size"]) for r in rows} == {(loss, b) for loss in ("barlow", "vicreg") for b in (24, 5)}
    assert all(len(r["times"]["fused"]) == len(r["times"]["modular"]) == 2 for r in rows)
    if sys.platform != "win32":  # page faults are counted where resource.getrusage exists
        assert all(r["median_faults"]["fused"] >= 0 and r["median_faults"]["modular"] >= 0 for r in rows)


def test_train_throughput_script_times_every_variant(tmp_path):
    out = tmp_path / "throughput.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"),
           *"--encoders small:4 --precisions fp32 bf16 --batch-size 8 --dim 16 --passes 2 --device cpu --out".split(),
           str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    variants = {(r["precision"], r["channels_last"]) for r in result["rows"]}
    assert variants == {(p, c) for p in ("fp32", "bf16") for c in (False, True)}
    assert all(len(r["times"]) == 2 and r["images_per_second"] > 0 for r in result["rows"])
    base = next(r for r in result["rows"] if r["precision"] == "fp32" and not r["channels_last"])
    assert base["speedup"] == 1.0 and "native_bf16" in result["machine"]
    assert "channels_last" in proc.stdout and "images/s" in proc.stdout


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="compare_revisions.py reads a revision from git")
def test_compare_revisions_script_times_both_versions(tmp_path):
    out = tmp_path / "compare.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "compare_revisions.py"),
           *"--base HEAD --n 16 --dims 16 --passes 2 --out".split(), str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {(r["loss"], r["method"]) for r in rows} == {
        (loss, m) for loss in ("vicreg", "barlow") for m in ("exact", "gram", "fft")
    }
    assert all(r["base_ms"] > 0 and r["this_ms"] > 0 for r in rows)


def test_distributed_bytes_script_counts_every_case_and_the_agreement_check(tmp_path):
    out = tmp_path / "bytes.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "distributed_bytes.py"),
           *"--n 8 --dims 256 --repeats 1 --out".split(), str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert {(r["loss"], r["method"]) for r in rows} == {
        (loss, m) for loss in ("vicreg", "barlow") for m in ("exact", "gram", "fft", "fft b=128")
    }
    # the agreement check is one all-gather of 16 int64 per process, on top of what each method sends
    assert all(r["check_bytes"] == 128 and r["bytes"] > 128 and r["check_ms"] > 0 for r in rows)
    gathered = next(r for r in rows if r["loss"] == "vicreg" and r["method"] == "exact")
    assert gathered["bytes"] >= 2 * 8 * 256 * 4  # both views' rows
    assert "the agreement check" in proc.stdout


def test_classroom_run_script_times_each_stage(tiny_cifar, tmp_path, monkeypatch, capsys):
    """In this process, on the tiny copy (the classroom settings shrunk to it); the functions it
    times are the library's own again afterwards."""
    import importlib.util

    from decorr_lite import config, training

    spec = importlib.util.spec_from_file_location("classroom_run", ROOT / "benchmarks" / "classroom_run.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    tiny = tiny_run_settings(tiny_cifar, dim=8, steps=2, eval_points=1)
    monkeypatch.setattr(config, "classroom_settings", lambda quick=None: dict(tiny))
    before = training.training_step
    out = tmp_path / "run.json"
    assert script.main(["--precision", "fp32", "--set", '{"lr": 0.001}', "--out", str(out)]) == 0
    assert training.training_step is before
    result = json.loads(out.read_text())
    assert result["settings"]["lr"] == 0.001 and result["final"]["precision"] == "fp32"
    assert result["stages"]["training steps (forward, loss, backward, AdamW)"] > 0
    assert 0 < sum(v for k, v in result["stages"].items() if not k.startswith(" ")) <= result["seconds"]
    assert "final evaluation" in capsys.readouterr().out


def _rows(*times):
    return [{"times": list(t)} for t in times]


def test_noise_factor_is_the_median_over_cases_of_median_over_fastest():
    from decorr_lite.benchmark import noise_factor

    assert noise_factor(_rows([1.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5, 0.5])) == 1.0  # passes agreed
    # per case, median / min: 1.0, 1.2 (a single slow pass does not count), 1.25; their median
    assert noise_factor(_rows([1.0, 1.0, 1.0], [1.0, 1.2, 5.0], [2.0, 3.0, 2.5])) == pytest.approx(1.2)
    # one case disturbed throughout does not decide it; most cases disturbed does
    assert noise_factor(_rows([1, 1, 1], [1, 1, 1], [1, 3, 3])) == 1.0
    assert noise_factor(_rows([1, 2, 2], [1, 1.5, 2], [1, 1, 1])) == 1.5
    with pytest.raises(ValueError, match="at least 3"):
        noise_factor(_rows([1.0, 2.0]))
    with pytest.raises(ValueError):
        noise_factor([])


def test_tolerance_is_the_noise_between_one_and_the_cap():
    from decorr_lite.benchmark import NOISE_CAP, tolerance

    assert tolerance(0.97) == 1.0 and tolerance(1.0) == 1.0 and tolerance(1.3) == 1.3
    assert tolerance(7.5) == NOISE_CAP == 2.0 and tolerance(1.5, cap=1.2) == 1.2


def test_widened_band_arithmetic():
    """log(tol) / log(R) each side for two or three evenly spaced sizes spanning R; 1.2 times that
    for four or five (least squares weighs the ends less); nothing for tol = 1."""
    import math

    from decorr_lite.benchmark import slope_error, widen

    assert widen((0.5, 1.5), [1024, 4096, 16384], 2.0) == pytest.approx((0.25, 1.75))  # log 2 / log 16
    assert widen((1.5, 3.0), [1024, 4096], 2.0) == pytest.approx((1.0, 3.5))  # log 2 / log 4
    assert widen((1.5, 3.0), [1024, 2048, 4096], 1.0) == (1.5, 3.0)
    assert slope_error([256, 512, 1024, 2048], 1.1) == pytest.approx(1.2 * math.log(1.1) / math.log(8))
    assert slope_error([1, 2, 4, 8, 16], 1.1) == pytest.approx(1.2 * math.log(1.1) / math.log(16))
    with pytest.raises(ValueError):
        slope_error([64, 64], 1.5)


def test_slope_error_bounds_every_noise_of_that_size_and_is_reached():
    """Times each up to tol too slow move the fitted slope by at most slope_error, and by exactly
    that when the largest sizes are the slow ones."""
    import numpy as np

    from decorr_lite.benchmark import fit_slope, slope_error

    xs, tol = np.array([128, 256, 512, 1024, 2048, 4096]), 1.3
    true = xs**1.7
    w = slope_error(xs, tol)
    rng = np.random.default_rng(0)
    for _ in range(200):
        moved = fit_slope(xs, true * rng.uniform(1, tol, len(xs))) - 1.7
        assert abs(moved) <= w + 1e-12
    worst = true * np.where(xs > np.exp(np.log(xs).mean()), tol, 1.0)
    assert fit_slope(xs, worst) - 1.7 == pytest.approx(w)


def test_ratio_holds_tolerates_the_noise_either_way():
    from decorr_lite.benchmark import ratio_holds

    assert not ratio_holds(1.9, 1.0, at_least=2) and ratio_holds(1.9, 1.0, at_least=2, tol=1.1)
    assert not ratio_holds(3.2, 1.0, at_most=3) and ratio_holds(3.2, 1.0, at_most=3, tol=1.1)
    assert ratio_holds(2.5, 1.0, at_least=2, at_most=3) and not ratio_holds(3.5, 1.0, at_least=2, at_most=3, tol=1.1)


def test_alternate_on_cpu_time_leaves_out_time_not_running():
    """A pass that waits (here: sleeps, as when the system runs another process) takes wall time
    but no CPU time: the notebooks' clock counts only what the code itself costs."""
    import time

    (wall,), _ = alternate([lambda: time.sleep(0.05)], 2)
    (cpu,), _ = alternate([lambda: time.sleep(0.05)], 2, clock=time.process_time)
    assert min(wall) >= 0.05 and max(cpu) < 0.02


def test_timed_counts_one_threads_cpu_time(monkeypatch):
    """Inside ``timed`` a pass runs in one thread, and time it spends not running (a sleep here,
    another process's turn on a busy machine) does not count."""
    import time

    import torch

    from decorr_lite import benchmark

    seen = []

    def waiting(case):
        return lambda: (seen.append(torch.get_num_threads()), time.sleep(0.03))

    monkeypatch.setattr(benchmark, "_forward_backward", waiting)
    (row,) = timed([Case("barlow", n=16, d=32)], 3)
    assert set(seen) == {1} and len(seen) == 4  # a warm-up pass, then 3
    assert max(row["times"]) < 0.015


def test_timed_protocol_runs_in_one_thread_and_restores_the_threads(capsys):
    import torch

    from decorr_lite.benchmark import timed_run

    before = torch.get_num_threads()
    cases = [Case("barlow", n=16, d=32, method="fft"), Case("barlow", n=16, d=64, method="exact")]
    rows = timed(cases, 3)
    assert torch.get_num_threads() == before
    assert [r["label"] for r in rows] == ["fft b=d", "exact"]
    for r in rows:
        assert (
            len(r["times"]) == 3 and r["fastest"] == min(r["times"]) and r["seconds"] == statistics.median(r["times"])
        )
        assert r["clock"] == "cpu" and r["threads"] == 1
    rows, tol = timed_run(cases, 3)
    out = capsys.readouterr().out
    assert out.startswith("timed 2 cases x 3 passes, in turn (cpu time, 1 thread): noise x")
    assert f"tolerate x{tol:.2f}" in out and 1.0 <= tol <= 2.0


def test_peak_memory_of_several_cases_in_one_worker_sees_the_d_by_d_matrix():
    from decorr_lite.benchmark import peak_memory

    small, exact, relaxed = peak_memory(
        [
            Case("barlow", n=64, d=256, method="exact"),
            Case("barlow", n=64, d=2048, method="exact"),
            Case("barlow", n=64, d=2048, method="fft"),
        ]
    )
    assert exact > 2048 * 2048 * 4  # at least one d x d float32 matrix
    assert relaxed < exact / 4 and small < exact / 4


def test_notebook_times_reports_the_machine_and_each_notebook_s_slowest_cells(tmp_path):
    """benchmarks/notebook_times.py runs a notebook in a fresh kernel and times it and its cells."""
    import importlib.util

    import nbformat

    spec = importlib.util.spec_from_file_location("notebook_times", ROOT / "benchmarks" / "notebook_times.py")
    notebook_times = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(notebook_times)
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("import time; time.sleep(0.5)")]
    )
    path = tmp_path / "sleepy.ipynb"
    nbformat.write(notebook, path)
    (tmp_path / "work").mkdir()
    total, cells = notebook_times.run_notebook(path, tmp_path / "work", timeout=60)
    assert [index for index, _ in cells] == [0, 1]
    assert cells[1][1] >= 0.45 > cells[0][1] and total >= cells[1][1]
    machine = notebook_times.describe_machine()
    assert machine["capability"] == torch.backends.cpu.get_cpu_capability() and isinstance(machine["native_bf16"], bool)
    assert machine["capability"] in notebook_times.machine_line(machine)


def test_step_levers_times_the_recipe_and_each_change_to_it(tmp_path):
    out = tmp_path / "levers.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "step_levers.py"),
        "--dim",
        "16",
        "--passes",
        "1",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert len(result["seconds"]) == 9 and all(seconds > 0 for seconds in result["seconds"].values())
    assert result["machine"]["capability"] == torch.backends.cpu.get_cpu_capability()
    assert proc.stdout.splitlines()[0].startswith(result["machine"]["cpu"]) and "s / step" in proc.stdout
