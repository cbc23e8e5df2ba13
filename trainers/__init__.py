"""Training of the UniME-V2 embedder (losses, arguments, collator, Trainer, MMEB precision@1), every script's
:class:`RecipeParser` and the model arguments both trainers share; the reranker's training is
:mod:`unime_v2.trainers.reranker`."""

from .arguments import RecipeParser, UniMEV2ModelArguments, lora_target_regex
from .bucketing import LengthBucketProcessor, embed_inputs
from .collators import UniMEV2Collator
from .evaluation.mmeb import is_hit, precision_at_1
from .losses import (
    LOSS_TYPES,
    candidate_cosines,
    hard_label_loss,
    infonce_loss,
    js_divergence_loss,
    symmetric_kl_authors_loss,
    symmetric_kl_loss,
)
from .trainer import UniMEV2Trainer, base_embedder, build_embedder
from .training_args import UniMEV2DataArguments, UniMEV2TrainingArguments


__all__ = [
    "LOSS_TYPES",
    "LengthBucketProcessor",
    "RecipeParser",
    "UniMEV2Collator",
    "UniMEV2DataArguments",
    "UniMEV2ModelArguments",
    "UniMEV2Trainer",
    "UniMEV2TrainingArguments",
    "base_embedder",
    "build_embedder",
    "candidate_cosines",
    "embed_inputs",
    "hard_label_loss",
    "infonce_loss",
    "is_hit",
    "js_divergence_loss",
    "lora_target_regex",
    "precision_at_1",
    "symmetric_kl_authors_loss",
    "symmetric_kl_loss",
]
