"""Loading the mining pipeline's judge and identifying checkpoints (the embedder's loader:
:func:`~unime_v2.data_builders.checkpoints.load_embedder`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from unime_v2.modeling_unime_v2 import UniMEV2Reranker

from ..checkpoints import checkpoint_folder, saved_model_type
from .config import MiningConfig


def load_judge(path: str, config: MiningConfig, device: torch.device) -> UniMEV2Reranker:
    """The judge of ``config`` on ``device``, a :class:`UniMEV2Reranker`: a saved reranker in its own layout, or a
    plain VLM wrapped as one in the paper's judge layout (a base Qwen2.5-VL-7B-Instruct is the paper's judge).
    Mining calls its ``score`` / ``score_queries``."""
    options = {
        "batch_size": config.judge_batch_size,
        "prefix_sharing": config.prefix_sharing,
        "min_pixels": config.judge_min_pixels,
        "max_pixels": config.judge_max_pixels,
    }
    load = {"dtype": getattr(torch, config.judge_dtype)}
    if config.judge_attn_implementation:
        load["attn_implementation"] = config.judge_attn_implementation
    if saved_model_type(path) == "unime_v2_reranker":
        reranker = UniMEV2Reranker.from_pretrained(path, **load)
        for key, value in options.items():
            if value is not None:
                setattr(reranker.config, key, value)
    else:
        reranker = UniMEV2Reranker.from_backbone(path, pair_format="judge", **options, **load)
    return reranker.to(device).eval()


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
