"""UniMEV2Trainer: exact gradient accumulation, LoRA targets, merged save loadable by AutoModel, evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoProcessor, TrainerCallback

from unime_v2.data_builders.formats.training_records import TrainingRecords, oracle_mined_dataset
from unime_v2.trainers import (
    UniMEV2Collator,
    UniMEV2ModelArguments,
    UniMEV2Trainer,
    UniMEV2TrainingArguments,
    base_embedder,
    build_embedder,
    is_hit,
    precision_at_1,
)


@pytest.fixture(scope="module")
def mini_rows():
    """Two MMEB-eval rows per mini-MMEB task (26 rows), the raw material of small oracle training sets."""
    from unime_v2.data_builders.mini_mmeb import MiniMMEBConfig, build_mini_mmeb

    config = MiniMMEBConfig(
        seed=2,
        train_pairs=0,
        eval_queries=2,
        num_candidates=12,
        caption_images=0,
        long_caption_images=0,
        compositional_per_subset=0,
    )
    return build_mini_mmeb(config)["mmeb"]["test"]


@pytest.fixture(scope="module")
def records(mini_rows) -> TrainingRecords:
    return TrainingRecords(oracle_mined_dataset(mini_rows.select(range(8))), num_hard_negatives=8)


def training_args(tmp_path: Path, **overrides) -> UniMEV2TrainingArguments:
    settings = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
        learning_rate=1e-3,
        max_grad_norm=0.0,
        seed=0,
    )
    settings.update(overrides)
    return UniMEV2TrainingArguments(**settings)


def model_args(backbone: Path, **overrides) -> UniMEV2ModelArguments:
    return UniMEV2ModelArguments(backbone=str(backbone), **{"lora_dropout": 0.0, **overrides})


def make_trainer(
    backbone: Path, args: UniMEV2TrainingArguments, train_records, use_dora: bool = True, **kwargs
) -> UniMEV2Trainer:
    torch.manual_seed(0)  # identical LoRA initialisation in every run
    model = build_embedder(str(backbone), model_args(backbone, use_dora=use_dora), args)
    with torch.no_grad():  # LoRA B starts at zero, which zeroes A's gradient: give B seeded values
        generator = torch.Generator().manual_seed(1)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    processor = base_embedder(model).processor
    return UniMEV2Trainer(
        model=model,
        args=args,
        train_dataset=train_records,
        data_collator=UniMEV2Collator(processor),
        processing_class=processor,
        **kwargs,
    )


class GradientCapture(TrainerCallback):
    """Copies every trainable gradient just before the first optimizer step."""

    def __init__(self) -> None:
        self.gradients: dict[str, torch.Tensor] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self.gradients:
            self.gradients = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("loss_type", ["symmetric_kl", "js", "hard_labels"])
def test_accumulated_micro_batches_give_the_large_batch_gradient(
    loss_type: str, tiny_qwen2_vl_dir: Path, records: TrainingRecords, tmp_path: Path
) -> None:
    """One step on 8 queries == 2 accumulated micro-batches of 4 (fp32, ≤ 1e-5): no GradCache needed."""
    captured = {}
    for batch, accumulation in ((8, 1), (4, 2)):
        capture = GradientCapture()
        args = training_args(
            tmp_path / f"{batch}",
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            loss_type=loss_type,
        )
        make_trainer(tiny_qwen2_vl_dir, args, records, callbacks=[capture]).train()
        captured[batch] = capture.gradients
    assert captured[8].keys() == captured[4].keys()
    lora_a = [n for n in captured[8] if "lora_A" in n]
    assert lora_a and all(captured[8][n].abs().max() > 0 for n in lora_a)
    for name, gradient in captured[8].items():
        assert (gradient - captured[4][name]).abs().max().item() <= 1e-5 * max(1.0, gradient.abs().max().item()), name


@pytest.mark.parametrize(("kind", "reentrant"), [("qwen2_vl", False), ("qwen2_vl", True), ("llava_onevision", False)])
def test_gradient_checkpointing_gives_the_same_gradients_without_the_frozen_vision_tower(
    kind: str, reentrant: bool, tiny_backbone_dirs: dict[str, Path], records: TrainingRecords, tmp_path: Path
) -> None:
    """Through ``Trainer.train()``, gradient checkpointing (reentrant or not) gives the LoRA gradients of the plain
    step, and the frozen vision tower's output needs no gradient (transformers' default hooks its patch embedding,
    which recomputes and back-propagates the whole tower every step)."""
    captured = {}
    for checkpointing in (False, True):
        capture = GradientCapture()
        args = training_args(
            tmp_path / f"{checkpointing}",
            per_device_train_batch_size=4,
            max_steps=1,
            gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": reentrant},
        )
        trainer = make_trainer(tiny_backbone_dirs[kind], args, records, callbacks=[capture])
        backbone = base_embedder(trainer.model).backbone
        tower = getattr(backbone, "visual", None) or backbone.vision_tower
        needs_grad: list[bool] = []
        tower.register_forward_hook(lambda module, args, output, seen=needs_grad: seen.append(output[0].requires_grad))
        trainer.train()
        assert needs_grad == [False] and trainer.model.is_gradient_checkpointing == checkpointing
        captured[checkpointing] = capture.gradients
    assert any("lora_A" in n for n in captured[True]) and captured[True].keys() == captured[False].keys()
    for name, gradient in captured[False].items():
        assert gradient.abs().max() > 0, name
        assert (gradient - captured[True][name]).abs().max() <= 1e-5 * max(1.0, gradient.abs().max().item()), name


def test_lora_adapts_only_the_language_model(tiny_backbone_dirs: dict[str, Path], tmp_path: Path) -> None:
    """Every q,k,v,o,gate,up,down projection of the LM decoder gets LoRA; the vision tower none (Qwen2.5-VL's
    vision MLP and LLaVA-OV's SigLIP attention share those names)."""
    for kind in ("qwen2_5_vl", "llava_onevision"):
        backbone = tiny_backbone_dirs[kind]
        model = build_embedder(str(backbone), model_args(backbone), training_args(tmp_path))
        adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in model.named_parameters() if ".lora_A." in name}
        assert len(adapted) == 2 * 7  # 2 decoder layers x 7 projections
        assert all(".language_model.layers." in name for name in adapted)
        trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        assert all("lora_" in name for name in trainable)


