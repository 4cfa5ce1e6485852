"""Markdown tables, as lines (summary.md sections) or as one block of records (bench/results/*.md)."""

from __future__ import annotations


def markdown_table(header: list, rows: list[list]) -> list[str]:
    """The lines of a markdown table; each cell as `str` gives it."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def records_table(records: list[dict], columns: list[str]) -> str:
    """One table of dicts, a row each, in `columns` order; floats to 3 significant digits, a missing key empty."""
    return "\n".join(markdown_table(columns, [[_cell(r.get(c, "")) for c in columns] for r in records]))


def _cell(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
