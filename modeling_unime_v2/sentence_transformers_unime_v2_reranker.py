"""The sentence-transformers module of a saved UniME-V2 reranker (README, "Use with sentence-transformers").

``modules.json`` (written by ``save_pretrained``) names :class:`UniMEV2STReranker`, so
``CrossEncoder(path, trust_remote_code=True)`` loads it from this file. Only sentence-transformers loads this file,
so it alone (with its sibling ``sentence_transformers_unime_v2``) imports ``sentence_transformers``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from sentence_transformers.base.modules import InputModule

from .modeling_unime_v2_reranker import UniMEV2Reranker
from .processing_unime_v2 import as_item
from .sentence_transformers_unime_v2 import load_for_sentence_transformers


class UniMEV2STReranker(InputModule):
    """The reranker as one sentence-transformers module for ``CrossEncoder``: ``scores`` is
    :meth:`UniMEV2Reranker.score`'s P(Yes); the saved ``activation_fn`` is the identity, so ``predict`` and ``rank``
    give P(Yes) itself.

    Each pair is ``(query, candidate)``, each a text, a PIL image or a ``{"text", "image"}`` item.
    """

    config_keys: list[str] = []
    save_in_root = True

    def __init__(self, model: UniMEV2Reranker) -> None:
        super().__init__()
        self.model = model

    @property
    def modalities(self) -> list[Any]:
        return ["text", "image", ("image", "text")]

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        pairs = []
        for index, pair in enumerate(inputs):
            query, candidate = pair
            pairs.append((as_item(query, index), as_item(candidate, index)))
        return {"unime_v2_pairs": pairs}

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        pairs = features["unime_v2_pairs"]
        groups: dict[int, list[int]] = {}
        queries: dict[int, Mapping[str, Any]] = {}
        for index, (query, _) in enumerate(pairs):
            key = next((k for k, seen in queries.items() if _same_item(seen, query)), len(queries))
            queries.setdefault(key, query)
            groups.setdefault(key, []).append(index)
        probabilities = torch.empty(len(pairs), dtype=torch.float32)
        for key, indices in groups.items():
            probabilities[indices] = self.model.score(queries[key], [pairs[i][1] for i in indices]).float()
        features["scores"] = probabilities.to(self.model.device)
        return features

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.model.save_pretrained(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, **kwargs: Any) -> UniMEV2STReranker:
        return cls(load_for_sentence_transformers(UniMEV2Reranker, model_name_or_path, **kwargs))


def _same_item(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    return first.get("text") == second.get("text") and first.get("image") is second.get("image")