@pytest.mark.parametrize("kind", ["qwen2_5_vl", "llava_onevision"])
def test_other_backbones_train_a_step(kind: str, tiny_backbone_dirs: dict[str, Path], records, tmp_path: Path) -> None:
    """Qwen2.5-VL and LLaVA-OneVision image inputs (grid / image_sizes, batch_num_images) go through training."""
    args = training_args(tmp_path, per_device_train_batch_size=4, max_steps=2)
    trainer = make_trainer(tiny_backbone_dirs[kind], args, records, use_dora=True)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if p.requires_grad)


def test_merged_final_save_embeds_like_the_trained_adapter_model(
    tiny_qwen2_vl_dir: Path, records: TrainingRecords, tmp_path: Path
) -> None:
    """Final save with merge_lora_on_save: AutoModel (remote code, no peft) gives the trained model's embeddings;
    the adapter sits in adapter/ so that AutoModel does not mistake the folder for an adapter checkpoint."""
    args = training_args(tmp_path / "run", per_device_train_batch_size=4, max_steps=2, learning_rate=5e-3)
    trainer = make_trainer(tiny_qwen2_vl_dir, args, records)
    trainer.train()
    trainer.save_model()
    out = Path(args.output_dir)
    assert (out / "adapter" / "adapter_config.json").exists() and not (out / "adapter_config.json").exists()
    assert (out / "modeling_unime_v2.py").exists() and (out / "processor_config.json").exists()
    items = [records[0]["query"], records[0]["positive"], records[1]["negatives"][0], records[3]["query"]]
    expected = base_embedder(trainer.model).encode(items)
    merged = AutoModel.from_pretrained(str(out), trust_remote_code=True)
    assert type(merged).__name__ == "UniMEV2Model" and not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged.encode(items), expected, atol=1e-5, rtol=1e-4)


