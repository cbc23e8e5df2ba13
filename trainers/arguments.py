"""Every script's configuration: :class:`RecipeParser` and the model arguments the embedder and the reranker share.

Each script (``examples/train.py``, ``examples/train_reranker.py``, ``examples/mine.py``, …) declares its settings
as dataclasses whose fields carry ``metadata={"help": …}`` and parses them with :class:`RecipeParser`:
``--config recipe.yaml`` gives the values of a YAML recipe (``examples/configs/<what it configures>/``), and
``--<field> value`` on the command line overrides any of them (docs/training.md).

:class:`UniMEV2ModelArguments` is what both trainers build their model from (trl's ``ModelConfig`` beside a
trainer's ``Config``): the backbone, its dtype and attention, the Qwen-VL pixel budget, LoRA and the vision tower.

LoRA targets (docs/method.md §4): all supported backbones (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision) have a Qwen2
language model, and the default adapts **every linear layer of its decoder blocks** — attention ``q_proj, k_proj,
v_proj, o_proj`` and MLP ``gate_proj, up_proj, down_proj`` — and nothing else:

* the MLP projections hold two thirds of a block's weights; the authors' Qwen2-VL list names ``down_proj`` but
  misses ``gate_proj``/``up_proj`` (an oversight, not a choice the paper argues for), so we include them;
* the **vision tower and the projector stay frozen**: the vision features are already aligned to the LM by
  pre-training, and LoRA on them costs memory for every image patch. Matching by bare names would be wrong here:
  Qwen2.5-VL's vision MLP is also called ``gate_proj/up_proj/down_proj`` and LLaVA-OneVision's SigLIP attention
  ``q_proj/k_proj/v_proj``, so targets are a regex anchored at the language model's decoder layers.

A user list in ``lora_target_modules`` is read as module names *inside the language model's decoder layers* (the
same anchoring); ``lora_target_scope: anywhere`` matches the names anywhere in the model instead, as a bare peft
name list does (the authors' recipes: on LLaVA-OneVision their names also adapt SigLIP's attention, see
docs/training.md); to adapt anything else pass a full peft regex via ``lora_target_regex``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from trl import TrlParser


LORA_TARGET_SCOPES = ("language_model", "anywhere")
LORA_INITS = ("default", "gaussian")
BACKBONE_DTYPES = ("auto", "float32", "bfloat16", "float16")
AUTHORS_LORA_MODULES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "k_proj", "q_proj", "out_proj", "v_proj")
"""The authors' peft ``target_modules`` (their default list; ``qkv_proj``/``gate_up_proj`` are Phi-3-V names)."""
DEFAULT_LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EMBEDDER_LM_LAYERS = r"backbone\.language_model\.layers\.\d+"
"""Where the decoder blocks of the Qwen2 language model live in a ``UniMEV2Model`` (all supported backbones)."""
RERANKER_LM_LAYERS = r"backbone\.model\.language_model\.layers\.\d+"
"""Where they live in a ``UniMEV2Reranker`` (the whole VLM, LM head included, is its backbone)."""
VISION_MODULE_KEYS = ("visual", "vision_tower", "multi_modal_projector")


