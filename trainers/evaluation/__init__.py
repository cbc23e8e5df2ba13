"""Evaluators: MMEB precision@1 (ties never favour the ground truth) and judge quality against an oracle."""

from .judge_quality import (
    JudgeQuality,
    format_quality_table,
    judge_quality,
    judge_quality_eval_rows,
    roc_auc,
    spearman,
)
from .mmeb import is_hit, precision_at_1, row_hits, row_items, summarize_hits


__all__ = [
    "JudgeQuality",
    "format_quality_table",
    "is_hit",
    "judge_quality",
    "judge_quality_eval_rows",
    "precision_at_1",
    "roc_auc",
    "row_hits",
    "row_items",
    "spearman",
    "summarize_hits",
]
