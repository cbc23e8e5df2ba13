"""Judge quality before and after training: the tiny judge recipe's measurement (docs/judge_training.md).

A judge trained on mini-MMEB pairs (``train_data: judge_pairs:mini_mmeb``) is scored against mini-MMEB's oracle,
which measures and never trains: on held-out train queries with in-pool candidates, and on the build's test rows
(ground truth + hard distractors). Metrics: :mod:`unime_v2.trainers.evaluation.judge_quality`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unime_v2.data_builders.formats.judge_pairs import MiniMMEBJudgePairs

from ..evaluation.judge_quality import JudgeQuality, format_quality_table, judge_quality, judge_quality_eval_rows


TABLES = {
    "heldout_in_pool": "held-out train queries, positive + in-pool candidates",
    "test_rows": "mini-MMEB test rows, ground truth + first candidates (hard distractors)",
}


class JudgeQualityEvaluator:
    """Scores a judge (anything with ``score(query, candidates)``: a ``UniMEV2Reranker``) on the held-out material
    of :class:`~unime_v2.data_builders.formats.judge_pairs.MiniMMEBJudgePairs`.

    Args:
        data: the pairs' mini-MMEB build, its held-out queries and test rows.
        num_candidates: candidates per query besides its positive / ground truth.
        test_rows: also score the test rows.
        seed: the training seed (the held-out candidates are drawn with ``seed + 1``, apart from the pairs').
    """

    def __init__(self, data: MiniMMEBJudgePairs, num_candidates: int, test_rows: bool, seed: int) -> None:
        if not data.heldout_ids:
            raise ValueError("judge quality needs held-out queries (heldout_fraction > 0)")
        self.data, self.num_candidates, self.test_rows, self.seed = data, num_candidates, test_rows, seed

    def __call__(self, judge: Any) -> dict[str, JudgeQuality]:
        data = self.data
        out = {
            "heldout_in_pool": judge_quality(
                judge,
                data.records,
                query_indices=data.heldout_ids,
                num_candidates=self.num_candidates,
                seed=self.seed + 1,
            )
        }
        if self.test_rows:
            out["test_rows"] = judge_quality_eval_rows(judge, data.test_rows, num_candidates=self.num_candidates)
        return out


def quality_report(before: dict[str, JudgeQuality], after: dict[str, JudgeQuality]) -> str:
    """One markdown table per measurement: untrained vs trained."""
    return "\n".join(
        f"\n### {title}\n" + format_quality_table({"untrained": before[key], "trained": after[key]})
        for key, title in TABLES.items()
        if key in before
    )


def write_judge_training(
    output_dir: str | Path,
    before: dict[str, JudgeQuality],
    after: dict[str, JudgeQuality],
    settings: dict[str, Any],
    figures: dict[str, Any],
) -> Path:
    """``judge_training.json`` next to the judge: settings, ``figures`` (times, losses), quality before / after."""
    path = Path(output_dir) / "judge_training.json"
    record = {
        "args": settings,
        **figures,
        "before": {key: value.to_dict() for key, value in before.items()},
        "after": {key: value.to_dict() for key, value in after.items()},
    }
    path.write_text(json.dumps(record, indent=2, default=str))
    return path
