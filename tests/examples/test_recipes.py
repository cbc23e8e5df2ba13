"""Every recipe in examples/configs/ parses through the parser of the script it configures, and every training
recipe builds its trainer on a tiny backbone of the same family (seconds per recipe); every script takes its recipe
the same way (``--config``) and names a recipe key that no field has.

Overrides, the same for every training recipe: ``--backbone`` (the tiny folder), ``--output_dir`` (a temporary
folder), ``--use_cpu true --bf16 false`` (no GPU here) and ``--deepspeed ""`` (an empty value turns DeepSpeed off,
which needs a GPU and is not installed on CPU machines; every other key of the recipe is kept and checked).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
import yaml

from unime_v2.trainers import UniMEV2Collator, UniMEV2Trainer, base_embedder, build_embedder
from unime_v2.trainers.reranker import UniMEV2RerankerTrainer, build_reranker


REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "examples" / "configs"
GROUPS = ("accelerate", "embedder", "mining", "quickstart", "reranker")
QUICKSTART_SCRIPTS = {"seed": "train", "unime_v2": "train", "mine": "mine", "judge": "train_reranker"}
QUICKSTART_SCRIPTS["reranker"] = "train_reranker"
EMBEDDER_RECIPES = sorted(CONFIGS.glob("embedder/*.yaml"))
RERANKER_RECIPES = sorted(CONFIGS.glob("reranker/*.yaml"))
SCRIPTS = sorted(p for p in (REPO / "examples").glob("*.py") if "RecipeParser" in p.read_text())


def script(name: str) -> ModuleType:
    """``examples/<name>.py`` as a module named ``examples_<name>`` (``evaluate`` would shadow the installed package
    of that name); a script imports its siblings as when it runs, with its folder first on ``sys.path``."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", REPO / "examples" / f"{name}.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    sys.path.insert(0, str(REPO / "examples"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "examples"))
    return module


def script_of(recipe: Path) -> str | None:
    """The script a recipe configures (``None``: an accelerate launcher configuration)."""
    group = recipe.parent.name
    if group == "quickstart":
        return QUICKSTART_SCRIPTS[recipe.stem]
    return {"embedder": "train", "reranker": "train_reranker", "mining": "mine"}.get(group)


def tiny_kind(backbone: str) -> str:
    name = backbone.lower()
    if "llava" in name:
        return "llava_onevision"
    if "qwen2.5" in name or "qwen2_5" in name:
        return "qwen2_5_vl"
    return "qwen2_vl"


def test_recipes_are_grouped_by_what_they_configure():
    assert sorted(p.name for p in CONFIGS.iterdir()) == sorted(GROUPS)
    for recipe in CONFIGS.rglob("*.*"):
        assert recipe.parent.parent == CONFIGS, recipe
        if recipe.parent.name != "accelerate":
            assert recipe.suffix == ".yaml" and script_of(recipe), recipe


