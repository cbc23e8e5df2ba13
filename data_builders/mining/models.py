"""Loading the mining pipeline's two models: the retrieval embedder and the judge (``tiny:<kind>`` specs included)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel

from unime_v2.modeling_unime_v2 import UniMEV2Model, UniMEV2Reranker
from unime_v2.modeling_unime_v2.scoring_unime_v2 import JudgeScorer

from .config import MiningConfig


ADAPTER_CONFIG = "adapter_config.json"


def load_embedder(
    path: str,
    prompt_format: str,
    dtype: str,
    device: torch.device,
    marker_without_image: str = "image_token",
    base: str | None = None,
) -> UniMEV2Model:
    """A UniME-V2 checkpoint through ``AutoModel``; a plain VLM checkpoint wrapped with ``from_backbone``; a PEFT
    adapter folder (VLM2Vec's published layout: ``adapter_config.json`` + adapter weights) as its base VLM wrapped
    with ``from_backbone`` and the adapter merged in (``base`` overrides the adapter's ``base_model_name_or_path``;
    docs/mining.md, "VLM2Vec as the retrieval embedder")."""
    torch_dtype = getattr(torch, dtype)
    options = {"prompt_format": prompt_format, "dtype": torch_dtype, "marker_without_image": marker_without_image}
    if (checkpoint_folder(path) / ADAPTER_CONFIG).is_file():
        model = UniMEV2Model.from_backbone(adapter_base(path, base), **options)
        merge_adapter(model, path)
    elif AutoConfig.from_pretrained(path, trust_remote_code=True).model_type == "unime_v2":
        model = AutoModel.from_pretrained(path, trust_remote_code=True, dtype=torch_dtype)
        model.config.marker_without_image = marker_without_image
    else:
        model = UniMEV2Model.from_backbone(path, **options)
    return model.to(device).eval()


def adapter_base(path: str, base: str | None) -> str:
    """The base VLM of the adapter at ``path``: ``base`` when given, else its ``base_model_name_or_path``."""
    if base:
        return base
    config_file = checkpoint_folder(path) / ADAPTER_CONFIG
    named = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if not named:
        raise ValueError(f"{config_file}: no base_model_name_or_path; set MiningConfig.embedder_base to the base VLM")
    if named.startswith(("/", ".")) and not Path(named).is_dir():
        raise ValueError(
            f"{config_file}: base_model_name_or_path {named!r} is not a folder here; set MiningConfig.embedder_base "
            "to the base VLM (a Hub id or a local folder)"
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


def merge_adapter(model: UniMEV2Model, adapter: str) -> None:
    """Load the PEFT adapter at ``adapter`` into ``model``'s backbone and merge it into the weights (exactly what
    VLM2Vec's own loader does for inference). Every adapter tensor must land on a module and every adapter module
    must get its tensors: otherwise a ``ValueError`` names the file and the keys (a silently unloaded adapter would
    embed with the base VLM)."""
    from peft import PeftConfig, PeftModel
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    holder = torch.nn.Module()  # the backbone under the name it has inside *ForConditionalGeneration ("model")
    holder.model = model.backbone
    architecture = (model.config.backbone_config.architectures or [""])[0]
    peft_model = PeftModel(holder, PeftConfig.from_pretrained(adapter))
    weights = load_peft_weights(adapter, key_mapping=_legacy_key_mapping(architecture))
    result = set_peft_model_state_dict(peft_model, weights)
    missing = [key for key in result.missing_keys if "lora_" in key]
    if result.unexpected_keys or missing or not weights:
        raise ValueError(
            f"{adapter}: the adapter does not fit the base {architecture}: {len(weights)} tensors in the file, "
            f"unused {sorted(result.unexpected_keys)[:4]}, adapter weights not in the file {sorted(missing)[:4]}"
        )
    peft_model.merge_and_unload()
    model.backbone.to(model.dtype)


def load_judge(path: str, config: MiningConfig, device: torch.device) -> JudgeScorer:
    """The judge of ``config`` on ``device``: the scoring core of a :class:`UniMEV2Reranker` — a saved reranker,
    or a plain VLM wrapped as one in the paper's judge layout (a base Qwen2.5-VL-7B-Instruct is the paper's judge)."""
    options = {
        "batch_size": config.judge_batch_size,
        "prefix_sharing": config.prefix_sharing,
        "min_pixels": config.judge_min_pixels,
        "max_pixels": config.judge_max_pixels,
    }
    load = {"dtype": getattr(torch, config.judge_dtype)}
    if config.judge_attn_implementation:
        load["attn_implementation"] = config.judge_attn_implementation
    if AutoConfig.from_pretrained(path, trust_remote_code=True).model_type == "unime_v2_reranker":
        reranker = UniMEV2Reranker.from_pretrained(path, **load)
        for key, value in options.items():
            setattr(reranker.config, key, value if value is not None else getattr(reranker.config, key))
        reranker.attach_processor(reranker.processor)
    else:
        reranker = UniMEV2Reranker.from_backbone(path, pair_format="judge", **options, **load)
    return reranker.to(device).eval().scorer


def checkpoint_folder(spec_path: str) -> Path:
    """The local folder of a checkpoint: the path itself, or the Hub snapshot of its small files (cached)."""
    path = Path(spec_path)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(spec_path, allow_patterns=["*.json", "*.jinja", "*.txt", "*.py"]))


def checkpoint_fingerprint(spec_path: str, extra: dict | None = None) -> str:
    """Identify a checkpoint without loading it, plus ``extra`` settings (dtype, prompt format, …).

    Hashes the JSON/template files in full and, per weight file, its name, size and first/last 64 KiB; for a Hub
    id, the snapshot folder is named by the commit, which is hashed too. Keys the embedding cache and the judge
    shards, so a finished stage is reused only with the same model and settings.
    """
    folder = checkpoint_folder(spec_path)
    digest = hashlib.sha256(json.dumps(extra or {}, sort_keys=True, default=str).encode())
    if not Path(spec_path).is_dir():
        digest.update(f"{spec_path}@{folder.name}".encode())
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = file.relative_to(folder).as_posix()
        if file.suffix in (".json", ".jinja", ".txt", ".py"):
            digest.update(name.encode() + file.read_bytes())
        elif file.suffix in (".safetensors", ".bin", ".model", ".pt"):
            size = file.stat().st_size
            with open(file, "rb") as handle:
                head = handle.read(65536)
                handle.seek(max(0, size - 65536))
                tail = handle.read(65536)
            digest.update(f"{name}:{size}".encode() + head + tail)
    return digest.hexdigest()
