"""The tiny learned judge of the CPU demo: the reranker trainer with listwise weight 0, on mini-MMEB pairs.

A *random* tiny judge gives noise and the mini-MMEB oracle must never be a training signal, so the demo fine-tunes
a tiny Qwen2.5-VL with the pairwise loss (:mod:`unime_v2.trainers.reranker_trainer`) on mini-MMEB TRAIN pairs —
(query, its positive) → "Yes", (query, another in-pool positive of the same dataset) → "No" — and saves an
ordinary checkpoint folder that ``JudgeScorer.from_pretrained(DIR)`` loads. Judge quality is measured before and
after on held-out data against the oracle (the measuring stick): held-out train queries with in-pool candidates,
and mini-MMEB test rows (ground truth + hard distractors). Recipe and figures: docs/judge_training.md.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from unime_v2.data_builders.tiny_backbones import scratch_init_
from unime_v2.data_builders.tiny_pretrain import tiny_training_arguments
from unime_v2.modeling_unime_v2.scoring_unime_v2 import JudgeScorer

from .reranker_trainer import RerankerCollator, UniMEV2RerankerTrainer


IND_TASKS = (
    "MiniImageNet-cls",
    "MiniVOC-cls",
    "MiniAttr-vqa",
    "MiniRel-vqa",
    "MiniCOCO-t2i",
    "MiniCOCO-i2t",
    "MiniCIRR-cir",
    "MiniRefCOCO-grd",
    "MiniPointing-grd",
)


@dataclass
class TinyJudgeArguments:
    """Settings of :func:`train_tiny_judge` (``examples/train_tiny_judge.py``)."""

    output_dir: str = field(metadata={"help": "The trained judge checkpoint folder (model + processor)."})
    seed: int = field(default=0, metadata={"help": "Seeds the tiny backbone, the pairs and the Trainer."})
    max_steps: int = field(default=900, metadata={"help": "Training steps."})
    mini_mmeb_seed: int = field(default=0, metadata={"help": "Seed of the generated mini-MMEB."})
    train_pairs: int = field(default=1800, metadata={"help": "mini-MMEB train records (split over --tasks)."})
    tasks: str = field(
        default="MiniImageNet-cls",
        metadata={"help": "Comma-separated mini-MMEB IND tasks to train and measure on ('all' = the 9 IND tasks)."},
    )
    heldout_fraction: float = field(default=0.15, metadata={"help": "Train records held out for evaluation."})
    num_negatives: int = field(default=1, metadata={"help": "'No' pairs per 'Yes' pair."})
    batch_size: int = field(default=16, metadata={"help": "Pairs per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    warmup_steps: int = field(default=20, metadata={"help": "Warm-up steps."})
    lr_scheduler_type: str = field(
        default="constant_with_warmup",
        metadata={"help": "constant: the plateau is left late in training, a decayed rate slows that down."},
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    eval_candidates: int = field(default=3, metadata={"help": "Candidates per held-out query besides its positive."})
    eval_rows: int = field(default=10, metadata={"help": "mini-MMEB test rows per task (0: skip that table)."})
    backbone: str | None = field(
        default=None, metadata={"help": "Start from this judge folder instead of a new tiny Qwen2.5-VL."}
    )
    init: str = field(
        default="auto",
        metadata={
            "help": "scratch: re-draw weights at 1/sqrt(fan_in) (the tiny backbone's 0.02 init does not learn); "
            "keep; auto: scratch for a new tiny backbone, keep for --backbone.",
            "choices": ("auto", "scratch", "keep"),
        },
    )
    image_side: int = field(
        default=112, metadata={"help": "Resize images to this square side (saved in the processor; 0: keep)."}
    )
    centre_images: int = field(
        default=-1,
        metadata={
            "help": "1: shift/scale the vision merger's output to zero mean, unit std on training images; "
            "-1: 1 for a new tiny backbone, 0 for --backbone.",
            "choices": (-1, 0, 1),
        },
    )
    candidate_lm_weight: float = field(
        default=1.0, metadata={"help": "Weight of the auxiliary LM loss on the positive's text (0: the paper's loss)."}
    )
    threads: int = field(default=1, metadata={"help": "torch CPU threads (1 is fastest for tiny models)."})
    logging_steps: int = field(default=25, metadata={"help": "Log every N steps."})
    dataloader_num_workers: int = field(
        default=0,
        metadata={
            "help": "Worker processes building batches (1 measured slower on 2 cores: 52 s vs 33 s / 200 steps)."
        },
    )


def set_image_side(processor: Any, side: int) -> None:
    """Make the Qwen-VL image processor resize every image to ``side`` x ``side`` (a multiple of 28)."""
    if side % 28:
        raise ValueError(f"image_side must be a multiple of 28 (one merged Qwen-VL patch), got {side}")
    processor.image_processor.size = {"shortest_edge": side * side, "longest_edge": side * side}


def centre_image_features_(model: torch.nn.Module, processor: Any, images: Iterable[Any]) -> None:
    """Data-dependent init of the vision merger's last linear layer: its outputs get zero mean and unit std over
    the image tokens of ``images`` (training images; no labels used). Random image features are otherwise
    dominated by a shared component (background, position), so different images look alike to the LM."""
    merger = getattr(getattr(model.model, "visual", None), "merger", None)
    linear = [m for m in merger.modules() if isinstance(m, torch.nn.Linear)][-1] if merger is not None else None
    if linear is None or linear.bias is None:
        raise ValueError("centre_image_features_ supports Qwen-VL judges (model.model.visual.merger)")
    with torch.no_grad():
        batch = processor.image_processor(images=list(images), return_tensors="pt")
        out = model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
        features = getattr(out, "pooler_output", out)
        features = torch.cat(list(features)) if isinstance(features, (list, tuple)) else features
        features = features.reshape(-1, features.shape[-1])
        mean, std = features.mean(0), (features - features.mean(0)).std()
        linear.bias.sub_(mean).div_(std)
        linear.weight.div_(std)


def build_data(args: TinyJudgeArguments) -> tuple[Any, list[int], list[int], Any, Any]:
    """``(train records, training query ids, held-out query ids, judge pairs, test rows)`` of mini-MMEB.

    Training negatives come from the training records only: held-out positives are never seen in training.
    """
    from unime_v2.data_builders.formats.judge_pairs import build_judge_pairs, split_queries
    from unime_v2.data_builders.mini_mmeb import MiniMMEBConfig, build_mini_mmeb

    tasks = list(IND_TASKS) if args.tasks == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    config = MiniMMEBConfig(
        seed=args.mini_mmeb_seed,
        tasks=tasks,
        train_pairs=args.train_pairs,
        eval_queries=max(args.eval_rows, 1),
        num_candidates=max(args.eval_candidates + 1, 2),
        caption_images=0,
        long_caption_images=0,
        compositional_per_subset=0,
    )
    built = build_mini_mmeb(config)["mmeb"]
    records = built["train"]
    train_ids, heldout_ids = split_queries(records, args.heldout_fraction, seed=args.seed)
    pairs = build_judge_pairs(records, args.num_negatives, seed=args.seed, query_indices=train_ids)
    return records, train_ids, heldout_ids, pairs, built["test"]


def measure(scorer: Any, args: TinyJudgeArguments, records: Any, heldout_ids: list[int], test_rows: Any) -> dict:
    """Judge quality on held-out train queries (in-pool candidates) and, if ``eval_rows``, on test rows."""
    from unime_v2.trainers.evaluation.judge_quality import judge_quality, judge_quality_eval_rows

    out = {
        "heldout_in_pool": judge_quality(
            scorer, records, query_indices=heldout_ids, num_candidates=args.eval_candidates, seed=args.seed + 1
        )
    }
    if args.eval_rows > 0:
        out["test_rows"] = judge_quality_eval_rows(scorer, test_rows, num_candidates=args.eval_candidates)
    return out


def prepare_tiny_judge(args: TinyJudgeArguments, scratch: Path, records: Any, train_ids: list[int]) -> tuple:
    """The model and processor to train: a new tiny Qwen2.5-VL (or ``args.backbone``), initialised per ``args``."""
    from unime_v2.data_builders.tiny_backbones import build_tiny_backbone

    backbone = args.backbone or str(build_tiny_backbone("qwen2_5_vl", scratch / "init", seed=args.seed))
    model = AutoModelForImageTextToText.from_pretrained(backbone, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(backbone)
    new = args.backbone is None
    if args.init == "scratch" or (args.init == "auto" and new):
        scratch_init_(model, seed=args.seed)
    if args.image_side:
        set_image_side(processor, args.image_side)
    if args.centre_images == 1 or (args.centre_images == -1 and new):
        train_images = [records[i]["qry_image"] or records[i]["pos_image"] for i in train_ids[:256]]
        centre_image_features_(model, processor, [image for image in train_images if image is not None])
    return model, processor


def train_tiny_judge(args: TinyJudgeArguments, log: Any = print) -> dict:
    """Build data and model, train the pairwise judge, save it to ``args.output_dir``, measure before and after.

    Returns (and writes to ``judge_training.json``) the settings, timings, losses and both quality tables.
    """
    from unime_v2.trainers.evaluation.judge_quality import format_quality_table

    start = time.time()
    output_dir = Path(args.output_dir)
    records, train_ids, heldout_ids, pairs, test_rows = build_data(args)
    log(
        f"mini-MMEB: {len(records)} train records -> {len(train_ids)} training queries, {len(heldout_ids)} held out; "
        f"{len(pairs)} pairs ({pairs.num_positive} Yes / {pairs.num_negative} No)  [{time.time() - start:.1f} s]"
    )
    with tempfile.TemporaryDirectory() as scratch:
        model, processor = prepare_tiny_judge(args, Path(scratch), records, train_ids)
    before = measure(JudgeScorer(model, processor), args, records, heldout_ids, test_rows)
    log(f"untrained judge measured  [{time.time() - start:.1f} s]")

    with tempfile.TemporaryDirectory() as trainer_dir:  # Trainer's scratch folder (nothing is checkpointed)
        training_args = tiny_training_arguments(trainer_dir, args, dataloader_num_workers=args.dataloader_num_workers)
        model.train()
        trainer = UniMEV2RerankerTrainer(
            model=model,
            args=training_args,
            train_dataset=pairs,
            data_collator=RerankerCollator.for_model(model, processor, candidate_lm=args.candidate_lm_weight > 0),
            processing_class=processor,
            list_weight=0.0,
            candidate_lm_weight=args.candidate_lm_weight,
        )
        train_start = time.time()
        result = trainer.train()
        train_seconds = time.time() - train_start
        trainer.save_model(str(output_dir))
    processor.save_pretrained(str(output_dir))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    log(
        f"trained {args.max_steps} steps in {train_seconds:.1f} s; loss {losses[0]:.3f} -> {losses[-1]:.3f}"
        if losses
        else f"trained in {train_seconds:.1f} s"
    )
    judge = JudgeScorer.from_pretrained(str(output_dir), device="cpu")  # what the mining pipeline will load
    after = measure(judge, args, records, heldout_ids, test_rows)
    for key, title in (
        ("heldout_in_pool", "held-out train queries, positive + in-pool candidates"),
        ("test_rows", "mini-MMEB test rows, ground truth + first candidates (hard distractors)"),
    ):
        if key in before:
            log(f"\n### {title}\n" + format_quality_table({"untrained": before[key], "trained": after[key]}))
    figures = {
        "args": asdict(args),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - start, 1),
        "train_loss": result.training_loss,
        "before": {k: v.to_dict() for k, v in before.items()},
        "after": {k: v.to_dict() for k, v in after.items()},
    }
    (output_dir / "judge_training.json").write_text(json.dumps(figures, indent=2))
    log(
        f"saved judge to {output_dir}  (JudgeScorer.from_pretrained({str(output_dir)!r}))  [{figures['total_seconds']} s]"
    )
    return figures
