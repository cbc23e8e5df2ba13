"""Training with push_to_hub: the merged model, adapter/ and the card go up in one commit; no root adapter files."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModel


REPO = Path(__file__).resolve().parents[2]
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def _main(script: str):
    return runpy.run_path(str(REPO / "examples" / script), run_name="not_main")["main"]


def _check_pushed(hub, out: Path, repo_id: str, model_class: str) -> dict[str, bytes]:
    assert [r["repo_id"] for r in hub.repos] == [repo_id]  # created by the final push only
    (commit,) = hub.commits  # per-save pushes are off: one commit in all
    files = commit["files"]
    assert not any(name in files for name in ADAPTER_FILES) and "adapter/adapter_config.json" in files
    assert not any((out / name).exists() for name in ADAPTER_FILES)
    assert {"model.safetensors", "config.json", "README.md", "unime_v2_training.json"} <= set(files)
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    card = ModelCard(files["README.md"].decode())
    assert f'AutoModel.from_pretrained("{repo_id}"' in card.text and "unime-v2" in card.data.tags
    model = AutoModel.from_pretrained(out, trust_remote_code=True, dtype=torch.float32)
    assert type(model).__name__ == model_class and not any("lora" in n for n, _ in model.named_parameters())
    return files


def test_embedder_training_pushes_the_merged_model_in_one_commit(tmp_path, recording_hub):
    """The pushed card is the local one, with the evaluation before training (a new log history) and after it."""
    out = tmp_path / "run"
    argv = ["--config", str(REPO / "examples" / "configs" / "embedder" / "tiny.yaml"), "--output_dir", str(out)]
    argv += ["--mini_mmeb_train_per_task", "8", "--max_steps", "2", "--warmup_steps", "0"]
    argv += ["--save_strategy", "steps", "--save_steps", "1", "--disable_tqdm", "true", "--report_to", "none"]
    argv += ["--push_to_hub", "true", "--hub_model_id", "me/unime-v2-tiny", "--hub_strategy", "every_save"]
    _main("train.py")(argv)
    files = _check_pushed(recording_hub, out, "me/unime-v2-tiny", "UniMEV2Model")
    record = json.loads(files["unime_v2_training.json"])
    assert record["training"]["steps"] == 2 and record["training"]["LoRA"] == "r=16, alpha=64, dropout=0.0"
    assert "| loss | symmetric_kl |" in files["README.md"].decode()
    assert files["README.md"] == (out / "README.md").read_bytes()
    assert files["unime_v2_training.json"] == (out / "unime_v2_training.json").read_bytes()
    assert {"eval_untrained_precision_at_1", "eval_precision_at_1"} <= record["metrics"].keys()
    assert not any(name.startswith("checkpoint-") for name in files)


def test_reranker_training_pushes_the_merged_model_in_one_commit(tiny_backbone_dirs, tmp_path, recording_hub):
    out = tmp_path / "reranker"
    argv = ["--config", str(REPO / "examples" / "configs" / "reranker" / "tiny.yaml"), "--output_dir", str(out)]
    argv += [
        "--backbone",
        str(tiny_backbone_dirs["qwen2_5_vl"]),
        "--max_steps",
        "2",
        "--mini_mmeb_train_per_task",
        "4",
    ]
    argv += [
        "--use_lora",
        "true",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--disable_tqdm",
        "true",
        "--logging_steps",
        "1",
    ]
    argv += ["--save_strategy", "steps", "--save_steps", "1", "--push_to_hub", "true", "--hub_model_id", "me/rr"]
    _main("train_reranker.py")(argv)
    files = _check_pushed(recording_hub, out, "me/rr", "UniMEV2Reranker")
    card = files["README.md"].decode()
    assert "| LoRA (r, alpha, dropout) | 4, 8, 0.05 |" in card and "| steps | 2 |" in card
    assert "final pair_loss" in card


@pytest.mark.parametrize("bad", ["me/bad id!"])
def test_training_push_to_an_invalid_repo_id_fails_before_uploading(bad, tmp_path, recording_hub):
    argv = ["--config", str(REPO / "examples" / "configs" / "embedder" / "tiny.yaml"), "--output_dir", str(tmp_path)]
    argv += ["--eval_data", "none", "--mini_mmeb_train_per_task", "8", "--max_steps", "1", "--save_strategy", "no"]
    argv += ["--push_to_hub", "true", "--hub_model_id", bad, "--disable_tqdm", "true", "--report_to", "none"]
    with pytest.raises(ValueError, match="invalid Hub repo id"):
        _main("train.py")(argv)
    assert not recording_hub.repos and not recording_hub.commits
