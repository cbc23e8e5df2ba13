"""The sentence-transformers module of a saved UniME-V2 embedder (README, "Use with sentence-transformers").

``modules.json`` (written by ``save_pretrained``) names :class:`UniMEV2STEmbedder`, so
``SentenceTransformer(path, trust_remote_code=True)`` loads it from this file. Only sentence-transformers loads this
file, so it alone (with its reranker sibling) imports ``sentence_transformers``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sentence_transformers.base.modules import InputModule

from .modeling_unime_v2 import UniMEV2Model
from .processing_unime_v2 import as_item


def load_for_sentence_transformers(model_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
    """``model_class.from_pretrained`` with what sentence-transformers passes a module's ``load`` (Hub arguments,
    ``model_kwargs``); the saved dtype unless ``model_kwargs`` names one."""
    keys = ("token", "revision", "local_files_only", "trust_remote_code")
    hub = {key: kwargs[key] for key in keys if kwargs.get(key) is not None}
    if kwargs.get("cache_folder"):
        hub["cache_dir"] = kwargs["cache_folder"]
    model_kwargs = dict(kwargs.get("model_kwargs") or {})
    if "dtype" not in model_kwargs and "torch_dtype" not in model_kwargs:
        model_kwargs["dtype"] = "auto"
    return model_class.from_pretrained(model_name_or_path, **hub, **model_kwargs)


class UniMEV2STEmbedder(InputModule):
    """The whole embedder as one sentence-transformers module: ``sentence_embedding`` is
    :meth:`UniMEV2Model.encode` of the inputs (last token, L2-normalised as the config says).

    Inputs are texts, PIL images or ``{"text", "image"}`` items. With no prompt each input is embedded as it is (as
    :meth:`UniMEV2Model.encode` does); with a prompt (``encode_query`` / ``encode_document`` use the saved
    ``prompts``, the config's ``query_instruction`` / ``candidate_instruction``) the prompt is the instruction, in
    MMEB's layout as :meth:`UniMEV2Model.encode_query` writes it.
    """

    config_keys: list[str] = []
    save_in_root = True

    def __init__(self, model: UniMEV2Model) -> None:
        super().__init__()
        self.model = model

    @property
    def modalities(self) -> list[Any]:
        return ["text", "image", ("image", "text")]

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        processor = self.model.processor
        if prompt is None:
            items = [as_item(value, index) for index, value in enumerate(inputs)]
        else:
            items = processor.query_items(list(inputs), prompt)
        return {"unime_v2_items": items}

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        items = features["unime_v2_items"]
        features["sentence_embedding"] = self.model.encode(items, batch_size=max(len(items), 1)).to(self.model.device)
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.model.config.hidden_size

    def get_embedding_dimension(self) -> int:
        return self.model.config.hidden_size

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.model.save_pretrained(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, **kwargs: Any) -> UniMEV2STEmbedder:
        return cls(load_for_sentence_transformers(UniMEV2Model, model_name_or_path, **kwargs))
