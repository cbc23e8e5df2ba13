"""Shared fixtures of the card and publishing tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest


_REPORT = {
    "settings": {
        "embedder": "TIGER-Lab/VLM2Vec-Qwen2VL-7B",
        "embedder_prompt_format": "official",
        "judge": "Qwen/Qwen2.5-VL-7B-Instruct",
        "judge_dtype": "bfloat16",
        "pool": "dataset",
        "delta": 0.95,
        "top_k": 50,
        "beta": 0.1,
        "num_negatives": 10,
        "interval": 5,
        "seed": 7,
        "prefix_sharing": True,
        "on_empty_pool": "skip",
        "data": "TIGER-Lab/MMEB-train",
        "data_split": "original",
    },
    "counts": {
        "records": 1200,
        "queries": 1198,
        "skipped_empty_pool": 2,
        "pairs_judged": 61098,
        "false_negatives_removed": 5123,
        "padded": 17,
        "fallbacks": 3,
        "pools_smaller_than_top_k": 40,
        "duplicate_candidates": 311,
        "duplicate_queries": 4,
    },
    "timings_s": {"embed": 12.5, "retrieve": 0.8, "judge": 301.25},
    "scores": {"positives": {"count": 1198, "mean": 0.81}},
}


@pytest.fixture(scope="session")
def mining_report() -> dict[str, Any]:
    """A mining ``report.json`` as ``mine`` writes it (settings, counts, timings, score summary)."""
    return copy.deepcopy(_REPORT)
