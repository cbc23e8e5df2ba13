"""Precision@1 on MMEB-eval style rows (the paper's Table 1 metric): thin entry points over :class:`MMEBEvaluator`.

A row is one query with its candidate list; the ground truth is candidate 0 (MMEB's convention). Columns:
``qry_text``, ``qry_image`` (PIL, path or ``None``), ``tgt_text`` (list), ``tgt_image`` (list, entries may be
``None``) and ``dataset`` (the sub-task name). The official MMEB-eval names ``qry_img_path``/``tgt_img_path``
(paths relative to an image root) are accepted too.

A row is a hit only when the ground truth scores **strictly** higher than every other candidate
(:func:`~unime_v2.trainers.evaluation.metrics.hits_at_k`); docs/evaluation.md explains why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .evaluators import MMEBEvaluator
from .metrics import is_hit
from .readers import mmeb_sources_from_rows


__all__ = ["is_hit", "mmeb_evaluator", "precision_at_1"]


def mmeb_evaluator(rows: Iterable[Mapping[str, Any]], image_root: str | None = None, **kwargs: Any) -> MMEBEvaluator:
    """An :class:`MMEBEvaluator` over MMEB-eval rows grouped by their ``dataset`` column; ``kwargs`` go to it."""
    rows = rows if hasattr(rows, "column_names") else list(rows)
    return MMEBEvaluator(mmeb_sources_from_rows(rows, image_dir=image_root), **kwargs)


def precision_at_1(
    model: Any,
    rows: Iterable[Mapping[str, Any]],
    batch_size: int = 32,
    image_root: str | None = None,
    show_progress_bar: bool = False,
) -> dict[str, float]:
    """Precision@1 of ``model`` (anything with ``encode``) on MMEB-eval rows; errors are raised, not skipped.

    Returns ``{"precision_at_1": mean over datasets, "precision_at_1/<dataset>": …, "num_rows": n}`` and the
    meta-task / IND / OOD means (``precision_at_1/meta/<meta>``, ``precision_at_1/ind``, ``precision_at_1/ood``).
    """
    evaluator = mmeb_evaluator(
        rows, image_root, batch_size=batch_size, skip_broken=False, show_progress_bar=show_progress_bar
    )
    return evaluator(model)
