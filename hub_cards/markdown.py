"""Markdown helpers shared by the model cards, the dataset card, reports and evaluation tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def format_cell(value: Any) -> str:
    """One table cell: floats with 4 significant digits, everything else as ``str``."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown_rows(rows: Mapping[str, Any]) -> str:
    """The body rows (no header) of a two-column markdown table of ``rows``."""
    return "\n".join(f"| {key} | {format_cell(value)} |" for key, value in rows.items())


def markdown_table(rows: Mapping[str, Any], header: tuple[str, str] = ("", "value")) -> str:
    """A two-column markdown table of ``rows`` (floats with 4 significant digits)."""
    return "\n".join([f"| {header[0]} | {header[1]} |", "|---|---|", markdown_rows(rows)])


def markdown_grid(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table with ``header`` and one line per row of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(format_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
