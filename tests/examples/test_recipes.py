"""Every training recipe in examples/configs/ parses through the training script's parser and builds its trainer
on a tiny backbone of the same family (seconds per recipe).

Overrides, the same for every recipe: ``--backbone`` (the tiny folder), ``--output_dir`` (a temporary folder),
``--use_cpu true --bf16 false`` (no GPU here) and ``--deepspeed ""`` (an empty value turns DeepSpeed off, which
needs a GPU and is not installed on CPU machines; every other key of the recipe is kept and checked).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from unime_v2.data_builders.recipes import RecipeParser
from unime_v2.trainers import (
    UniMEV2Collator,
    UniMEV2DataArguments,
    UniMEV2Trainer,
    UniMEV2TrainingArguments,
    base_embedder,
    build_embedder,
)


CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "configs"
TRAINING = sorted(p for p in CONFIGS.glob("*.yaml") if "backbone" in (yaml.safe_load(p.read_text()) or {}))
RERANKER_RECIPES = [p for p in TRAINING if "list_weight" in yaml.safe_load(p.read_text())]
RECIPES = [p for p in TRAINING if p not in RERANKER_RECIPES]


def tiny_kind(backbone: str) -> str:
    name = backbone.lower()
    if "llava" in name:
        return "llava_onevision"
    if "qwen2.5" in name or "qwen2_5" in name:
        return "qwen2_5_vl"
    return "qwen2_vl"


def test_both_families_exist_for_every_backbone():
    names = {p.stem for p in RECIPES}
    for backbone in ("qwen2vl_2b", "qwen2vl_7b", "llava_ov_7b"):
        assert {f"{backbone}_paper", f"{backbone}_authors"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_builds_its_trainer_on_a_tiny_backbone(recipe, tiny_backbone_dirs, tmp_path):
    declared = yaml.safe_load(recipe.read_text())
    kind = tiny_kind(str(declared["backbone"])) if not str(declared["backbone"]).startswith("tiny:") else None
    kind = kind or str(declared["backbone"]).split(":")[1]
    argv = ["--config", str(recipe), "--backbone", str(tiny_backbone_dirs[kind]), "--output_dir", str(tmp_path)]
    argv += ["--use_cpu", "true", "--bf16", "false", "--deepspeed", ""]
    data_args, args = RecipeParser((UniMEV2DataArguments, UniMEV2TrainingArguments)).parse(argv)
    assert not args.deepspeed
    for key in ("loss_type", "learning_rate", "max_steps", "per_device_train_batch_size", "lora_r"):
        if key in declared:
            assert getattr(args, key) == declared[key], key
    args.use_dora = False  # peft DoRA is slow on CPU; the recipe's value was checked above
    model = build_embedder(data_args.backbone, args)
    processor = base_embedder(model).processor
    trainer = UniMEV2Trainer(model=model, args=args, data_collator=UniMEV2Collator(processor))
    if args.use_lora:
        adapted = {name for name, _ in model.named_modules() if name.endswith("lora_A")}
        in_vision = any("vision_tower" in name or ".visual." in name for name in adapted)
        assert adapted and in_vision == (recipe.stem == "llava_ov_7b_authors")  # their names also hit SigLIP
    else:
        trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        assert any(".visual." in name for name in trainable) == (not args.freeze_vision_tower)
    record = {
        "query": {"text": "a red square", "image": None},
        "positive": {"text": "red square", "image": None},
        "negatives": [{"text": f"blue circle {j}", "image": None} for j in range(args.num_hard_negatives)],
        "scores": [0.9] + [0.1 * (j % 5) for j in range(args.num_hard_negatives)],
    }
    loss = trainer.compute_loss(model, UniMEV2Collator(processor)([record]))
    assert torch.isfinite(loss)


@pytest.mark.parametrize("recipe", RERANKER_RECIPES, ids=lambda p: p.stem)
def test_reranker_recipe_builds_its_trainer_on_a_tiny_backbone(recipe, tiny_backbone_dirs, tmp_path):
    """Reranker recipes parse through train_reranker.py's parser and build UniMEV2RerankerTrainer on a tiny
    Qwen2.5-VL; every declared optimisation key is kept."""
    from unime_v2.trainers.reranker_trainer import UniMEV2RerankerTrainer
    from unime_v2.trainers.reranker_training_args import (
        UniMEV2RerankerDataArguments,
        UniMEV2RerankerTrainingArguments,
        build_reranker,
    )

    declared = yaml.safe_load(recipe.read_text())
    argv = ["--config", str(recipe), "--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false"]
    argv += ["--deepspeed", "", "--gradient_checkpointing", "false"]
    parser = RecipeParser((UniMEV2RerankerDataArguments, UniMEV2RerankerTrainingArguments))
    data_args, args = parser.parse(argv)
    for key in ("learning_rate", "lora_r", "lora_alpha", "num_list_negatives", "pair_weight", "list_weight"):
        if key in declared:
            assert getattr(args, key) == declared[key], key
    model, processor = build_reranker(data_args, args, str(tiny_backbone_dirs["qwen2_5_vl"]))
    trainer = UniMEV2RerankerTrainer(model=model, args=args, processing_class=processor)
    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all(".visual." not in n for n in trainable) == bool(args.freeze_vision_tower)
