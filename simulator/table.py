"""Render rows of cells as an aligned text table or a Markdown table."""

from __future__ import annotations

from collections.abc import Sequence


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], fmt: str = "text") -> str:
    """``fmt``: ``"text"`` (space-aligned, numbers right-aligned) or ``"markdown"``."""
    cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(c) + " |" for c in cells]
        lines.insert(1, "|" + "|".join("---" for _ in headers) + "|")
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_is_number(row[i]) for row in cells[1:]) for i in range(len(headers))]
    out = []
    for k, row in enumerate(cells):
        parts = [
            c.rjust(widths[i]) if numeric[i] and k else c.ljust(widths[i])
            for i, c in enumerate(row)
        ]
        out.append("  ".join(parts).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("x%"))
    except ValueError:
        return False
    return True


def shape_str(shape: Sequence) -> str:
    """``(30, 48, 80)`` -> ``30x48x80``; bools become 0/1."""
    return "x".join(str(int(v)) for v in shape)
