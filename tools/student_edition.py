"""The student edition: the six notebooks without their solutions, to hand out.

    .venv/bin/python tools/student_edition.py [--out student]      (or: make student)

Writes ``OUT/NN_*.ipynb`` from ``notebooks/``: every hidden answer (a ``<details>`` block of a
markdown cell, "Solutions (click to expand)") is removed, and the outputs of the cells tagged
``exercise`` (a code cell that computes an exercise's answer) are cleared, with a line that says
so. Everything else, the executed figures and tables included, stays as committed, so the
student notebooks read like the originals and run top to bottom in a fresh kernel, without
data (the run bank ships with the package). The folder also gets the notebooks' README and
a note on what was removed. An existing ``OUT`` is replaced whole, never half-written.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
DETAILS = re.compile(r"\n*<details>.*?</details>\n*", re.DOTALL)
EXERCISE_TAG = "exercise"
NOTE = """# Student edition

These are the course's notebooks without the solutions of their exercises: the hidden answers
were removed, and the cells that compute an exercise's answer have no output (run them).
Everything else is as in the course. The instructor's edition, with the solutions, is in the
course's `notebooks/` folder.
"""


def strip_solutions(nb: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, int]:
    """A copy of ``nb`` without its solutions, and how many it removed."""
    nb = nbformat.from_dict(nb)
    removed = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            text, n = DETAILS.subn("\n\n", cell.source)
            removed += n
            cell.source = text.strip("\n")
        elif cell.cell_type == "code" and EXERCISE_TAG in cell.get("metadata", {}).get("tags", []):
            cell.outputs = []
            cell.execution_count = None
            removed += 1
    return nb, removed


def write_edition(source: Path, out: Path) -> list[Path]:
    """Write the student edition of the notebooks in ``source`` into ``out`` (replaced whole)."""
    notebooks = sorted(source.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no notebooks (NN_*.ipynb) in {source}")
    out = out.resolve()
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent if out.parent.exists() else None))
    try:
        for path in notebooks:
            nb, removed = strip_solutions(nbformat.read(path, as_version=4))
            if not removed:
                raise ValueError(f"{path.name} has no solutions to remove: is it already a student edition?")
            nbformat.write(nb, staging / path.name)
        (staging / "README.md").write_text(NOTE)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out / p.name for p in notebooks]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", default=str(ROOT / "notebooks"), help="the course's notebooks (default: notebooks/)"
    )
    parser.add_argument("--out", default=str(ROOT / "student"), help="the folder to write (default: student/)")
    args = parser.parse_args(argv)
    written = write_edition(Path(args.source), Path(args.out))
    print(f"wrote {len(written)} notebooks without solutions to {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
