"""How long each notebook takes to run top to bottom, as a class would run it: full mode, in
order, with a run cache empty at the start and no CIFAR-10 on disk (every run from the run bank).

    .venv/bin/python benchmarks/notebook_times.py                      # all six
    .venv/bin/python benchmarks/notebook_times.py 05_runtime_scaling    # one
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python benchmarks/notebook_times.py
        # an AVX-512 machine standing in for a laptop without it (torch's and oneDNN's kernels
        # limited to AVX2; precision "auto" is then fp32, as there)

Each notebook is executed in order by a fresh Jupyter kernel (nbclient, as ``jupyter nbconvert
--execute`` does) from a copy in a temporary folder, so the committed notebooks are not touched.
Prints the machine (CPU, the instruction set torch uses, whether bf16 is native, threads) and a
table of seconds per notebook with its three slowest cells, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decorr_lite.benchmark import describe_machine, machine_line  # noqa: E402


def run_notebook(path: Path, workdir: Path, timeout: int) -> tuple[float, list[tuple[int, float]]]:
    """Execute a copy of ``path`` in ``workdir``; return its wall time in seconds and each code
    cell's (index, seconds), from the execution times the kernel reports."""
    import nbformat
    from nbclient import NotebookClient

    copy = workdir / path.name
    shutil.copy(path, copy)
    notebook = nbformat.read(copy, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    started = time.perf_counter()
    client.execute()
    total = time.perf_counter() - started
    cells = []
    for index, cell in enumerate(notebook.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            began, ended = (_timestamp(timing[k]) for k in ("iopub.execute_input", "shell.execute_reply"))
            cells.append((index, ended - began))
    return total, cells


def _timestamp(text: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all, in order)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds a cell may take")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "notebook_times.json"))
    args = parser.parse_args(argv)
    notebooks = sorted((ROOT / "notebooks").glob("0*.ipynb"))
    if args.names:
        notebooks = [p for p in notebooks if p.stem in args.names or p.name in args.names]
        if not notebooks:
            parser.error(f"no notebook named {args.names}; the notebooks are in {ROOT / 'notebooks'}")
    host = describe_machine()
    print(machine_line(host))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # as a class runs them (the kernels inherit this): full mode, one run cache for the
        # sequence, empty at the start, and an empty data folder, so that a copy of CIFAR-10 in
        # the project's data/ is not found either
        (tmp / "no-data").mkdir()
        os.environ.update(DECORR_QUICK="0", DECORR_CACHE=str(tmp / "cache"), DECORR_DATA=str(tmp / "no-data"))
        os.environ["MPLBACKEND"] = "Agg"
        os.environ.pop("DECORR_STRICT", None)
        (tmp / "work").mkdir()
        seconds, slowest = {}, {}
        for path in notebooks:
            seconds[path.stem], cells = run_notebook(path, tmp / "work", args.timeout)
            slowest[path.stem] = sorted(cells, key=lambda cell: -cell[1])[:3]
            cells_text = ", ".join(f"cell {i} {t:.1f} s" for i, t in slowest[path.stem])
            print(f"{path.stem:28s} {seconds[path.stem]:7.1f} s   slowest: {cells_text}", flush=True)
    total = sum(seconds.values())
    print(f"{'all':28s} {total:7.1f} s ({total / 60:.1f} min)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"machine": host, "seconds": seconds, "total": total, "slowest_cells": slowest}, indent=1)
    )
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
