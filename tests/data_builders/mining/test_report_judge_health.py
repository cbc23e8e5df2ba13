"""Judge health: AUC of the positive against the judged pool, negatives above the positive, fallbacks, warnings."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from unime_v2.data_builders.formats.mined import (
    MINED_FEATURES,
    MORE_POSITIVE_FEATURES,
    from_authors_json,
    make_mined_row,
)
from unime_v2.data_builders.mining.report import (
    AUTHORS_SAMPLE_JUDGE_HEALTH,
    JudgeHealth,
    judge_health_of_mined,
    judge_health_thresholds,
    report_markdown,
)


SAMPLE = Path(__file__).parents[2] / "fixtures" / "official-mined-negatives-example.json"


def test_auc_counts_ties_as_half_and_pools_pairs_within_queries() -> None:
    health = JudgeHealth("judged candidates")
    health.add(0.8, [0.1, 0.8, 0.9, 0.2])  # AUC 2.5 / 4, one candidate above the positive
    health.add(0.3, [0.1, 0.2])  # AUC 1
    health.add(0.4, [1.0] * 3, fallback=True)  # AUC 0
    figures = health.result()
    assert figures["auc_mean"] == pytest.approx((0.625 + 1 + 0) / 3)
    assert figures["auc_pooled"] == pytest.approx((2.5 + 2 + 0) / 9)
    assert figures["queries_with_negative_above_positive"] == 2
    assert figures["share_negative_above_positive"] == pytest.approx(2 / 3)
    assert figures["positives_below_half"] == 2 and figures["fallbacks"] == 1
    assert figures["fallback_share"] == pytest.approx(1 / 3)


def test_warnings_past_thresholds_and_thresholds_are_configurable() -> None:
    health = JudgeHealth("judged candidates")
    for _ in range(9):
        health.add(0.9, [0.1, 0.2])
    health.add(0.3, [1.0, 1.0], fallback=True)
    warnings = health.result()["warnings"]
    assert len(warnings) == 1 and "fell back" in warnings[0] and "max_fallback_share=0.05" in warnings[0]
    assert health.result({"max_fallback_share": 0.2})["warnings"] == []
    both = health.result({"max_share_negative_above_positive": 0.05})["warnings"]
    assert len(both) == 2 and "above the positive" in both[1]
    assert health.result({"min_auc_mean": 0.95})["warnings"][1].startswith("judge health: 0.9 mean AUC")
    with pytest.raises(ValueError, match="unknown key.*max_fallback_shares.*valid"):
        judge_health_thresholds({"max_fallback_shares": 0.1})


def test_authors_released_sample_gives_the_reference_figures() -> None:
    """The figures docs/mining.md cites ("Judge health"): printed here, equal to AUTHORS_SAMPLE_JUDGE_HEALTH."""
    mined = from_authors_json(SAMPLE, SAMPLE.parent, num_negatives=None, check_images=False)
    figures = judge_health_of_mined(mined)
    print(json.dumps({k: v for k, v in figures.items() if k not in ("thresholds", "warnings")}))
    assert {k: figures[k] for k in AUTHORS_SAMPLE_JUDGE_HEALTH} == AUTHORS_SAMPLE_JUDGE_HEALTH
    assert figures["warnings"] == []


def test_fallback_rows_of_a_mined_dataset_out_score_their_positive() -> None:
    rows = [
        make_mined_row(
            query_text="q", pos_text="p", pos_score=0.7, neg_texts=["n"] * 2, neg_scores=[0.1, 0.6], num_negatives=2
        ),
        make_mined_row(
            query_text="q", pos_text="p", pos_score=0.4, neg_texts=["n"] * 2, neg_scores=[1.0, 1.0], num_negatives=2
        ),
    ]
    mined = datasets.Dataset.from_list(rows, features=MINED_FEATURES)
    figures = judge_health_of_mined(mined)
    assert figures["fallbacks"] == 1 and figures["share_negative_above_positive"] == 0.5
    assert any("fell back" in w for w in figures["warnings"])
    markdown = report_markdown({"settings": {}, "counts": {}, "timings_s": {}, "scores": {}, "judge_health": figures})
    assert "## Judge health" in markdown and "fell back" in markdown


def test_several_positives_use_the_smallest_as_reference_and_every_positive_in_the_auc() -> None:
    """docs/mining.md, "Judge health": a row with positives scored 0.9 and 0.6 against candidates 0.7, 0.5, 0.6."""
    health = JudgeHealth("judged candidates")
    health.add([0.9, 0.6], [0.7, 0.5, 0.6])  # pairs won: 3 for 0.9; 1 + ½ (the tie) for 0.6 → 4.5 of 6
    health.add(0.4, [0.1, 0.2])  # one positive: AUC 1
    figures = health.result()
    assert figures["auc_mean"] == pytest.approx((0.75 + 1) / 2)
    assert figures["auc_pooled"] == pytest.approx(6.5 / 8)
    assert figures["queries_with_negative_above_positive"] == 1  # 0.7 is above the smallest positive, 0.6
    assert figures["positives_below_half"] == 1 and figures["positive_score_mean"] == pytest.approx(0.5)

    rows = [
        make_mined_row(
            query_text=q, pos_text="p", pos_score=s, neg_texts=["n"] * len(n), neg_scores=n, num_negatives=None
        )
        for q, s, n in (("q", 0.9, [0.7, 0.5, 0.6]), ("r", 0.4, [0.1, 0.2]))
    ]
    more = [[0.6], []]
    for row, scores in zip(rows, more):
        row.update(more_pos_texts=["p2"] * len(scores), more_pos_images=[None] * len(scores))
        row.update(more_pos_image_paths=[""] * len(scores), more_pos_scores=scores)
    mined = datasets.Dataset.from_list(rows, features=datasets.Features({**MINED_FEATURES, **MORE_POSITIVE_FEATURES}))
    of_mined = judge_health_of_mined(mined)
    assert {k: of_mined[k] for k in ("queries", "thresholds", "warnings")} == {
        "queries": 2,
        "thresholds": figures["thresholds"],
        "warnings": figures["warnings"],
    }
    for key in ("auc_mean", "auc_pooled", "positive_score_mean"):
        assert of_mined[key] == pytest.approx(figures[key])
    assert of_mined["queries_with_negative_above_positive"] == 1 and of_mined["positives_below_half"] == 1
