"""The mined-dataset card records the mining settings and report; push_to_hub uploads card, report and data."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset
from huggingface_hub import DatasetCard, HfApi

from unime_v2.data_builders.formats.mined import MINED_FEATURES, make_mined_row
from unime_v2.data_builders.mining.pipeline import MiningResult
from unime_v2.data_builders.mining.report import write_report
from unime_v2.hub_cards.dataset_card import build_mined_dataset_card


REPORT = {
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


def test_card_records_settings_and_report():
    card = build_mined_dataset_card(REPORT, "someone/mined-mmeb")
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


def test_push_to_hub_uploads_card_reports_and_dataset_without_network(tmp_path, monkeypatch):
    row = make_mined_row(
        query_text="q",
        pos_text="p",
        pos_score=0.9,
        neg_texts=[f"n{i}" for i in range(10)],
        neg_scores=[0.1] * 10,
        source="A",
        query_id="A-0",
    )
    dataset = Dataset.from_list([row], features=MINED_FEATURES)
    write_report(REPORT, tmp_path)
    (tmp_path / "judge_scores.png").write_bytes(b"\x89PNG fake")
    calls: list[tuple[str, dict]] = []

    def record(name):
        return lambda self, repo_id=None, **kw: calls.append(
            (name, {"repo_id": repo_id, **kw}) if repo_id else (name, kw)
        )

    def push(self, repo_id, **kw):
        calls.append(("push_to_hub", {"repo_id": repo_id, "rows": len(self), **kw}))

    monkeypatch.setattr(HfApi, "create_repo", record("create_repo"))
    monkeypatch.setattr(HfApi, "upload_file", record("upload_file"))
    monkeypatch.setattr(Dataset, "push_to_hub", push)

    MiningResult(dataset=dataset, report=REPORT, output_dir=tmp_path).push_to_hub("someone/mined", private=True)

    names = [name for name, _ in calls]
    assert names == ["create_repo", "upload_file", "upload_file", "upload_file", "upload_file", "push_to_hub"]
    assert calls[0][1] == {"repo_id": "someone/mined", "repo_type": "dataset", "private": True, "exist_ok": True}
    readme = calls[1][1]
    assert readme["path_in_repo"] == "README.md" and readme["repo_type"] == "dataset"
    assert "Qwen/Qwen2.5-VL-7B-Instruct" in readme["path_or_fileobj"].decode()
    uploaded = {kw["path_in_repo"] for name, kw in calls if name == "upload_file"}
    assert uploaded == {"README.md", "mining/report.json", "mining/report.md", "mining/judge_scores.png"}
    assert json.loads((tmp_path / "report.json").read_text())["counts"]["fallbacks"] == 3
    assert calls[-1][1]["repo_id"] == "someone/mined" and calls[-1][1]["rows"] == 1 and calls[-1][1]["private"]


def test_card_needs_the_settings():
    with pytest.raises(KeyError):
        build_mined_dataset_card({"counts": {}, "timings_s": {}}, "a/b")
