"""What a reranker training run is built from: its training data (:func:`reranker_records`: a mined dataset or
mini-MMEB records with ORACLE scores; :func:`judge_pair_data`: mini-MMEB judge pairs) and its model (:func:`build_reranker`: wrap the
backbone, the tiny-model initialisations, the frozen vision tower, LoRA on the language model)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from unime_v2.data_builders.checkpoints import saved_model_type
from unime_v2.data_builders.formats.judge_pairs import (
    MiniMMEBJudgePairs,
    mini_mmeb_judge_pairs,
)
from unime_v2.data_builders.recipes import LABELS_MINI_MMEB, ORACLE_MINI_MMEB
from unime_v2.data_builders.tiny_backbones import scratch_init_
from unime_v2.modeling_unime_v2 import UniMEV2Reranker

from ..arguments import RERANKER_LM_LAYERS, UniMEV2ModelArguments, freeze_vision_tower_
from .training_args import UniMEV2RerankerDataArguments, UniMEV2RerankerTrainingArguments


logger = logging.getLogger(__name__)
CENTRE_IMAGES = 256
"""Training images that :func:`centre_image_features_` measures."""


# ------------------------------------------------------------------------------------------ data
def judge_pair_data(
    data_args: UniMEV2RerankerDataArguments, args: UniMEV2RerankerTrainingArguments
) -> MiniMMEBJudgePairs:
    """Yes/No pairs of mini-MMEB train facts (``judge_pairs:mini_mmeb``, ``args.num_pair_negatives`` "No" pairs
    per query) and their held-out queries and test rows; ``args.seed`` splits the queries and draws the pairs."""
    return mini_mmeb_judge_pairs(
        data_args.mini_mmeb_seed,
        data_args.mini_mmeb_train_per_task,
        num_negatives=args.num_pair_negatives,
        heldout_fraction=data_args.heldout_fraction,
        split_seed=args.seed,
        test_per_task=data_args.mini_mmeb_test_per_task,
        num_candidates=data_args.mini_mmeb_num_candidates,
        extra=data_args.mini_mmeb_config,
    )


def reranker_records(data_args: UniMEV2RerankerDataArguments, seed: int = 0) -> Any:
    """Training records (``query``, ``positive``, ``negatives``, ``scores``) of ``data_args.train_data``."""
    from unime_v2.data_builders.formats.training_records import (
        HELDOUT_RESERVE,
        LABELS_MINI_MMEB_NAME,
        ORACLE_MINI_MMEB_NAME,
        TrainingRecords,
        labelled_mini_mmeb,
        load_mined_dataset,
        oracle_mini_mmeb,
    )

    if data_args.train_data == LABELS_MINI_MMEB:
        mined = labelled_mini_mmeb(data_args.mini_mmeb_seed, data_args.mini_mmeb_train_per_task,
                                   data_args.mini_mmeb_config)  # fmt: skip
        name = LABELS_MINI_MMEB_NAME
    elif data_args.train_data == ORACLE_MINI_MMEB:
        mined, _ = oracle_mini_mmeb(  # training rows clear of every held-out row an evaluation reads
            data_args.mini_mmeb_seed,
            data_args.mini_mmeb_train_per_task,
            HELDOUT_RESERVE,
            extra=data_args.mini_mmeb_config,
        )
        name = ORACLE_MINI_MMEB_NAME
    else:
        mined = load_mined_dataset(data_args.train_data, data_args.train_split, data_args.train_image_root)
        name = Path(data_args.train_data).name
    if data_args.max_train_records is not None:
        mined = mined.select(range(min(data_args.max_train_records, len(mined))))
    stored = min(data_args.stored_negatives, min(len(n) for n in mined["neg_texts"]))
    return TrainingRecords(
        mined,
        num_hard_negatives=stored,
        negative_selection="first",
        seed=seed,
        name=name,
        drop_fallback_rows=data_args.drop_fallback_rows,
    )


def mini_mmeb_rows(data_args: UniMEV2RerankerDataArguments, seed: int) -> Any:
    """Mini-MMEB TRAINING rows (ground truth + hard distractors) of the configured IND tasks, built with ``seed``.

    They come from :func:`~unime_v2.data_builders.mini_mmeb.splits.mini_mmeb_splits`, so no query shares its facts
    with the held-out rows that ``examples/evaluate.py --data mini_mmeb`` scores with the same seed.
    """
    from unime_v2.data_builders.mini_mmeb.splits import mini_mmeb_splits

    train, _ = mini_mmeb_splits(seed, data_args.mini_mmeb_train_per_task, 1, 2, data_args.mini_mmeb_config)
    return train


def training_images(dataset: Any, limit: int = CENTRE_IMAGES) -> list[Any]:
    """The first ``limit`` images of a training set, one per query: the query's image, else its positive's (the
    "Yes" pairs of a pair set, the records of a record set)."""
    images = []
    for index in range(len(dataset)):
        item = dataset[index]
        if "label" in item and not item["label"]:
            continue
        positive = item.get("positive", item.get("candidate")) or {}
        image = (item.get("query") or {}).get("image") or positive.get("image")
        if image is not None:
            images.append(image)
        if len(images) == limit:
            break
    return images


# ------------------------------------------------------------------------------------------ model
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
        raise ValueError("centre_image_features_ supports Qwen-VL backbones (model.model.visual.merger)")
    with torch.no_grad():
        batch = processor.image_processor(images=list(images), return_tensors="pt")
        out = model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
        features = getattr(out, "pooler_output", out)
        features = torch.cat(list(features)) if isinstance(features, (list, tuple)) else features
        features = features.reshape(-1, features.shape[-1])
        mean, std = features.mean(0), (features - features.mean(0)).std()
        linear.bias.sub_(mean).div_(std)
        linear.weight.div_(std)


def load_reranker(
    model_args: UniMEV2ModelArguments, args: UniMEV2RerankerTrainingArguments, path: str
) -> UniMEV2Reranker:
    """``path`` as a reranker: a saved reranker folder as it is (its prompt layout kept), a plain VLM wrapped in
    the layout of ``args`` (``pair_format``, ``released_typo``)."""
    load = model_args.load_kwargs(args)
    if saved_model_type(path) == "unime_v2_reranker":
        reranker = UniMEV2Reranker.from_pretrained(path, **load)
        if reranker.config.pair_format != args.pair_format:
            logger.warning(f"{path} is a saved reranker: its pair_format {reranker.config.pair_format!r} is kept")
        return reranker
    return UniMEV2Reranker.from_backbone(path, pair_format=args.pair_format, released_typo=args.released_typo, **load)


def build_reranker(
    model_args: UniMEV2ModelArguments,
    args: UniMEV2RerankerTrainingArguments,
    path: str,
    images: Iterable[Any] | None = None,
) -> tuple[torch.nn.Module, Any]:
    """The model to train (LoRA-wrapped if ``use_lora``) and its processor, from the checkpoint folder ``path``.

    ``images`` (training images) are needed with ``args.centre_images`` only (:func:`training_images`).
    """
    reranker = load_reranker(model_args, args, path)
    if args.tiny_init:
        scratch_init_(reranker.backbone, seed=args.seed)
    if args.image_side:
        set_image_side(reranker.processor, args.image_side)
    if args.centre_images:
        if images is None:
            raise ValueError("centre_images needs the training images (build_reranker(..., images=...))")
        centre_image_features_(reranker.backbone, reranker.processor, images)
    if model_args.freeze_vision_tower:
        freeze_vision_tower_(reranker)
    model: torch.nn.Module = reranker.train()
    if model_args.use_lora:
        from peft import get_peft_model

        model = get_peft_model(reranker, model_args.lora_config(RERANKER_LM_LAYERS))
        if args.gradient_checkpointing:
            reranker.enable_input_require_grads()
    return model, reranker.processor
