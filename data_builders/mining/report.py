"""The build report of a mining run: counts, timings, settings (JSON + markdown) and a judge-score histogram."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unime_v2.hub_cards.markdown import markdown_table


COUNT_DESCRIPTIONS = {
    "records": "training pairs read from the source",
    "queries": "queries in the mined dataset",
    "skipped_empty_pool": "queries left out: no candidate in their pool (on_empty_pool=skip)",
    "pairs_judged": "query–candidate pairs scored by the judge (positives included)",
    "false_negatives_removed": "candidates removed as false negatives (s > s_pos − β)",
    "queries_with_false_negatives": "queries that lost at least one candidate as a false negative",
    "padded": "queries with fewer than num_negatives distinct negatives (list repeated)",
    "fallbacks": "queries with no surviving candidate (random draw, score 1.0)",
    "pools_smaller_than_top_k": "queries with fewer than top_k retrieved candidates",
    "near_duplicates_dropped": "candidates dropped for cos ≥ δ",
    "duplicate_candidates": "repeated positives folded into one pool candidate",
    "duplicate_queries": "records whose query (text + image) repeats an earlier record's (kept)",
}


def score_summary(values: Sequence[float]) -> dict[str, float]:
    """Count, mean, and quartiles of judge scores."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return {"count": 0}
    q1, median, q3 = np.quantile(array, [0.25, 0.5, 0.75])
    return {
        "count": int(array.size),
        "mean": float(array.mean()),
        "q1": float(q1),
        "median": float(median),
        "q3": float(q3),
    }


def report_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: settings, counts (with what each means), timings, score summaries."""
    counts = {f"{key} — {COUNT_DESCRIPTIONS.get(key, '')}": value for key, value in report["counts"].items()}
    parts = [
        "# Mining report",
        "## Settings",
        markdown_table(report["settings"], ("setting", "value")),
        "## Counts",
        markdown_table(counts, ("count", "value")),
        "## Timings (seconds)",
        markdown_table(report["timings_s"], ("stage", "seconds")),
        "## Judge scores",
        markdown_table(
            {f"{group} {k}": v for group, summary in report["scores"].items() for k, v in summary.items()},
            ("statistic", "value"),
        ),
    ]
    return "\n\n".join(parts) + "\n"


def plot_score_histogram(
    positives: Sequence[float], candidates: Sequence[float], selected: Sequence[float], path: str | Path
) -> Path:
    """PNG histogram of judge scores: positives vs all judged candidates vs the selected negatives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0.0, 1.0, 41)
    for values, label in (
        (candidates, "retrieved candidates"),
        (selected, "selected negatives"),
        (positives, "positives"),
    ):
        if len(values):
            axis.hist(values, bins=bins, alpha=0.55, density=True, label=f"{label} (n={len(values)})")
    axis.set_xlabel("judge score s = P(Yes)")
    axis.set_ylabel("density")
    axis.set_title("MLLM-as-a-Judge scores")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def write_report(report: Mapping[str, Any], output_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` to ``output_dir``."""
    output_dir = Path(output_dir)
    json_path, md_path = output_dir / "report.json", output_dir / "report.md"
    json_path.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    md_path.write_text(report_markdown(report), encoding="utf-8")
    return json_path, md_path
