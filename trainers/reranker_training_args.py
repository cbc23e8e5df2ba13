"""Settings of reranker training (``examples/train_reranker.py``) and the two builders they drive: the model
(:func:`build_reranker`: wrap, optional tiny init, freeze the vision tower, LoRA on the LLM) and the training
records (:func:`reranker_records`: a mined dataset, or mini-MMEB with ORACLE scores for the tiny demo)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments

from unime_v2.modeling_unime_v2 import UniMEV2Reranker

from .training_args import DEFAULT_LORA_MODULES


logger = logging.getLogger(__name__)
ORACLE_MINI_MMEB = "oracle:mini_mmeb"
LLM_LAYERS = r"backbone\.model\.language_model\.layers\.\d+"


@dataclass
class UniMEV2RerankerTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the reranker objective and LoRA (paper: r 128, α 256, dropout 0.05)."""

    pair_weight: float = field(default=1.0, metadata={"help": "Weight of L_pair (paper: 1)."})
    list_weight: float = field(default=1.0, metadata={"help": "Weight of L_list (paper: 1; 0: pairwise only)."})
    num_list_negatives: int = field(default=5, metadata={"help": "x: top negatives by judge score per listwise row."})
    num_pair_negatives: int = field(
        default=1, metadata={"help": "'No' pairs per record: the hardest negatives by judge score (paper: 1)."}
    )
    candidate_lm_weight: float = field(
        default=0.0, metadata={"help": "Auxiliary LM loss on the positive's text (not the paper's; tiny models)."}
    )
    use_lora: bool = field(default=True, metadata={"help": "Train LoRA adapters on the language model."})
    lora_r: int = field(default=128, metadata={"help": "LoRA rank (paper: 128)."})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha (paper: 256)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (paper: 0.05)."})
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Keep the vision tower frozen (paper)."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep every column: the collator reads whole records."}
    )


@dataclass
class UniMEV2RerankerDataArguments:
    """What to train: the backbone, the prompt layout and the mined data."""

    backbone: str = field(
        default="Qwen/Qwen2.5-VL-7B-Instruct",
        metadata={"help": "A VLM folder / Hub id, or tiny:<kind>[:<seed>] (a tiny random backbone, cached)."},
    )
    train_data: str = field(
        default=ORACLE_MINI_MMEB,
        metadata={"help": "A mined dataset (save_to_disk folder, Hub id or authors' .json) or oracle:mini_mmeb."},
    )
    train_image_root: str | None = field(default=None, metadata={"help": "Image root of an authors' .json."})
    train_split: str = field(default="train", metadata={"help": "Split of a Hub / on-disk dataset dict."})
    max_train_records: int | None = field(default=None, metadata={"help": "Use only the first N records."})
    stored_negatives: int = field(
        default=10, metadata={"help": "Negatives read per record (ranked by judge score in the collator)."}
    )
    pair_format: str = field(
        default="reranker", metadata={"help": "Pairwise layout: reranker (released) or judge (mining judge)."}
    )
    released_typo: bool = field(
        default=False, metadata={"help": "Use the released training data's pairwise prompt ('responed')."}
    )
    backbone_dtype: str = field(default="bfloat16", metadata={"help": "dtype of the backbone weights."})
    tiny_init: bool = field(
        default=False, metadata={"help": "Re-draw weights at 1/sqrt(fan_in) (tiny backbones trained from scratch)."}
    )
    image_side: int = field(default=0, metadata={"help": "Resize images to this square side (Qwen-VL; 0: keep)."})
    mini_mmeb_seed: int = field(default=0, metadata={"help": "Seed of the generated mini-MMEB (oracle data)."})
    mini_mmeb_per_task: int = field(default=64, metadata={"help": "oracle:mini_mmeb training rows per task."})
    mini_mmeb_tasks: str = field(
        default="MiniImageNet-cls,MiniCOCO-i2t,MiniCOCO-t2i", metadata={"help": "Comma-separated mini-MMEB tasks."}
    )


def llm_lora_regex() -> str:
    """peft ``target_modules`` regex: the projections of the language model's decoder layers only."""
    return rf"{LLM_LAYERS}\.(?:.*\.)?(?:{'|'.join(DEFAULT_LORA_MODULES)})"


def build_reranker(
    data_args: UniMEV2RerankerDataArguments, args: UniMEV2RerankerTrainingArguments, path: str
) -> tuple[torch.nn.Module, Any]:
    """The model to train (LoRA-wrapped if ``use_lora``) and its processor, from the backbone folder ``path``."""
    from .tiny_judge import scratch_init_, set_image_side

    reranker = UniMEV2Reranker.from_backbone(
        path,
        pair_format=data_args.pair_format,
        released_typo=data_args.released_typo,
        dtype=getattr(torch, data_args.backbone_dtype),
    )
    if data_args.tiny_init:
        scratch_init_(reranker.backbone, seed=args.seed)
    if data_args.image_side:
        set_image_side(reranker.processor, data_args.image_side)
    if args.freeze_vision_tower:
        for name, parameter in reranker.named_parameters():
            if ".visual." in name or ".vision_tower." in name:
                parameter.requires_grad_(False)
    model: torch.nn.Module = reranker.train()
    if args.use_lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=llm_lora_regex()
        )
        model = get_peft_model(reranker, lora)
        if args.gradient_checkpointing:
            reranker.enable_input_require_grads()
    return model, reranker.processor


def reranker_records(data_args: UniMEV2RerankerDataArguments, seed: int = 0) -> Any:
    """Training records (``query``, ``positive``, ``negatives``, ``scores``) of ``data_args.train_data``."""
    from unime_v2.data_builders.formats.training_records import (
        TrainingRecords,
        load_mined_dataset,
        oracle_mined_dataset,
    )

    if data_args.train_data == ORACLE_MINI_MMEB:
        logger.warning("train_data=oracle:mini_mmeb: ORACLE scores stand in for judge scores (demo data only)")
        mined, name = oracle_mined_dataset(mini_mmeb_rows(data_args, data_args.mini_mmeb_seed)), "mini-MMEB (ORACLE)"
    else:
        mined = load_mined_dataset(data_args.train_data, data_args.train_split, data_args.train_image_root)
        name = Path(data_args.train_data).name
    if data_args.max_train_records is not None:
        mined = mined.select(range(min(data_args.max_train_records, len(mined))))
    stored = min(data_args.stored_negatives, min(len(n) for n in mined["neg_texts"]))
    return TrainingRecords(mined, num_hard_negatives=stored, negative_selection="first", seed=seed, name=name)


def mini_mmeb_rows(data_args: UniMEV2RerankerDataArguments, seed: int) -> Any:
    """Mini-MMEB TRAINING rows (ground truth + hard distractors) of the configured IND tasks, built with ``seed``.

    They come from :func:`~unime_v2.data_builders.mini_mmeb.splits.mini_mmeb_splits`, so no query shares its facts with the
    held-out rows that ``examples/evaluate.py --data mini_mmeb`` scores with the same seed.
    """
    from unime_v2.data_builders.mini_mmeb.splits import mini_mmeb_splits

    tasks = [t.strip() for t in data_args.mini_mmeb_tasks.split(",") if t.strip()]
    train, _ = mini_mmeb_splits(seed, data_args.mini_mmeb_per_task, 1, 2, {"tasks": tasks})
    return train