@pytest.mark.parametrize("recipe", sorted(CONFIGS.glob("[!a]*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_parses_through_its_script(recipe, tmp_path):
    """Every key of every recipe is a field of the script's argument classes (an unknown key is an error)."""
    module = script(script_of(recipe))
    argv = ["--config", str(recipe), "--output_dir", str(tmp_path), "--deepspeed", "", "--bf16", "false"]
    if module.__name__ == "examples_mine":
        argv = argv[:4]
        (config,) = module.RecipeParser(module.MiningConfig).parse(argv)
        assert config.output_dir == str(tmp_path)
        return
    parsed = module.parse(argv)
    declared = yaml.safe_load(recipe.read_text())
    assert {key for group in parsed for key in declared if hasattr(group, key)} == declared.keys()


def test_backbone_settings_are_one_class_for_both_trainers():
    """The embedder and the reranker scripts parse the same model-arguments class; the reranker starts from its
    paper values (LoRA r 128 / alpha 256 / dropout 0.05, no DoRA, bf16)."""
    embedder, _, _ = script("train").parse(["--backbone", "b", "--train_data", "d", "--output_dir", "o"])
    reranker, _, _ = script("train_reranker").parse(["--backbone", "b", "--output_dir", "o"])
    assert type(embedder) is type(reranker)
    assert (embedder.lora_r, embedder.lora_alpha, embedder.use_dora) == (16, 64, True)
    assert (reranker.lora_r, reranker.lora_alpha, reranker.lora_dropout, reranker.use_dora) == (128, 256, 0.05, False)
    assert reranker.backbone_dtype == "bfloat16"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_every_script_takes_its_recipe_with_config(path):
    """A recipe given as a positional argument is refused by every script alike, with the way that works."""
    with pytest.raises(ValueError, match=r"give the recipe as --config some\.yaml"):
        script(path.stem).main(["some.yaml", "--output_dir", "unused"])


@pytest.mark.parametrize("name", ["train", "train_reranker"])
def test_a_misspelt_recipe_key_is_named_with_the_file(name, tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("backbone: tiny:qwen2_vl\ntrain_data: oracle:mini_mmeb\nlora_rr: 4\n")
    with pytest.raises(ValueError, match=r"typo\.yaml.*lora_rr"):
        script(name).parse(["--config", str(recipe), "--output_dir", str(tmp_path)])


def test_both_families_exist_for_every_backbone():
    names = {p.stem for p in EMBEDDER_RECIPES}
    for backbone in ("qwen2vl_2b", "qwen2vl_7b", "llava_ov_7b"):
        assert {f"{backbone}_paper", f"{backbone}_authors"} <= names


@pytest.mark.parametrize("recipe", EMBEDDER_RECIPES, ids=lambda p: p.stem)
def test_recipe_builds_its_trainer_on_a_tiny_backbone(recipe, tiny_backbone_dirs, tmp_path):
    declared = yaml.safe_load(recipe.read_text())
    kind = tiny_kind(str(declared["backbone"])) if not str(declared["backbone"]).startswith("tiny:") else None
    kind = kind or str(declared["backbone"]).split(":")[1]
    argv = ["--config", str(recipe), "--backbone", str(tiny_backbone_dirs[kind]), "--output_dir", str(tmp_path)]
    argv += ["--use_cpu", "true", "--bf16", "false", "--deepspeed", ""]
    model_args, data_args, args = script("train").parse(argv)
    assert not args.deepspeed
    for key in ("loss_type", "learning_rate", "max_steps", "per_device_train_batch_size", "lora_r"):
        if key in declared:
            assert getattr(model_args if key == "lora_r" else args, key) == declared[key], key
    model_args.use_dora = False  # peft DoRA is slow on CPU; the recipe's value was checked above
    model = build_embedder(model_args.backbone, model_args, args)
    processor = base_embedder(model).processor
    trainer = UniMEV2Trainer(model=model, args=args, data_collator=UniMEV2Collator(processor))
    if model_args.use_lora:
        adapted = {name for name, _ in model.named_modules() if name.endswith("lora_A")}
        in_vision = any("vision_tower" in name or ".visual." in name for name in adapted)
        assert adapted and in_vision == (recipe.stem == "llava_ov_7b_authors")  # their names also hit SigLIP
    else:
        trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        assert any(".visual." in name for name in trainable) == (not model_args.freeze_vision_tower)
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
    Qwen2.5-VL; every declared optimisation key is kept, and the trainer reads its loss settings from them."""
    declared = yaml.safe_load(recipe.read_text())
    argv = ["--config", str(recipe), "--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false"]
    argv += ["--deepspeed", "", "--gradient_checkpointing", "false", "--centre_images", "false"]
    model_args, _, args = script("train_reranker").parse(argv)
    for key in ("learning_rate", "num_list_negatives", "pair_weight", "list_weight", "candidate_lm_weight"):
        if key in declared:
            assert getattr(args, key) == declared[key], key
    for key in ("lora_r", "lora_alpha", "use_lora", "freeze_vision_tower"):
        if key in declared:
            assert getattr(model_args, key) == declared[key], key
    model, processor = build_reranker(model_args, args, str(tiny_backbone_dirs["qwen2_5_vl"]))
    trainer = UniMEV2RerankerTrainer(model=model, args=args, processing_class=processor)
    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all(".visual." not in n for n in trainable) == bool(model_args.freeze_vision_tower)
    assert trainer.data_collator.listwise == (args.list_weight > 0)
