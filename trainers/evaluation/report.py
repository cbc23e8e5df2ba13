"""The output folder of an evaluation: every number as JSON, the paper's tables in Markdown, bar charts, model-index.

* ``results.json`` — all metrics, per-dataset details, skipped datasets with their errors, and the model, revision,
  data, resolution and settings that produced them.
* ``results.md`` — Table 1 layout for MMEB (meta-tasks, IND, OOD, overall; a ``+ reranker`` row), Table 2 layout
  for retrieval (R@1 image→text / text→image) and SugarCrepe (replace / swap / add), then per-dataset tables.
* ``mmeb.png``, ``mmeb_<meta-task>.png``, ``retrieval.png``, ``sugarcrepe.png`` — bar charts.
* ``model_index.json`` — the ``model-index`` entries a model card's metadata takes (``huggingface_hub.EvalResult``).

Tables show percentages (one decimal), as the paper does; the JSON keeps fractions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unime_v2.data_builders.storage import atomic_write_bytes
from unime_v2.hub_cards.markdown import markdown_grid

from .metrics import MMEB_META_TASKS, SUGARCREPE_GROUPS


RERANK = "rerank/"
META_TITLES = {"classification": "Classification", "vqa": "VQA", "retrieval": "Retrieval", "grounding": "Grounding"}


def percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal; ``–`` when missing."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _model_rows(results: Mapping[str, Any], suite: str) -> list[tuple[str, str]]:
    """(row label, metric prefix): the embedder, and ``+ reranker`` when one was used."""
    rows = [(results["model"], "")]
    if results.get("reranker") and suite in results["suites"]:
        rows.append((f"+ {results['reranker']} (top-{results['suites'][suite]['top_k']})", RERANK))
    return rows


def mmeb_tables(results: Mapping[str, Any]) -> str:
    """Table 1 (meta-task means, IND, OOD, overall) and the per-dataset precision@1."""
    suite = results["suites"]["mmeb"]
    metrics, tasks = suite["metrics"], suite.get("tasks", {})
    header = ["Model", *(META_TITLES[m] for m in MMEB_META_TASKS), "IND", "OOD", "Overall"]
    lines = []
    for label, prefix in _model_rows(results, "mmeb"):
        keys = [f"meta/{m}" for m in MMEB_META_TASKS] + ["ind", "ood"]
        cells = [percent(metrics.get(f"{prefix}precision_at_1/{k}")) for k in keys]
        lines.append([label, *cells, percent(metrics.get(f"{prefix}precision_at_1"))])
    per_header = ["Dataset", "Meta-task", "Split", "Rows", "P@1"] + (
        ["+ reranker", "fallbacks"] if results.get("reranker") else []
    )
    per_rows = []
    for name, d in suite["per_dataset"].items():
        task = tasks.get(name, {})
        row = [name, task.get("meta_task", "–"), "OOD" if task.get("ood") else ("IND" if task else "–"), d["num_rows"]]
        row.append(percent(d["precision_at_1"]))
        if results.get("reranker"):
            row += [percent(d.get(RERANK + "precision_at_1")), d.get(RERANK + "fallbacks", 0)]
        per_rows.append(row)
    return "\n\n".join(
        ["### MMEB (precision@1, %)", markdown_grid(header, lines), markdown_grid(per_header, per_rows)]
    )


def table2(results: Mapping[str, Any]) -> str:
    """Table 2 layout: R@1 image→text / text→image per retrieval dataset, SugarCrepe replace / swap / add."""
    retrieval = results["suites"].get("retrieval", {}).get("per_dataset", {})
    sugar = results["suites"].get("sugarcrepe", {}).get("metrics", {})
    header = ["Model"]
    for name in retrieval:
        header += [f"{name} I→T", f"{name} T→I"]
    if sugar:
        header += [f"SugarCrepe {g}" for g in SUGARCREPE_GROUPS]
    rows = []
    suite = "retrieval" if retrieval else "sugarcrepe"
    for label, prefix in _model_rows(results, suite):
        row = [label]
        for d in retrieval.values():
            row += [percent(d.get(f"{prefix}i2t_R@1")), percent(d.get(f"{prefix}t2i_R@1"))]
        if sugar:
            row += [percent(sugar.get(f"{prefix}accuracy/{g}")) for g in SUGARCREPE_GROUPS]
        rows.append(row)
    parts = ["### Retrieval (R@1, %) and SugarCrepe (accuracy, %)", markdown_grid(header, rows)]
    if retrieval:
        full_header = ["Dataset", "Model"] + [f"{d} R@{k}" for d in ("I→T", "T→I") for k in (1, 5, 10)]
        full = [
            [name, label] + [percent(d.get(f"{prefix}{x}_R@{k}")) for x in ("i2t", "t2i") for k in (1, 5, 10)]
            for name, d in retrieval.items()
            for label, prefix in _model_rows(results, "retrieval")
        ]
        parts.append(markdown_grid(full_header, full))
    if sugar:
        subsets = [
            k.split("/", 1)[1]
            for k in sugar
            if k.startswith("accuracy/") and k.split("/", 1)[1] not in SUGARCREPE_GROUPS
        ]
        parts.append(
            markdown_grid(
                ["Model", *subsets],
                [
                    [label] + [percent(sugar.get(f"{prefix}accuracy/{s}")) for s in subsets]
                    for label, prefix in _model_rows(results, "sugarcrepe")
                ],
            )
        )
    return "\n\n".join(parts)


def markdown_report(results: Mapping[str, Any]) -> str:
    """The whole Markdown report: settings, the tables, and the datasets that were skipped."""
    lines = [
        f"# Evaluation of {results['model']}",
        "",
        f"- revision: {results.get('revision') or '–'}",
        f"- reranker: {results.get('reranker') or 'none'}",
        f"- image resolution: {results['resolution']} (images resized to "
        f"{str(results['image_resize']) + '²' if results.get('image_resize') else 'the checkpoint pixel budget only'})",
        f"- processes: {results.get('processes', 1)}",
        "",
    ]
    if "mmeb" in results["suites"]:
        lines += [mmeb_tables(results), ""]
    if {"retrieval", "sugarcrepe"} & set(results["suites"]):
        lines += [table2(results), ""]
    errors = [(s, n, e) for s, d in results["suites"].items() for n, e in d["errors"].items()]
    if errors:
        lines += ["### Skipped datasets", "", markdown_grid(["Suite", "Dataset", "Error"], errors), ""]
    return "\n".join(lines)


def bar_chart(path: Path, title: str, labels: list[str], series: Mapping[str, list[float]], ylabel: str) -> Path:
    """A grouped bar chart (one group per label, one bar per series) saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(max(4.0, 0.6 * len(labels) * len(series) + 2), 3.5))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        positions = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        axes.bar(positions, [100 * (v if v == v else 0.0) for v in values], width, label=name)
    axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    axes.set_ylim(0, 100)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    if len(series) > 1:
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def charts(results: Mapping[str, Any], out: Path) -> list[Path]:
    """One chart per MMEB meta-task (its datasets) and one per suite."""
    paths = []
    suites = results["suites"]
    if "mmeb" in suites and suites["mmeb"]["per_dataset"]:
        suite, tasks = suites["mmeb"], suites["mmeb"].get("tasks", {})
        rows = _model_rows(results, "mmeb")
        metas = [m for m in MMEB_META_TASKS if any(t.get("meta_task") == m for t in tasks.values())]
        for meta in metas:
            names = [n for n in suite["per_dataset"] if tasks.get(n, {}).get("meta_task") == meta]
            series = {
                label: [suite["per_dataset"][n].get(p + "precision_at_1", math.nan) for n in names]
                for label, p in rows
            }
            paths.append(
                bar_chart(out / f"mmeb_{meta}.png", f"MMEB {META_TITLES[meta]}", names, series, "precision@1 (%)")
            )
        keys = [f"meta/{m}" for m in metas] + ["ind", "ood"]
        series = {
            label: [suite["metrics"].get(f"{p}precision_at_1/{k}", math.nan) for k in keys]
            + [suite["metrics"][p + "precision_at_1"]]
            for label, p in rows
        }
        paths.append(bar_chart(out / "mmeb.png", "MMEB", [*keys, "overall"], series, "precision@1 (%)"))
    if "retrieval" in suites and suites["retrieval"]["per_dataset"]:
        per = suites["retrieval"]["per_dataset"]
        labels = [f"{n} {x}" for n in per for x in ("I→T", "T→I")]
        series = {
            label: [per[n].get(f"{p}{x}_R@1", math.nan) for n in per for x in ("i2t", "t2i")]
            for label, p in _model_rows(results, "retrieval")
        }
        paths.append(bar_chart(out / "retrieval.png", "Image–text retrieval", labels, series, "R@1 (%)"))
    if "sugarcrepe" in suites and suites["sugarcrepe"]["per_dataset"]:
        per = suites["sugarcrepe"]["per_dataset"]
        series = {
            label: [per[n].get(p + "accuracy", math.nan) for n in per]
            for label, p in _model_rows(results, "sugarcrepe")
        }
        paths.append(bar_chart(out / "sugarcrepe.png", "SugarCrepe", list(per), series, "accuracy (%)"))
    return paths


def model_index(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``model-index`` metadata of a model card, built with ``huggingface_hub``'s ``EvalResult``."""
    from huggingface_hub import ModelCardData

    from unime_v2.hub_cards.eval_results import eval_results

    evals = eval_results(results)
    if not evals:
        return []
    card = ModelCardData(model_name=Path(str(results["model"])).name or str(results["model"]), eval_results=evals)
    return card.to_dict().get("model-index", [])


def write_report(results: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md``, the PNGs and ``model_index.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "json": atomic_write_bytes(out / "results.json", json.dumps(results, indent=2, default=str).encode()),
        "markdown": atomic_write_bytes(out / "results.md", markdown_report(results).encode()),
        "model_index": atomic_write_bytes(
            out / "model_index.json", json.dumps(model_index(results), indent=2).encode()
        ),
    }
    for path in charts(results, out):
        files[path.stem] = path
    return files
