"""Training settings of the UniME-V2 embedder: ``TrainingArguments`` plus the method's own knobs.

LoRA targets, chosen on purpose (docs/method.md §4): all three supported backbones (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision)
have a Qwen2 language model, and the default adapts **every linear layer of its decoder blocks** — attention
``q_proj, k_proj, v_proj, o_proj`` and MLP ``gate_proj, up_proj, down_proj`` — and nothing else:

* the MLP projections hold two thirds of a block's weights; the authors' Qwen2-VL list names ``down_proj`` but
  misses ``gate_proj``/``up_proj`` (an oversight, not a choice the paper argues for), so we include them;
* the **vision tower and the projector stay frozen**: the embedding is read from the last LM token, the vision
  features are already aligned to the LM by pre-training, and LoRA on them costs memory for every image patch.
  Matching by bare names would be wrong here: Qwen2.5-VL's vision MLP is also called ``gate_proj/up_proj/down_proj``
  and LLaVA-OneVision's SigLIP attention ``q_proj/k_proj/v_proj``, so targets are a regex anchored at
  ``backbone.language_model.layers.<i>``.

A user list in ``lora_target_modules`` is read as module names *inside the language model's decoder layers*
(the same anchoring); ``lora_target_scope: anywhere`` matches the names anywhere in the model instead, as a bare
peft name list does (the authors' recipes: on LLaVA-OneVision their names also adapt SigLIP's attention, see
docs/training.md); to adapt anything else pass a full peft regex via ``lora_target_regex``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from unime_v2.data_builders.formats.training_records import NEGATIVE_SELECTIONS, PAD_POLICIES
from unime_v2.modeling_unime_v2.configuration_unime_v2 import EVAL_RESOLUTIONS, MARKER_POLICIES

from .losses import LOSS_TYPES


LORA_TARGET_SCOPES = ("language_model", "anywhere")
LORA_INITS = ("default", "gaussian")
AUTHORS_LORA_MODULES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "k_proj", "q_proj", "out_proj", "v_proj")
"""The authors' peft ``target_modules`` (their default list; ``qkv_proj``/``gate_up_proj`` are Phi-3-V names)."""
DEFAULT_LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LANGUAGE_MODEL_LAYERS = r"backbone\.language_model\.layers\.\d+"
"""Where the decoder blocks of the Qwen2 language model live in a ``UniMEV2Model`` (all supported backbones)."""


def lora_target_regex(module_names: tuple[str, ...] | list[str] | None = None, scope: str = "language_model") -> str:
    """peft ``target_modules`` regex matching ``module_names`` inside the language model's decoder layers only
    (``scope="language_model"``), or anywhere in the model (``"anywhere"``: what a bare peft name list does)."""
    names = tuple(module_names or DEFAULT_LORA_MODULES)
    alternatives = "|".join(re.escape(name) for name in names)
    if scope == "anywhere":
        return rf"(?:.*\.)?(?:{alternatives})"
    return rf"{LANGUAGE_MODEL_LAYERS}\.(?:.*\.)?(?:{alternatives})"


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
    min_pixels: int | None = field(default=None, metadata={"help": "Qwen-VL processor pixel budget, lower bound."})
    max_pixels: int | None = field(default=None, metadata={"help": "Qwen-VL processor pixel budget, upper bound."})
    backbone_dtype: str = field(
        default="auto",
        metadata={"help": "Weights dtype: auto (bfloat16 with --bf16, else float32) | float32 | bfloat16"},
    )
    freeze_vision_tower: bool = field(
        default=True,
        metadata={"help": "Full fine-tuning (use_lora=False): keep the vision tower and projector frozen."},
    )
    # ---- LoRA
    use_lora: bool = field(default=True, metadata={"help": "Train LoRA adapters on the language model."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (paper: 16)."})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA alpha (authors: 64)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout (authors: 0.1)."})
    use_dora: bool = field(default=True, metadata={"help": "Weight-decomposed LoRA (authors: on)."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Module names inside the LM decoder layers; default q,k,v,o,gate,up,down projections."},
    )
    lora_target_scope: str = field(
        default="language_model",
        metadata={
            "help": "language_model: lora_target_modules match inside the LM decoder layers only | anywhere: match "
            "those names in every submodule, vision tower included (the authors' bare peft list)."
        },
    )
    lora_init: str = field(
        default="default",
        metadata={"help": "default (peft: A Kaiming-uniform, B = 0) | gaussian (authors: A ~ N(0, 1/r), B = 0)."},
    )
    lora_target_regex: str | None = field(
        default=None, metadata={"help": "A full peft target_modules regex (overrides lora_target_modules)."}
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
        _check_choice("loss_type", self.loss_type, LOSS_TYPES)
        _check_choice("negative_selection", self.negative_selection, NEGATIVE_SELECTIONS)
        _check_choice("pad_policy", self.pad_policy, PAD_POLICIES)
        _check_choice("prompt_format", self.prompt_format, ("official", "chat"))
        _check_choice("lora_target_scope", self.lora_target_scope, LORA_TARGET_SCOPES)
        _check_choice("lora_init", self.lora_init, LORA_INITS)
        _check_choice("marker_without_image", self.marker_without_image, MARKER_POLICIES)
        _check_choice("eval_resolution", self.eval_resolution, tuple(EVAL_RESOLUTIONS))
        _check_choice("backbone_dtype", self.backbone_dtype, ("auto", "float32", "bfloat16", "float16"))
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.num_hard_negatives < 0:
            raise ValueError(f"num_hard_negatives must be >= 0, got {self.num_hard_negatives}")
        if self.num_hard_negatives == 0 and self.loss_type != "infonce":
            raise ValueError(f"loss_type={self.loss_type!r} needs hard negatives (num_hard_negatives >= 1)")

    @property
    def peft_target_modules(self) -> str:
        """The ``target_modules`` regex given to peft."""
        return self.lora_target_regex or lora_target_regex(self.lora_target_modules, self.lora_target_scope)

    @property
    def torch_dtype_name(self) -> str:
        """The dtype to load the backbone in (``auto`` resolves from ``bf16``/``fp16``)."""
        if self.backbone_dtype != "auto":
            return self.backbone_dtype
        return "bfloat16" if self.bf16 else "float16" if self.fp16 else "float32"


@dataclass
class UniMEV2DataArguments:
    """What to train on and evaluate with (the YAML recipe's ``backbone``/``*_data`` keys)."""

    backbone: str = field(
        metadata={
            "help": "VLM checkpoint (folder or Hub id), or tiny:<qwen2_vl|qwen2_5_vl|llava_onevision> to build one."
        }
    )
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


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}; choose one of {choices}")
