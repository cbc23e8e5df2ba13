"""Training of the UniME-V2 embedder: losses, arguments, collator, Trainer, MMEB precision@1."""

from .bucketing import LengthBucketProcessor, embed_inputs
from .collator import UniMEV2Collator
from .config import UniMEV2DataArguments, UniMEV2TrainingArguments, lora_target_regex
from .losses import (
    LOSS_TYPES,
    InfoNCELoss,
    JSDivergenceLoss,
    SymmetricKLLoss,
    candidate_cosines,
    infonce_loss,
    js_divergence_loss,
    symmetric_kl_loss,
)
from .mmeb_evaluator import is_hit, precision_at_1
from .trainer import UniMEV2Trainer, base_embedder, build_embedder


__all__ = [
    "LOSS_TYPES",
    "InfoNCELoss",
    "JSDivergenceLoss",
    "LengthBucketProcessor",
    "SymmetricKLLoss",
    "UniMEV2Collator",
    "UniMEV2DataArguments",
    "UniMEV2Trainer",
    "UniMEV2TrainingArguments",
    "base_embedder",
    "build_embedder",
    "candidate_cosines",
    "embed_inputs",
    "infonce_loss",
    "is_hit",
    "js_divergence_loss",
    "lora_target_regex",
    "precision_at_1",
    "symmetric_kl_loss",
]
