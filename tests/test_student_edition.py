"""The student edition: no solution left, everything else as in the course, and it runs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("student_edition", ROOT / "tools" / "student_edition.py")
edition = importlib.util.module_from_spec(spec)
spec.loader.exec_module(edition)


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("edition") / "student"
    edition.write_edition(ROOT / "notebooks", out)
    return out


def _text(nb) -> str:
    return "\n".join(c.source for c in nb.cells)


def test_no_solution_is_left_and_nothing_else_is_lost(student):
    course = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(p.name for p in student.glob("*.ipynb")) == [p.name for p in course]
    for path in course:
        original, handed_out = nbformat.read(path, 4), nbformat.read(student / path.name, 4)
        assert "<details>" in _text(original) and "Solutions (click" in _text(original)  # the test sees them
        text = _text(handed_out)
        assert "<details>" not in text and "</details>" not in text and "Solutions (click" not in text, path.name
        assert "## Exercises" in text  # the questions stay
        assert len(handed_out.cells) == len(original.cells)
        for a, b in zip(original.cells, handed_out.cells):
            if a.cell_type == "code":
                assert a.source == b.source
                if "exercise" not in a.get("metadata", {}).get("tags", []):
                    assert a.outputs == b.outputs  # the figures and tables stay
                else:
                    assert b.outputs == []
    assert "without the solutions" in (student / "README.md").read_text()


def test_the_edition_refuses_to_strip_a_student_edition_and_replaces_a_folder_whole(student, tmp_path):
    with pytest.raises(ValueError, match="no solutions to remove"):
        edition.write_edition(student, tmp_path / "again")
    assert not (tmp_path / "again").exists()  # nothing half-written
    out = tmp_path / "handout"
    out.mkdir()
    (out / "stale.ipynb").write_text("{}")
    edition.write_edition(ROOT / "notebooks", out)
    assert not (out / "stale.ipynb").exists() and (out / "01_loss_terms.ipynb").is_file()


@pytest.mark.slow
def test_the_student_notebooks_run_top_to_bottom_without_data(student, tmp_path):
    """nbval on the student edition, in fresh kernels, with no dataset and an empty run cache."""
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("DECORR_DATA",)}
    env.update(DECORR_CACHE=str(tmp_path / "cache"), DECORR_DATA=str(tmp_path / "no-data"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--nbval-lax",
            "--nbval-current-env",
            "--rootdir",
            str(student),
            str(student),
        ],
        cwd=student,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
