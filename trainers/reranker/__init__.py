"""Training of the UniME-V2-Reranker (docs/reranker.md), in the shape of sentence-transformers' ``cross_encoder``:
the arguments (:mod:`.training_args`), the collator (:mod:`.collator`), the losses (:mod:`.losses`), the trainer
(:mod:`.trainer`) and what builds a run's model and data (:mod:`.build`). Judge training is a recipe of this
trainer (docs/judge_training.md)."""

from .build import build_reranker, judge_pair_data, reranker_records
from .collator import IGNORE_INDEX, RerankerCollator, hardest_first, listwise_candidates
from .losses import answer_logits, judge_losses, listwise_loss, logits_at, pairwise_judge_loss, reranker_losses
from .trainer import UniMEV2RerankerTrainer, default_collator
from .training_args import RERANKER_MODEL_DEFAULTS, UniMEV2RerankerDataArguments, UniMEV2RerankerTrainingArguments


__all__ = [
    "IGNORE_INDEX",
    "RERANKER_MODEL_DEFAULTS",
    "RerankerCollator",
    "UniMEV2RerankerTrainingArguments",
    "UniMEV2RerankerDataArguments",
    "UniMEV2RerankerTrainer",
    "answer_logits",
    "build_reranker",
    "default_collator",
    "hardest_first",
    "judge_losses",
    "judge_pair_data",
    "listwise_candidates",
    "listwise_loss",
    "logits_at",
    "pairwise_judge_loss",
    "reranker_losses",
    "reranker_records",
]