def test_tie_with_the_ground_truth_is_not_a_hit() -> None:
    assert is_hit(torch.tensor([0.9, 0.1, 0.3]))
    assert not is_hit(torch.tensor([0.5, 0.5, 0.1]))
    assert not is_hit(torch.tensor([0.2, 0.7, 0.1]))


class ConstantEmbedder:
    """A collapsed model: every item gets the same embedding."""

    def encode(self, items, batch_size=32, show_progress_bar=False):
        return torch.ones(len(items), 4)


def test_collapsed_model_scores_zero_precision(mini_rows) -> None:
    metrics = precision_at_1(ConstantEmbedder(), mini_rows.select(range(6)))
    assert metrics["precision_at_1"] == 0.0 and metrics["num_rows"] == 6


@pytest.mark.slow
def test_evaluate_reports_precision_on_mini_mmeb_rows(tiny_qwen2_vl_dir: Path, records, mini_rows, tmp_path) -> None:
    rows = list(mini_rows)
    trainer = make_trainer(
        tiny_qwen2_vl_dir, training_args(tmp_path, per_device_eval_batch_size=64), records, mmeb_eval_rows=rows
    )
    metrics = trainer.evaluate()
    names = set(mini_rows["dataset"])
    assert {f"eval_precision_at_1_{name}" for name in names} <= set(metrics)
    assert metrics["eval_num_rows"] == len(rows)
    per_dataset = [metrics[f"eval_precision_at_1_{name}"] for name in names]
    assert metrics["eval_precision_at_1"] == pytest.approx(sum(per_dataset) / len(per_dataset))
    assert metrics["eval_resolution"] == "high" and metrics["eval_image_size"] == 1344  # the authors' default
    embedder = base_embedder(trainer.model)
    assert embedder.config.image_resize is None  # restored after evaluation
    embedder.config.image_resize = 1344
    direct = precision_at_1(embedder, rows, batch_size=64)
    embedder.config.image_resize = None
    assert direct["precision_at_1"] == metrics["eval_precision_at_1"]


def test_arguments_refuse_unknown_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loss_type='kl'"):
        training_args(tmp_path, loss_type="kl")
    with pytest.raises(ValueError, match="negative_selection='hardest'"):
        training_args(tmp_path, negative_selection="hardest")
    assert training_args(tmp_path).remove_unused_columns is False


def test_final_save_carries_the_instructions_and_an_auto_processor(
    tiny_qwen2_vl_dir: Path, records: TrainingRecords, tmp_path: Path
) -> None:
    """The recipe's instructions land in config.json (encode_query reads them), and the saved processor is the
    UniMEV2Processor that AutoProcessor returns, giving encode's embeddings through forward."""
    instruction = "Find me an everyday image that matches the given caption:"
    args = training_args(tmp_path / "run", query_instruction=instruction, candidate_instruction="Represent it:")
    make_trainer(tiny_qwen2_vl_dir, args, records).save_model()
    merged = AutoModel.from_pretrained(args.output_dir, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(args.output_dir, trust_remote_code=True)
    assert type(processor).__name__ == "UniMEV2Processor"
    assert (merged.config.query_instruction, merged.config.candidate_instruction) == (instruction, "Represent it:")
    by_hand = [{"text": f"{instruction} a red cross\n", "image": None}]
    torch.testing.assert_close(merged.encode_query(["a red cross"]), merged.encode(by_hand))
    items = [records[0]["query"], records[0]["positive"], records[1]["negatives"][0]]
    with torch.no_grad():
        forward = merged(**processor(items)).embeddings
    torch.testing.assert_close(forward, merged.encode(items), atol=1e-5, rtol=0)
