"""The mined-dataset card records the mining settings and report (its push: tests/hub_cards/test_publishing.py)."""

from __future__ import annotations

import pytest
from huggingface_hub import DatasetCard

from unime_v2.hub_cards.dataset_card import build_mined_dataset_card


def test_card_records_settings_and_report(mining_report):
    card = build_mined_dataset_card(mining_report, "someone/mined-mmeb")
    text = str(card)
    for needle in (
        "TIGER-Lab/VLM2Vec-Qwen2VL-7B",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "δ = 0.95",
        "β = 0.1",
        "top `50`",
        "(seed 7)",
        "| fallbacks | 3 |",
        "| false_negatives_removed | 5123 |",
        "| judge | 301.2 |",
        'load_dataset("someone/mined-mmeb"',
    ):
        assert needle in text, needle
    reloaded = DatasetCard(text)  # the YAML front matter parses back
    metadata = reloaded.data.to_dict()
    assert metadata["unime_v2_mining"] == {
        "embedder": "TIGER-Lab/VLM2Vec-Qwen2VL-7B",
        "judge": "Qwen/Qwen2.5-VL-7B-Instruct",
        "delta": 0.95,
        "beta": 0.1,
        "top_k": 50,
        "num_negatives": 10,
        "interval": 5,
        "seed": 7,
        "pool": "dataset",
    }
    assert metadata["size_categories"] == "1K<n<10K"
    assert "hard-negative-mining" in metadata["tags"]


def test_card_needs_the_settings():
    with pytest.raises(KeyError):
        build_mined_dataset_card({"counts": {}, "timings_s": {}}, "a/b")
