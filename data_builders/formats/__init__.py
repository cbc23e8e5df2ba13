"""Data formats: the mined dataset (ours and the authors' JSON), training records, judge pairs (docs/training.md)."""

from .judge_pairs import JudgePair, JudgePairDataset, build_judge_pairs, judge_text, split_queries
from .mined import (
    MINED_FEATURES,
    NUM_STORED_NEGATIVES,
    from_authors_dataset,
    from_authors_json,
    iter_undecoded_rows,
    make_mined_row,
    to_authors_json,
    validate_mined_record,
)
from .training_records import TrainingRecords, load_mined_dataset, oracle_mined_dataset, select_negatives


__all__ = [
    "JudgePair",
    "JudgePairDataset",
    "MINED_FEATURES",
    "NUM_STORED_NEGATIVES",
    "TrainingRecords",
    "build_judge_pairs",
    "from_authors_dataset",
    "from_authors_json",
    "iter_undecoded_rows",
    "judge_text",
    "load_mined_dataset",
    "make_mined_row",
    "oracle_mined_dataset",
    "select_negatives",
    "split_queries",
    "to_authors_json",
    "validate_mined_record",
]
