"""Training settings of the UniME-V2 embedder: ``TrainingArguments`` plus the method's own knobs
(:class:`UniMEV2TrainingArguments`) and its data (:class:`UniMEV2DataArguments`). The backbone, its dtype, LoRA and
the vision tower are the shared :class:`~unime_v2.trainers.arguments.UniMEV2ModelArguments`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from unime_v2.data_builders.formats.training_records import NEGATIVE_SELECTIONS, PAD_POLICIES
from unime_v2.modeling_unime_v2.configuration_unime_v2 import EVAL_RESOLUTIONS, MARKER_POLICIES

from .arguments import check_choice
from .losses import LOSS_TYPES


@dataclass
class UniMEV2TrainingArguments(TrainingArguments):
    """``TrainingArguments`` for :class:`~unime_v2.trainers.UniMEV2Trainer` (paper defaults, docs/method.md §4).

    ``remove_unused_columns`` defaults to ``False``: records are dicts the collator consumes whole, and
    ``mm_token_type_ids``/``image_grid_thw`` must reach the model.
    """

    # ---- the objective
    loss_type: str = field(
        default="symmetric_kl",
        metadata={
            "help": "symmetric_kl (paper Eq. 4 in exact fp32 arithmetic, default) | symmetric_kl_authors (Eq. 4 in "
            "the authors' arithmetic: softmax, log(p + eps), compute dtype) | js (true Jensen-Shannon) | hard_labels "
            "(cross-entropy over the query's own 1 + k candidates, the positive as label) | infonce (VLM2Vec baseline)"
        },
    )
    authors_loss_epsilon: float = field(
        default=1e-8, metadata={"help": "symmetric_kl_authors: the eps in log(p + eps) (authors: 1e-8)."}
    )
    authors_loss_fp32: bool = field(
        default=False,
        metadata={"help": "symmetric_kl_authors: compute in fp32 instead of the backbone's dtype (authors: bf16)."},
    )
    tau: float = field(default=0.02, metadata={"help": "Temperature of the softmaxes (paper: 0.02)."})
    num_hard_negatives: int = field(default=8, metadata={"help": "k hard negatives per query (paper: 8 of 10)."})
    negative_selection: str = field(
        default="first", metadata={"help": "first: the first k stored (authors' loader) | random: k seeded per record"}
    )
    pad_policy: str = field(
        default="error",
        metadata={
            "help": "A record with fewer than k negatives: error (default) | repeat (repeat them to k, logged)."
        },
    )
    drop_fallback_rows: bool = field(
        default=False,
        metadata={
            "help": "Leave out the mined dataset's fallback rows (random negatives scored 1.0, counted and logged "
            "either way; docs/training.md)."
        },
    )
    infonce_hard_negatives: bool = field(
        default=True, metadata={"help": "InfoNCE: add the k hard negatives to the in-batch negatives."}
    )
    # ---- the model
    prompt_format: str = field(
        default="official",
        metadata={
            "help": "official (released checkpoints' raw-text format) | chat (chat template, vision delimiters)"
        },
    )
    image_resize: int | None = field(
        default=None,
        metadata={"help": "Resize every image to N x N first (authors' Qwen2-VL script: 672; paper: 336)."},
    )
    marker_without_image: str = field(
        default="image_token",
        metadata={
            "help": "A text with an image marker but no image (MMEB-train WebQA queries): image_token (the "
            "backbone's image token as text, no pixels: what the released checkpoints saw) | error (refuse it)."
        },
    )
    eval_resolution: str = field(
        default="high",
        metadata={
            "help": "Image size for evaluation: high (1344 x 1344, what the authors evaluated with) | low (336 x 336) "
            "| checkpoint (the training image_resize / pixel budget). Saved in the model config."
        },
    )
    query_instruction: str = field(
        default="",
        metadata={"help": "Saved in the model config: encode_query's default instruction (docs/architecture.md)."},
    )
    candidate_instruction: str = field(
        default="",
        metadata={"help": "Saved in the model config: encode_document's default instruction. Training reads neither."},
    )
    merge_lora_on_save: bool = field(
        default=True,
        metadata={
            "help": "Final save: a merged UniMEV2Model in output_dir (AutoModel loads it), adapter in adapter/."
        },
    )
    length_buckets: int = field(
        default=0,
        metadata={
            "help": "0: one batch padded to its longest sequence. N >= 1: image items in one forward and text items "
            "in N runs of similar length, each padded to its own longest row; same loss and gradients, fewer padded "
            "tokens (trainers/bucketing.py; measured in BENCHMARKS.md)."
        },
    )
    pack_text_tokens: int = field(
        default=0,
        metadata={
            "help": "0: off. N >= 1: padding-free packing: text-only items laid end to end in rows of at most N "
            "tokens, attention kept within each item through restarting position ids; image items in one forward "
            "of their own (length_buckets is then unused). Same loss and gradients (trainers/bucketing.py)."
        },
    )
    # ---- TrainingArguments defaults changed for this trainer
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay False: the collator consumes whole records."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={
            "help": "Every trainable weight (LoRA on the LM, or the LM in full fine-tuning with the vision tower "
            "frozen) is used in every step, so DDP need not search for unused ones. Set true when training the "
            "vision tower on batches that may hold no image."
        },
    )

    def __post_init__(self) -> None:
        if self.length_buckets < 0:
            raise ValueError(f"length_buckets must be >= 0 (0: no buckets), got {self.length_buckets}")
        if self.pack_text_tokens < 0:
            raise ValueError(f"pack_text_tokens must be >= 0 (0: no packing), got {self.pack_text_tokens}")
        super().__post_init__()
        check_choice("loss_type", self.loss_type, LOSS_TYPES)
        check_choice("negative_selection", self.negative_selection, NEGATIVE_SELECTIONS)
        check_choice("pad_policy", self.pad_policy, PAD_POLICIES)
        check_choice("prompt_format", self.prompt_format, ("official", "chat"))
        check_choice("marker_without_image", self.marker_without_image, MARKER_POLICIES)
        check_choice("eval_resolution", self.eval_resolution, tuple(EVAL_RESOLUTIONS))
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.num_hard_negatives < 0:
            raise ValueError(f"num_hard_negatives must be >= 0, got {self.num_hard_negatives}")
        if self.num_hard_negatives == 0 and self.loss_type != "infonce":
            raise ValueError(f"loss_type={self.loss_type!r} needs hard negatives (num_hard_negatives >= 1)")


@dataclass
class UniMEV2DataArguments:
    """What to train on and evaluate with (the YAML recipe's ``*_data`` and ``mini_mmeb_*`` keys)."""

    train_data: str = field(
        metadata={
            "help": "Mined dataset: a save_to_disk folder, a Hub id, an authors' .json (with train_image_root), or "
            "oracle:mini_mmeb (mini-MMEB distractors with ORACLE scores standing in for judge scores; demo only)."
        }
    )
    train_image_root: str | None = field(default=None, metadata={"help": "Image root of an authors' .json."})
    train_split: str = field(default="train", metadata={"help": "Split of a Hub / on-disk dataset dict."})
    max_train_records: int | None = field(default=None, metadata={"help": "Use only the first N records."})
    eval_data: str | None = field(
        default=None,
        metadata={
            "help": "MMEB-eval style rows for precision@1: mini_mmeb, or a save_to_disk folder / Hub id with qry_text, "
            "qry_image|qry_img_path, tgt_text, tgt_image|tgt_img_path, dataset (ground truth first); none: no eval."
        },
    )
    eval_split: str = field(default="test", metadata={"help": "Split of eval_data."})
    eval_image_root: str | None = field(
        default=None, metadata={"help": "Image root for eval rows with relative qry_img_path / tgt_img_path."}
    )
    max_eval_rows: int | None = field(default=None, metadata={"help": "Evaluate on the first N rows only."})
    mini_mmeb_seed: int = field(default=0, metadata={"help": "Seed of the generated mini-MMEB (tiny recipe)."})
    mini_mmeb_train_per_task: int = field(default=64, metadata={"help": "mini-MMEB training queries per task."})
    mini_mmeb_test_per_task: int = field(default=16, metadata={"help": "mini-MMEB held-out rows per task."})
    mini_mmeb_num_candidates: int = field(default=16, metadata={"help": "mini-MMEB candidates per row."})
    mini_mmeb_config: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "More MiniMMEBConfig fields as JSON (a mapping in YAML), e.g. colors, shapes, sizes, tasks."
        },
    )
    eval_before_training: bool = field(default=True, metadata={"help": "Measure precision@1 before training too."})
