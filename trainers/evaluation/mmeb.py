"""Precision@1 on MMEB-eval style rows (the metric of the paper's Table 1), for training-time evaluation.

A row is one query with its candidate list; the ground truth is candidate 0 (MMEB's convention). Columns:
``qry_text``, ``qry_image`` (PIL, path or ``None``), ``tgt_text`` (list), ``tgt_image`` (list, entries may be
``None``) and ``dataset`` (the sub-task name). The official MMEB-eval names ``qry_img_path``/``tgt_img_path``
(paths relative to an image root) are accepted too.

A row is a hit only when the ground truth scores **strictly** higher than every other candidate. The authors'
evaluation takes ``argmax``, which returns the first maximum and so counts a tie with index 0 as a hit; a
collapsed model (all embeddings equal) would then score 100 %. Here a tie is a miss.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch


def _image(row: Mapping[str, Any], key: str, path_key: str, image_root: str | None, index: int | None = None) -> Any:
    value = row.get(key)
    if value is None and row.get(path_key) is not None:
        value = row[path_key]
    if index is not None:
        value = value[index] if value is not None else None
    if isinstance(value, str):
        if value == "":
            return None
        return os.path.join(image_root, value) if image_root else value
    return value


def row_items(row: Mapping[str, Any], image_root: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The query item and the candidate items (ground truth first) of one MMEB-eval row."""
    query = {"text": row["qry_text"], "image": _image(row, "qry_image", "qry_img_path", image_root)}
    texts = row["tgt_text"]
    candidates = [
        {"text": text or "", "image": _image(row, "tgt_image", "tgt_img_path", image_root, j)}
        for j, text in enumerate(texts)
    ]
    return query, candidates


def is_hit(scores: torch.Tensor) -> bool:
    """True when candidate 0 (the ground truth) scores strictly above every other candidate."""
    return bool(scores.numel() == 1 or scores[0] > scores[1:].max())


def precision_at_1(
    model: Any,
    rows: Iterable[Mapping[str, Any]],
    batch_size: int = 32,
    image_root: str | None = None,
    show_progress_bar: bool = False,
) -> dict[str, float]:
    """Precision@1 of ``model`` (a ``UniMEV2Model`` with a processor) on MMEB-eval rows.

    Returns ``{"precision_at_1": mean over datasets, "precision_at_1/<dataset>": …, "num_rows": n}``: the overall
    figure is the mean of the per-dataset precisions, as MMEB averages its sub-tasks.
    """
    hits = row_hits(model, rows, batch_size, image_root, show_progress_bar)
    return summarize_hits(hits)


def row_hits(
    model: Any,
    rows: Iterable[Mapping[str, Any]],
    batch_size: int = 32,
    image_root: str | None = None,
    show_progress_bar: bool = False,
) -> list[tuple[str, bool]]:
    """``(dataset, hit)`` for each row, embedding every query and candidate with ``model.encode``."""
    queries: list[dict[str, Any]] = []
    candidates: list[dict[str, Any]] = []
    spans: list[tuple[str, int, int]] = []
    for row in rows:
        query, row_candidates = row_items(row, image_root)
        if not row_candidates:
            raise ValueError(f"row {len(queries)} ({row.get('dataset', '?')}) has no candidates")
        queries.append(query)
        spans.append((str(row.get("dataset", "all")), len(candidates), len(candidates) + len(row_candidates)))
        candidates += row_candidates
    if not queries:
        return []
    query_embeddings = model.encode(queries, batch_size=batch_size, show_progress_bar=show_progress_bar)
    candidate_embeddings = model.encode(candidates, batch_size=batch_size, show_progress_bar=show_progress_bar)
    query_embeddings = torch.nn.functional.normalize(query_embeddings.float(), dim=-1)
    candidate_embeddings = torch.nn.functional.normalize(candidate_embeddings.float(), dim=-1)
    hits = []
    for query, (dataset, start, end) in zip(query_embeddings, spans):
        hits.append((dataset, is_hit(candidate_embeddings[start:end] @ query)))
    return hits


def summarize_hits(hits: Sequence[tuple[str, bool]]) -> dict[str, float]:
    """Per-dataset precision@1, their mean (``precision_at_1``) and the row count."""
    per_dataset: dict[str, list[bool]] = defaultdict(list)
    for dataset, hit in hits:
        per_dataset[dataset].append(hit)
    metrics = {f"precision_at_1/{name}": sum(v) / len(v) for name, v in sorted(per_dataset.items())}
    metrics["precision_at_1"] = sum(metrics.values()) / len(metrics) if metrics else 0.0
    metrics["num_rows"] = float(len(hits))
    return metrics
