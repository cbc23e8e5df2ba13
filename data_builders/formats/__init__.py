"""Data formats: the mined dataset (ours and the authors' JSON), training records, judge pairs (docs/training.md),
exports for sentence-transformers and FlagEmbedding (docs/mining.md)."""

from .exports import export_mined, to_flagembedding, to_sentence_transformers
from .judge_pairs import JudgePair, JudgePairDataset, build_judge_pairs, judge_text, split_queries
from .mined import (
    MINED_FEATURES,
    NUM_STORED_NEGATIVES,
    fallback_rows,
    from_authors_dataset,
    from_authors_json,
    is_fallback_row,
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
    "export_mined",
    "fallback_rows",
    "from_authors_dataset",
    "from_authors_json",
    "is_fallback_row",
    "iter_undecoded_rows",
    "judge_text",
    "load_mined_dataset",
    "make_mined_row",
    "oracle_mined_dataset",
    "select_negatives",
    "split_queries",
    "to_authors_json",
    "to_flagembedding",
    "to_sentence_transformers",
    "validate_mined_record",
]
