"""The reranker recipes end to end: the script trains (both loss terms logged), the folder loads with ``AutoModel``
and a card, and retrieve-then-rerank on mini-MMEB counts its listwise fallbacks; the tiny judge recipe trains
through the same script and saves a judge that mining loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from unime_v2.modeling_unime_v2 import UniMEV2Model, parse_answer
from unime_v2.trainers.evaluation.retrieve_rerank import RetrieveThenRerank, rerank_precision_at_1
from unime_v2.trainers.reranker import UniMEV2RerankerDataArguments
from unime_v2.trainers.reranker.build import mini_mmeb_rows


REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # training scripts in subprocesses


@pytest.fixture(scope="module")
def trained_dir(tiny_backbone_dirs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reranker")
    command = [
        sys.executable,
        str(REPO / "examples" / "train_reranker.py"),
        "--config",
        str(REPO / "examples" / "configs" / "reranker" / "tiny.yaml"),
        "--output_dir",
        str(out),
        "--backbone",
        str(tiny_backbone_dirs["qwen2_5_vl"]),
        "--max_steps",
        "6",
        "--logging_steps",
        "3",
        "--mini_mmeb_train_per_task",
        "8",
        "--disable_tqdm",
        "true",
    ]
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return out


def test_script_saves_a_loadable_reranker_with_a_card(trained_dir):
    card = (trained_dir / "README.md").read_text()
    assert "final pair_loss" in card and "final list_loss" in card and "Ans: (i)" in card
    reranker = AutoModel.from_pretrained(trained_dir, trust_remote_code=True, dtype=torch.float32)
    assert type(reranker).__name__ == "UniMEV2Reranker" and reranker.config.pair_format == "reranker"
    scores = reranker.score({"text": "a red square", "image": None}, [{"text": "red", "image": None}])
    assert scores.shape == (1,) and 0 < float(scores[0]) < 1


def test_retrieve_then_rerank_counts_fallbacks(trained_dir, tiny_backbone_dirs):
    reranker = AutoModel.from_pretrained(trained_dir, trust_remote_code=True, dtype=torch.float32)
    embedder = UniMEV2Model.from_backbone(str(tiny_backbone_dirs["qwen2_vl"]), dtype=torch.float32)
    rows = list(mini_mmeb_rows(UniMEV2RerankerDataArguments(mini_mmeb_train_per_task=2), seed=1))
    pipeline = RetrieveThenRerank(embedder, reranker, top_k=4, progress=False)
    figures = rerank_precision_at_1(pipeline, rows)
    assert figures["rows"] == len(rows) and 0 <= figures["embedder"] <= 1 and 0 <= figures["reranked"] <= 1
    # one query by hand: the final order is the embedder's top-k permuted; a fallback is exactly an unparsable answer
    row = rows[0]
    candidates = [{"text": t, "image": i} for t, i in zip(row["tgt_text"], row["tgt_image"])]
    before = pipeline.num_fallbacks
    (result,) = pipeline.index(candidates).search([{"text": row["qry_text"], "image": row["qry_image"]}])
    assert sorted(result.order) == sorted(result.embed_order) and len(result.order) == 4
    assert result.fallback == (parse_answer(result.answer, 4) is None)
    assert pipeline.num_fallbacks == before + int(result.fallback)
    assert result.embed_scores == sorted(result.embed_scores, reverse=True)


def test_tiny_judge_recipe_trains_pairwise_and_saves_a_judge(tiny_backbone_dirs, tmp_path):
    """The tiny judge is examples/train_reranker.py with its recipe: pairwise loss (+ the candidate LM term) only,
    judge quality before and after in judge_training.json, and a folder mining loads as its judge."""
    import json

    from unime_v2.data_builders.mining import MiningConfig
    from unime_v2.data_builders.mining.models import load_judge

    out = tmp_path / "judge"
    command = [
        sys.executable,
        str(REPO / "examples" / "train_reranker.py"),
        "--config",
        str(REPO / "examples" / "configs" / "reranker" / "tiny_judge.yaml"),
        "--output_dir",
        str(out),
        "--backbone",
        str(tiny_backbone_dirs["qwen2_5_vl"]),
        "--max_steps",
        "4",
        "--logging_steps",
        "2",
        "--mini_mmeb_train_per_task",
        "24",
        "--mini_mmeb_test_per_task",
        "2",
    ]
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [entry for entry in history if "loss" in entry]
    assert len(logged) == 2 and all("pair_loss" in e and "candidate_lm_loss" in e for e in logged)
    assert not any("list_loss" in entry for entry in history)
    figures = json.loads((out / "judge_training.json").read_text())
    for when in ("before", "after"):
        assert set(figures[when]) == {"heldout_in_pool", "test_rows"}
        assert figures[when]["heldout_in_pool"]["num_queries"] > 0
    assert figures["args"]["list_weight"] == 0.0 and figures["args"]["train_data"] == "judge_pairs:mini_mmeb"
    judge = load_judge(str(out), MiningConfig(judge_dtype="float32"), torch.device("cpu"))
    scores = judge.score({"text": "a red square", "image": None}, [{"text": "red", "image": None}])
    assert len(scores) == 1 and 0 < float(scores[0]) < 1
