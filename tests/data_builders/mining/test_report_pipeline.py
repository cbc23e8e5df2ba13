"""A tiny mining run writes judge health into its report (warning past the thresholds) and the requested exports."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import pytest
import torch
from datasets import Dataset

from unime_v2.data_builders.formats.mined import fallback_rows
from unime_v2.data_builders.mining.config import MiningConfig
from unime_v2.data_builders.mining.pipeline import mine
from unime_v2.data_builders.mining.report import judge_health_of_mined


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_backbone_dirs):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("health_run")
    rows = [{"qry": f"Find the note about topic {i}.", "pos_text": f"note {i}: topic {i}"} for i in range(12)]
    Dataset.from_list(rows).save_to_disk(str(root / "source"))
    config = MiningConfig(
        data=str(root / "source"),
        columns={"query_image": None, "pos_image": None},
        embedder=str(tiny_backbone_dirs["qwen2_vl"]),
        judge=str(tiny_backbone_dirs["qwen2_5_vl"]),
        top_k=6,
        num_negatives=3,
        shard_size=6,
        progress=False,
        faiss_gpu=False,
        output_dir=str(root / "out"),
        export="sentence_transformers,flagembedding",
        judge_health_thresholds={"max_fallback_share": 0.0, "min_auc_mean": 1.01},
    )
    return config, mine(config)


def test_report_holds_judge_health_and_warns(run, caplog) -> None:
    config, result = run
    health = result.report["judge_health"]
    assert health["pool"] == "judged candidates" and health["queries"] == 12
    assert health["fallbacks"] == result.report["counts"]["fallbacks"] == len(fallback_rows(result.dataset))
    assert 0.0 <= health["auc_mean"] <= 1.0 and 0.0 <= health["auc_pooled"] <= 1.0
    assert any("mean AUC" in w for w in health["warnings"])  # min_auc_mean 1.01 always warns
    assert health["thresholds"]["min_auc_mean"] == 1.01
    written = json.loads((Path(config.output_dir) / "report.json").read_text())
    assert written["judge_health"] == health
    assert "## Judge health" in (Path(config.output_dir) / "report.md").read_text()
    stored = judge_health_of_mined(result.dataset)
    assert stored["fallbacks"] == health["fallbacks"]


def test_warnings_are_logged(run, caplog, tiny_backbone_dirs) -> None:
    config, _ = run
    with caplog.at_level(logging.WARNING, logger="unime_v2.data_builders.mining.report"):
        again = mine(config)  # every stage reused
    assert any("judge health:" in record.getMessage() for record in caplog.records)
    assert again.report["judge_health"]["warnings"]


def test_exports_are_written_beside_the_dataset(run) -> None:
    config, result = run
    out = Path(config.output_dir)
    kept = len(result.dataset) - len(fallback_rows(result.dataset))
    st = datasets.load_dataset("parquet", data_files=str(out / "sentence_transformers" / "train.parquet"))["train"]
    assert 0 < kept < len(result.dataset)  # the tiny judge gives this run one fallback row
    assert len(st) == kept and st.column_names[-1] == "label" and len(st[0]["label"]) == 4
    lines = (out / "flagembedding" / "train.jsonl").read_text().splitlines()
    assert len(lines) == kept
    assert result.report["exports"]["flagembedding"]["skipped_fallback_rows"] == len(result.dataset) - kept


def test_dataset_card_shows_judge_health(run) -> None:
    from unime_v2.hub_cards.dataset_card import build_mined_dataset_card

    _, result = run
    card = str(build_mined_dataset_card(result.report, "you/mined"))
    assert "| auc_mean |" in card and "min_auc_mean=1.01" in card
