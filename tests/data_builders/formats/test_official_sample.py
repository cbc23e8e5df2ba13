"""The authors' released 50-record sample (real data nobody here generated) through our readers and sampler.

``tests/fixtures/official-mined-negatives-example.json`` is a verbatim copy of the sample of
``TianchengGu/UniME-V2-Training-Datasets``; the figures asserted below are the readings of docs/method.md §3.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from unime_v2.data_builders.formats.mined import from_authors_json, source_from_path
from unime_v2.data_builders.mining import HardNegativeSampler, MiningConfig, negative_statistics


SAMPLE = Path(__file__).parents[2] / "fixtures" / "official-mined-negatives-example.json"


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("no_images")
    return from_authors_json(SAMPLE, root, check_images=False, show_progress_bar=False).to_list()


def test_sample_reads_and_meets_the_sampler_invariants_for_the_default_beta(rows):
    beta = MiningConfig().beta
    sampler = HardNegativeSampler(beta, num_negatives=10, interval=5)
    assert len(rows) == 50
    for row in rows:
        assert len(row["neg_texts"]) == 10 and len(row["neg_scores"]) == 10
        assert all(0.0 <= s <= 1.0 for s in [row["pos_score"], *row["neg_scores"]])
        assert all(s < row["pos_score"] - beta for s in row["neg_scores"]), row["query_id"]
        # their stored negatives as a candidate list: our default β removes none of them
        assert sampler.sample(row["neg_scores"], row["pos_score"], row["query_id"]).n_false_negatives == 0


def test_sample_statistics_are_the_documented_readings(rows):
    """Smallest s₊ − s gap 0.0038 (so their β ≤ 0.0038), 60 negatives in 6 records within 0.1 of s₊ (a β of 0.1
    would have removed them), 36 of 191 image negatives from another dataset in 11 records (global retrieval)."""
    stats = negative_statistics(
        [row["pos_score"] for row in rows],
        [row["neg_scores"] for row in rows],
        [row["source"] for row in rows],
        [[source_from_path(path) if path else "" for path in row["neg_image_paths"]] for row in rows],
    )
    assert stats["min_positive_gap"] == pytest.approx(0.0038, abs=5e-5)
    assert stats["negatives_within_margin"] == 60 and stats["records_with_negatives_within_margin"] == 6
    assert stats["negatives_with_known_dataset"] == 191 and stats["negatives_from_other_dataset"] == 36
    assert stats["records_with_negatives_from_other_dataset"] == 11
    old_beta = HardNegativeSampler(0.1, num_negatives=10, interval=5)
    removed = sum(old_beta.sample(r["neg_scores"], r["pos_score"], r["query_id"]).n_false_negatives for r in rows)
    assert removed == 60


def test_sample_has_webqa_queries_with_a_marker_and_no_image(rows):
    orphans = [row for row in rows if "<|image_1|>" in row["query_text"] and row["query_image"] is None]
    assert orphans and {row["source"] for row in orphans} == {"WebQA"}
    assert rows[23] in orphans
