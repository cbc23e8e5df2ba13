"""Training on a mined dataset with fallback rows: a warning with their count and share; an option drops them."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import pytest

from unime_v2.data_builders.formats.mined import MINED_FEATURES, make_mined_row
from unime_v2.data_builders.formats.training_records import TrainingRecords


LOGGER = "unime_v2.data_builders.formats.training_records"


def _row(index: int, neg_scores: list[float]) -> dict:
    return make_mined_row(
        query_id=f"q{index}",
        query_text=f"query {index}",
        pos_text=f"positive {index}",
        pos_score=0.6,
        neg_texts=[f"negative {index}.{j}" for j in range(len(neg_scores))],
        neg_scores=neg_scores,
        num_negatives=None,
    )


@pytest.fixture
def mined() -> datasets.Dataset:
    rows = [_row(0, [0.1, 0.2]), _row(1, [1.0, 1.0]), _row(2, [0.3]), _row(3, [1.0, 1.0]), _row(4, [0.0, 0.5])]
    return datasets.Dataset.from_list(rows, features=MINED_FEATURES)


def test_fallback_rows_are_counted_and_logged_with_their_share(mined, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        records = TrainingRecords(mined, num_hard_negatives=2, pad_policy="repeat")
    assert records.fallback_records == [1, 3] and records.num_fallback == 2 and len(records) == 5
    message = next(r.getMessage() for r in caplog.records if "fallback rows" in r.getMessage())
    assert "2 of 5 rows (40.0%)" in message and "--drop_fallback_rows" in message


def test_drop_fallback_rows_leaves_them_out(mined, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        records = TrainingRecords(mined, num_hard_negatives=2, pad_policy="repeat", drop_fallback_rows=True)
    assert len(records) == 3 and [records[i]["query_id"] for i in range(3)] == ["q0", "q2", "q4"]
    assert records.padded_records == [1] and records.num_fallback == 2 and records.dropped_fallback_rows
    assert any("dropped" in r.getMessage() for r in caplog.records)
    assert all(max(records[i]["scores"][1:]) < 1.0 for i in range(3))
    only_fallbacks = mined.select([1, 3])
    with pytest.raises(ValueError, match="every row is a fallback row"):
        TrainingRecords(only_fallbacks, num_hard_negatives=2, drop_fallback_rows=True)


def test_train_and_train_reranker_take_the_option(mined, tmp_path: Path, example_script, caplog) -> None:
    from unime_v2.trainers.data import load_training_data
    from unime_v2.trainers.reranker import reranker_records

    folder = tmp_path / "mined"
    mined.save_to_disk(str(folder))
    common = ["--backbone", "tiny:qwen2_vl", "--train_data", str(folder), "--output_dir", str(tmp_path / "out")]
    common += ["--drop_fallback_rows", "true"]
    _, data_args, args = example_script("train").parse([*common, "--num_hard_negatives", "1", "--eval_data", "none"])
    assert args.drop_fallback_rows is True
    records, _ = load_training_data(data_args, args)
    assert len(records) == 3 and records.num_fallback == 2

    _, data_args, args = example_script("train_reranker").parse(common)
    assert data_args.drop_fallback_rows is True
    assert len(reranker_records(data_args, args.seed)) == 3
    _, data_args, args = example_script("train_reranker").parse(common[:-2])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert len(reranker_records(data_args, args.seed)) == 5
    assert any("2 of 5 rows" in r.getMessage() for r in caplog.records)
