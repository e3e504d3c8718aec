"""A plain-text table for notebooks' printouts: the first and last columns left-aligned (labels,
words), the numbers between right-aligned, a rule under the heading."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    last = len(rows[0]) - 1
    lines = [
        "  ".join(c.ljust(w) if i in (0, last) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        for r in rows
    ]
    lines.insert(1, "-" * max(map(len, lines)))
    return "\n".join(lines)
