"""The shipped tiny instruct judge (data_builders/assets/tiny_judge_qwen25vl; docs/tiny_judge.md): several times the
embedder's base, made from training facts by examples/make_tiny_judge.py, and its recorded held-out agreement with
the oracle is what it measures."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

from unime_v2.data_builders.tiny_backbones import shipped_tiny_judge, shipped_tiny_vlm
from unime_v2.modeling_unime_v2 import UniMEV2Reranker
from unime_v2.trainers.evaluation.judge_quality import measure_heldout_judge


def parameters(folder) -> int:
    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        return sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())


def test_the_judge_is_several_times_the_embedders_base_and_a_few_mb() -> None:
    record = json.loads((shipped_tiny_judge() / "TINY_JUDGE.json").read_text())
    assert parameters(shipped_tiny_judge()) == record["parameters"]
    assert record["parameters"] >= 3 * parameters(shipped_tiny_vlm())
    assert (shipped_tiny_judge() / "model.safetensors").stat().st_size < 40e6
    assert not list(shipped_tiny_judge().glob("*.py"))  # the installed package's classes load it


def test_it_was_made_from_training_labels_only() -> None:
    settings = json.loads((shipped_tiny_judge() / "unime_v2_training.json").read_text())
    text = json.dumps(settings)
    assert "labels:mini_mmeb" in text and "oracle:mini_mmeb" not in text


def test_it_loads_as_a_judge_and_prefers_the_matching_label() -> None:
    judge = UniMEV2Reranker.from_pretrained(str(shipped_tiny_judge()), dtype=torch.float32)
    assert judge.config.pair_format == "judge"
    query = {"text": "Find me an everyday image that matches the given caption: a small red circle\n", "image": None}
    scores = judge.score(query, [{"text": "small red circle", "image": None}])
    assert len(scores) == 1 and 0.0 <= float(scores[0]) <= 1.0


@pytest.mark.slow
def test_its_recorded_held_out_quality_is_what_it_measures() -> None:
    record = json.loads((shipped_tiny_judge() / "TINY_JUDGE.json").read_text())
    measured = measure_heldout_judge(
        shipped_tiny_judge(), record["args"]["seed"], record["heldout_rows_per_task"], record["tasks"]
    )
    for key in ("heldout_in_pool", "heldout_hard_distractors"):
        assert measured[key]["all"]["auc"] == pytest.approx(record["after"][key]["all"]["auc"], abs=1e-6)
