"""The committed notebooks follow the conventions: executed, no errors, no widget state,
objectives first, exercises with hidden solutions at the end, every claim asserted.

nbval (run on notebooks/ by the same pytest) checks that they still execute; this checks
what a reader sees on GitHub without a kernel.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook(path):
    nb = json.loads(path.read_text())
    assert "widgets" not in nb["metadata"], "strip widget state (make notebooks does)"
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown" and "Learning objectives" in "".join(cells[0]["source"])
    assert "Recap" in "".join(cells[0]["source"])
    ending = "".join("".join(c["source"]) for c in cells[-3:])  # the exercises, their hidden solutions, checks
    assert "Exercises" in ending and "<details>" in ending
    ids = [c.get("id") for c in cells]
    assert all(ids) and len(set(ids)) == len(ids), "every cell needs a stable, unique id (nbformat >= 4.5)"
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(c["execution_count"] is not None for c in code), "commit notebooks executed"
    for c in code:
        for out in c.get("outputs", []):
            assert out["output_type"] != "error", f"error output in {path.name}: {out.get('ename')}"
            assert "image/svg+xml" not in out.get("data", {}), "figures as PNG"
    assert any("assert " in "".join(c["source"]) for c in code), "claims must be asserted"
    assert any("image/png" in out.get("data", {}) for c in code for out in c.get("outputs", [])), "no figure committed"