class RecipeParser(TrlParser):
    """``TrlParser`` whose ``--help`` also lists ``--config`` (the YAML recipe) and that returns only dataclasses.

    Values come from the dataclass defaults, then ``defaults`` (a script's own, e.g. the reranker's LoRA), then the
    recipe, then the command line (last wins). A key of the recipe that no dataclass has is an error naming the key
    and the file. The recipe is always given as ``--config RECIPE.yaml``, in every script.
    """

    def __init__(self, dataclass_types: Iterable[type], defaults: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(dataclass_types, **kwargs)
        self.add_argument("--config", metavar="RECIPE.yaml", help="YAML recipe: field values; the command line wins.")
        if defaults:
            unknown = self.set_defaults_with_config(**defaults)
            if unknown:
                raise ValueError(f"defaults name no field: {unknown[::2]}")

    def parse(self, argv: list[str] | None = None) -> tuple[Any, ...]:
        """Parse ``argv`` (default ``sys.argv[1:]``) into one instance per dataclass."""
        if argv and str(argv[0]).endswith((".yaml", ".yml")):
            raise ValueError(f"give the recipe as --config {argv[0]} (every script takes it that way)")
        try:
            outputs = self.parse_args_and_config(argv)
        except ValueError as error:
            config = _config_path(argv)
            raise ValueError(f"{config or 'recipe'}: {error}") from error
        return tuple(out for out in outputs if not isinstance(out, argparse.Namespace))


def _config_path(argv: list[str] | None) -> str | None:
    args = list(argv or [])
    return args[args.index("--config") + 1] if "--config" in args[:-1] else None


def lora_target_regex(
    module_names: tuple[str, ...] | list[str] | None = None,
    scope: str = "language_model",
    layers: str = EMBEDDER_LM_LAYERS,
) -> str:
    """peft ``target_modules`` regex matching ``module_names`` inside the decoder layers ``layers`` only
    (``scope="language_model"``), or anywhere in the model (``"anywhere"``: what a bare peft name list does)."""
    names = tuple(module_names or DEFAULT_LORA_MODULES)
    alternatives = "|".join(re.escape(name) for name in names)
    if scope == "anywhere":
        return rf"(?:.*\.)?(?:{alternatives})"
    return rf"{layers}\.(?:.*\.)?(?:{alternatives})"


@dataclass
class UniMEV2ModelArguments:
    """The model a training script builds: backbone, dtype, pixel budget, LoRA, vision tower (paper defaults of
    the embedder, docs/method.md §4; ``examples/train_reranker.py`` starts from the reranker's,
    :data:`~unime_v2.trainers.reranker.training_args.RERANKER_MODEL_DEFAULTS`)."""

    backbone: str = field(
        metadata={
            "help": "VLM checkpoint (folder or Hub id), tiny:<qwen2_vl|qwen2_5_vl|llava_onevision>[:<seed>] (a tiny "
            "random backbone, built once into the cache) or tiny:pretrained (the shipped pretrained tiny VLM)."
        }
    )
    backbone_dtype: str = field(
        default="auto",
        metadata={"help": "Weights dtype: auto (bfloat16 with --bf16, float16 with --fp16, else float32) | float32 "
                  "| bfloat16 | float16"},
    )  # fmt: skip
    attn_implementation: str | None = field(
        default=None, metadata={"help": "e.g. sdpa or flash_attention_2 (none: the model's default)."}
    )
    min_pixels: int | None = field(default=None, metadata={"help": "Qwen-VL processor pixel budget, lower bound."})
    max_pixels: int | None = field(default=None, metadata={"help": "Qwen-VL processor pixel budget, upper bound."})
    freeze_vision_tower: bool = field(
        default=True, metadata={"help": "Keep the vision tower and projector frozen (paper; LoRA freezes them too)."}
    )
    use_lora: bool = field(default=True, metadata={"help": "Train LoRA adapters on the language model."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (paper: 16 embedder, 128 reranker)."})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA alpha (authors: 64 embedder, 256 reranker)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout (authors: 0.1 embedder, 0.05 reranker)."})
    use_dora: bool = field(default=True, metadata={"help": "Weight-decomposed LoRA (authors' embedder: on)."})
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

    def __post_init__(self) -> None:
        check_choice("backbone_dtype", self.backbone_dtype, BACKBONE_DTYPES)
        check_choice("lora_target_scope", self.lora_target_scope, LORA_TARGET_SCOPES)
        check_choice("lora_init", self.lora_init, LORA_INITS)

    def peft_target_modules(self, layers: str = EMBEDDER_LM_LAYERS) -> str:
        """The ``target_modules`` regex given to peft, anchored at the decoder layers ``layers``."""
        return self.lora_target_regex or lora_target_regex(self.lora_target_modules, self.lora_target_scope, layers)

    def torch_dtype(self, training_args: Any = None) -> torch.dtype:
        """The dtype to load the backbone in (``auto`` resolves from the training arguments' ``bf16``/``fp16``)."""
        name = self.backbone_dtype
        if name == "auto":
            bf16, fp16 = getattr(training_args, "bf16", False), getattr(training_args, "fp16", False)
            name = "bfloat16" if bf16 else "float16" if fp16 else "float32"
        return getattr(torch, name)

    def load_kwargs(self, training_args: Any = None) -> dict[str, Any]:
        """The ``from_backbone`` keywords these arguments set: dtype, pixel budget, attention implementation."""
        kwargs: dict[str, Any] = {"dtype": self.torch_dtype(training_args)}
        kwargs.update({key: getattr(self, key) for key in ("min_pixels", "max_pixels") if getattr(self, key)})
        if self.attn_implementation:
            kwargs["attn_implementation"] = self.attn_implementation
        return kwargs

    def lora_config(self, layers: str = EMBEDDER_LM_LAYERS) -> Any:
        """The ``peft.LoraConfig`` of these arguments, its targets anchored at ``layers``."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            use_dora=self.use_dora,
            target_modules=self.peft_target_modules(layers),
            init_lora_weights=True if self.lora_init == "default" else self.lora_init,
            bias="none",
        )


def freeze_vision_tower_(model: torch.nn.Module) -> None:
    """Stop the gradients of the vision tower and the projector (their parameters' ``requires_grad``)."""
    for name, parameter in model.named_parameters():
        if any(key in name.split(".") for key in VISION_MODULE_KEYS):
            parameter.requires_grad_(False)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r}; choose one of {choices}")
