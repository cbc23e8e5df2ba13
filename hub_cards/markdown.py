"""Markdown helpers shared by the model card, the dataset card and the mining report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def markdown_table(rows: Mapping[str, Any], header: tuple[str, str] = ("", "value")) -> str:
    """A two-column markdown table of ``rows`` (floats with 4 significant digits)."""
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    for key, value in rows.items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        lines.append(f"| {key} | {shown} |")
    return "\n".join(lines)
