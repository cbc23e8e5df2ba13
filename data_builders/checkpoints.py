"""Loading an embedder from a checkpoint: the one loader of mining (``MiningConfig.embedder``), evaluation
(``examples/evaluate.py --model``) and the examples.

A checkpoint is a UniME-V2 embedder (``AutoModel``), a plain VLM (wrapped with ``UniMEV2Model.from_backbone``), or a
PEFT adapter folder (VLM2Vec's published layout: ``adapter_config.json`` + adapter weights) whose base VLM is wrapped
with ``from_backbone`` and the adapter merged in (docs/mining.md, "VLM2Vec as the retrieval embedder").
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel

from unime_v2.modeling_unime_v2 import UniMEV2Model


ADAPTER_CONFIG = "adapter_config.json"


def saved_model_type(path: str, **hub: object) -> str | None:
    """The ``model_type`` in a checkpoint's ``config.json``, read without running any of its code: a saved UniME-V2
    reranker or embedder need not carry its remote code files (the shipped tiny judge does not; the installed
    package's classes load it)."""
    from transformers import PretrainedConfig

    return PretrainedConfig.get_config_dict(path, **hub)[0].get("model_type")


def load_embedder(
    path: str,
    prompt_format: str = "official",
    dtype: str = "float32",
    device: torch.device | str | None = None,
    marker_without_image: str | None = None,
    base: str | None = None,
    revision: str | None = None,
) -> UniMEV2Model:
    """The embedder at ``path`` (a folder or Hub id; resolve ``tiny:`` specs first with ``resolve_backbone``), in
    eval mode on ``device`` (default: the CPU).

    Args:
        path: a UniME-V2 checkpoint, a plain VLM checkpoint or a PEFT adapter folder.
        prompt_format: for a plain VLM or an adapter's base: ``official`` or ``chat``.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        device: where the model goes.
        marker_without_image: the ``UniMEV2Config`` policy for an image marker without an image; ``None`` keeps the
            checkpoint's (a UniME-V2 checkpoint) or the config's default.
        base: an adapter's base VLM; overrides its ``base_model_name_or_path``.
        revision: the Hub revision of ``path``.
    """
    torch_dtype = getattr(torch, dtype)
    hub = {"revision": revision} if revision else {}
    marker = {"marker_without_image": marker_without_image} if marker_without_image else {}
    options = {"prompt_format": prompt_format, "dtype": torch_dtype, **marker}
    if (checkpoint_folder(path, revision) / ADAPTER_CONFIG).is_file():
        model = UniMEV2Model.from_backbone(adapter_base(path, base, revision), **options)
        merge_adapter(model, path, revision)
    elif AutoConfig.from_pretrained(path, trust_remote_code=True, **hub).model_type == "unime_v2":
        model = AutoModel.from_pretrained(path, trust_remote_code=True, dtype=torch_dtype, **hub)
        model.config.marker_without_image = marker_without_image or model.config.marker_without_image
    else:
        model = UniMEV2Model.from_backbone(path, **options, **hub)
    return model.to(device or "cpu").eval()


def checkpoint_folder(spec_path: str, revision: str | None = None) -> Path:
    """The local folder of a checkpoint: the path itself, or the Hub snapshot of its small files (cached)."""
    path = Path(spec_path)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.jinja", "*.txt", "*.py"]
    return Path(snapshot_download(spec_path, revision=revision, allow_patterns=patterns))


def adapter_base(path: str, base: str | None, revision: str | None = None) -> str:
    """The base VLM of the adapter at ``path``: ``base`` when given, else its ``base_model_name_or_path``."""
    if base:
        return base
    config_file = checkpoint_folder(path, revision) / ADAPTER_CONFIG
    named = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if not named:
        raise ValueError(f"{config_file}: no base_model_name_or_path; name the base VLM (MiningConfig.embedder_base)")
    if named.startswith(("/", ".")) and not Path(named).is_dir():
        raise ValueError(
            f"{config_file}: base_model_name_or_path {named!r} is not a folder here; name the base VLM "
            "(MiningConfig.embedder_base, --model_base: a Hub id or a local folder)"
        )
    return named


def _legacy_key_mapping(architecture: str) -> dict[str, str]:
    """transformers' renamings from the pre-5.0 key layout of ``architecture`` (e.g. Qwen2-VL's ``model.layers.*``
    → ``model.language_model.layers.*``), as PEFT ``key_mapping`` regexes: adapters trained on transformers 4.x
    (VLM2Vec's) name their weights in that layout, and PEFT alone leaves such weights unloaded."""
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    from transformers.core_model_loading import WeightRenaming

    renamings = [r for r in get_checkpoint_conversion_mapping(architecture) or [] if isinstance(r, WeightRenaming)]
    return {s: t for r in renamings for s, t in zip(r.source_patterns, r.target_patterns)}


def merge_adapter(model: UniMEV2Model, adapter: str, revision: str | None = None) -> None:
    """Load the PEFT adapter at ``adapter`` into ``model``'s backbone and merge it into the weights (exactly what
    VLM2Vec's own loader does for inference). Every adapter tensor must land on a module and every adapter module
    must get its tensors: otherwise a ``ValueError`` names the file and the keys (a silently unloaded adapter would
    embed with the base VLM)."""
    from peft import PeftConfig, PeftModel
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    hub = {"revision": revision} if revision else {}
    holder = torch.nn.Module()  # the backbone under the name it has inside *ForConditionalGeneration ("model")
    holder.model = model.backbone
    architecture = (model.config.backbone_config.architectures or [""])[0]
    peft_model = PeftModel(holder, PeftConfig.from_pretrained(adapter, **hub))
    weights = load_peft_weights(adapter, key_mapping=_legacy_key_mapping(architecture), **hub)
    result = set_peft_model_state_dict(peft_model, weights)
    missing = [key for key in result.missing_keys if "lora_" in key]
    if result.unexpected_keys or missing or not weights:
        raise ValueError(
            f"{adapter}: the adapter does not fit the base {architecture}: {len(weights)} tensors in the file, "
            f"unused {sorted(result.unexpected_keys)[:4]}, adapter weights not in the file {sorted(missing)[:4]}"
        )
    peft_model.merge_and_unload()
    model.backbone.to(model.dtype)
