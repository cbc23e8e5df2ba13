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
import dataclasses
import difflib
import importlib
import json
import re
import sys
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


NESTED_CONFIGS = {
    "mini_mmeb": "unime_v2.data_builders.mini_mmeb:MiniMMEBConfig",
    "mini_mmeb_config": "unime_v2.data_builders.mini_mmeb:MiniMMEBConfig",
    "columns": "unime_v2.data_builders.mining.records:RecordColumns",
    "judge_health_thresholds": "unime_v2.data_builders.mining.report:JUDGE_HEALTH_THRESHOLDS",
}
"""Mapping-valued fields with a fixed key set (``module:name`` of a dataclass, whose fields are the keys, or of a
mapping, whose keys are): checked like the recipe's own keys, in the recipe and on the command line."""
MAX_LISTED_KEYS = 80


class RecipeParser(TrlParser):
    """``TrlParser`` whose ``--help`` lists ``--config`` (the YAML recipe) and the script's own options before the
    stock ``TrainingArguments`` ones, and that returns only dataclasses.

    Values come from the dataclass defaults, then ``defaults`` (a script's own, e.g. the reranker's LoRA), then the
    recipe, then the command line (last wins). A key of the recipe that no dataclass has (a nested one of a mapping
    with fixed keys too: :data:`NESTED_CONFIGS`) is an error naming the file, the key, close matches and the valid
    keys; an invalid value names where it was given (the recipe or the command line). The recipe is always given as
    ``--config RECIPE.yaml``, in every script.
    """

    def __init__(self, dataclass_types: Iterable[type], defaults: dict[str, Any] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        kwargs.setdefault("usage", "%(prog)s [--config RECIPE.yaml] [--<field> VALUE ...]   (fields: below)")
        super().__init__(dataclass_types, **kwargs)
        config = self.add_argument(
            "--config", metavar="RECIPE.yaml", help="YAML recipe: field values; the command line wins."
        )
        self._optionals._group_actions.remove(config)
        self._optionals._group_actions.insert(1, config)  # after --help
        self._move_stock_training_options()
        if defaults:
            unknown = self.set_defaults_with_config(**defaults)
            if unknown:
                raise ValueError(f"defaults name no field: {unknown[::2]}")

    def _move_stock_training_options(self) -> None:
        """``TrainingArguments``' own options go to a group listed after the script's options in ``--help``."""
        from transformers import TrainingArguments

        if not any(isinstance(t, type) and issubclass(t, TrainingArguments) for t in self.dataclass_types):
            return
        stock = {f.name for f in dataclasses.fields(TrainingArguments)}
        group = self.add_argument_group("transformers TrainingArguments (stock options)")
        for action in [a for a in self._optionals._group_actions if a.dest in stock]:
            self._optionals._group_actions.remove(action)
            group._group_actions.append(action)

    def valid_keys(self) -> list[str]:
        """Every key a recipe may set."""
        return sorted({a.dest for a in self._actions if a.dest not in ("help", "config")})

    def parse(self, argv: list[str] | None = None) -> tuple[Any, ...]:
        """Parse ``argv`` (default ``sys.argv[1:]``) into one instance per dataclass."""
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv and str(argv[0]).endswith((".yaml", ".yml")):
            raise ValueError(f"give the recipe as --config {argv[0]} (every script takes it that way)")
        config = _config_path(argv)
        if config is not None:
            self.check_recipe(config)
        self.check_command_line(argv)
        _check_nested_options(argv, set(self.valid_keys()))
        try:
            outputs = self.parse_args_and_config(argv)
        except (ValueError, TypeError) as error:
            raise type(error)(f"{self._blame(error, argv, config)}: {error}") from error
        outputs = tuple(out for out in outputs if not isinstance(out, argparse.Namespace))
        for out in outputs:
            _check_nested(out, "command line")
        return outputs

    def check_recipe(self, path: str) -> None:
        """A ``ValueError`` naming ``path``, each unknown key, close matches and the valid keys."""
        import yaml

        with open(path) as file:
            recipe = yaml.safe_load(file)
        if not isinstance(recipe, dict):
            raise ValueError(f"{path}: a recipe is a YAML mapping of field: value, got {type(recipe).__name__}")
        valid = self.valid_keys()
        unknown = [key for key in recipe if key not in valid and key != "env"]
        if unknown:
            raise ValueError(f"{path}: {unknown_keys_message(unknown, valid, 'this script')}")
        for key, name in NESTED_CONFIGS.items():
            if key in valid and isinstance(recipe.get(key), dict):
                _check_mapping(recipe[key], name, f"{path}: {key}")

    def check_command_line(self, argv: list[str]) -> None:
        """A ``ValueError`` naming each unknown ``--option``, close matches and the valid keys."""
        options = {option for action in self._actions for option in action.option_strings}
        given = [arg.split("=", 1)[0] for arg in argv if arg.startswith("--")]
        unknown = [arg for arg in given if not any(option.startswith(arg) for option in options)]  # argparse abbrev.
        if unknown:
            message = unknown_keys_message(unknown, self.valid_keys(), "this script")
            raise ValueError(f"command line: {message}")

    def _blame(self, error: Exception, argv: list[str], config: str | None) -> str:
        """``command line (--x)`` when a key the error names was given on the command line, else the recipe."""
        named = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", str(error))) & set(self.valid_keys())
        given = [key for key in named if any(a == f"--{key}" or a.startswith(f"--{key}=") for a in argv)]
        if given:
            return f"command line ({', '.join('--' + key for key in sorted(given))})"
        return config or "command line"


def unknown_keys_message(unknown: list[str], valid: list[str], owner: str) -> str:
    """``unknown key(s) …`` with difflib's close matches and the valid keys (or a pointer to ``--help``)."""
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), valid, n=3)
        parts.append(f"{key!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
    listed = ", ".join(valid) if len(valid) <= MAX_LISTED_KEYS else "see --help"
    return f"unknown key(s) for {owner}: {'; '.join(parts)}. Valid keys: {listed}"


def nested_keys(target: str) -> list[str]:
    """The valid keys of a :data:`NESTED_CONFIGS` target: a dataclass's fields or a mapping's keys."""
    module, name = target.split(":")
    owner = getattr(importlib.import_module(module), name)
    return sorted(f.name for f in dataclasses.fields(owner)) if dataclasses.is_dataclass(owner) else sorted(owner)


def _check_mapping(mapping: dict[str, Any], target: str, where: str) -> None:
    valid = nested_keys(target)
    unknown = [key for key in mapping if key not in valid]
    if unknown:
        raise ValueError(f"{where}: {unknown_keys_message(unknown, valid, target.split(':')[1])}")


def _as_mapping(value: Any, where: str) -> Any:
    """``value``, or the mapping a JSON string given for it holds."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not a JSON mapping ({error})") from error
    return value


def _check_nested(out: Any, where: str) -> None:
    """Unknown keys of a parsed dataclass's nested mappings (JSON strings from the command line included)."""
    for key, target in NESTED_CONFIGS.items():
        value = _as_mapping(getattr(out, key, None), f"{where} --{key}")
        if isinstance(value, dict):
            _check_mapping(value, target, f"{where} --{key}")


def _check_nested_options(argv: list[str], valid: set[str]) -> None:
    """Unknown keys of the nested mappings given on the command line (``--columns '{"qry": …}'``), before the
    dataclasses are built."""
    for index, arg in enumerate(argv):
        option, _, inline = arg.partition("=")
        key = option[2:] if option.startswith("--") else None
        if key not in NESTED_CONFIGS or key not in valid or (not inline and index + 1 >= len(argv)):
            continue
        where = f"command line --{key}"
        value = _as_mapping(inline or argv[index + 1], where)
        if isinstance(value, dict):
            _check_mapping(value, NESTED_CONFIGS[key], where)


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
