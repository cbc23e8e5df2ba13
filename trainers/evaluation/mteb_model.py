"""MTEB (2.x) entry for any embedder this package loads: ``mteb.evaluate(unime_v2_model_meta(path), tasks)``.

Needs the ``mteb`` extra (``pip install "unime-v2[mteb]"``). The checkpoint is loaded by
:func:`~unime_v2.data_builders.checkpoints.load_embedder`, so our checkpoints, PEFT adapters and the authors'
plain checkpoints (Qwen2-VL ones with their 1-D positions, LLaVA-OneVision) all work. Items are built as the
retrieval suite builds them (docs/evaluation.md, "MTEB"): an image without text gets the suite's image
instruction (:data:`~unime_v2.trainers.evaluation.readers.IMAGE_QUERY_TEXT`), a text is embedded as it is, and a
task prompt, when the task has one for the input's side, is put in MMEB's layout
(:func:`~unime_v2.modeling_unime_v2.processing_unime_v2.with_instruction`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType
from tqdm.auto import tqdm

from unime_v2.data_builders.checkpoints import load_embedder
from unime_v2.modeling_unime_v2.processing_unime_v2 import with_instruction

from .readers import IMAGE_QUERY_TEXT


UNIME_V2_CITATION = r"""
@misc{gu2025unimev2mllmasajudgeuniversalmultimodal,
  title={UniME-V2: MLLM-as-a-Judge for Universal Multimodal Embedding Learning},
  author={Tiancheng Gu and Kaicheng Yang and Kaichen Zhang and Xiang An and Ziyong Feng and Yueyi Zhang and
          Weidong Cai and Jiankang Deng and Lidong Bing},
  year={2025},
  eprint={2510.13515},
  archivePrefix={arXiv},
  primaryClass={cs.CV},
  url={https://arxiv.org/abs/2510.13515},
}
"""


def mteb_item(text: str | None, image: Any, instruction: str = "") -> dict[str, Any]:
    """The ``{"text", "image"}`` item of one MTEB input (either field may be ``None`` or empty)."""
    text = text or None
    if not instruction:
        if image is None:
            if text is None:
                raise ValueError("an MTEB input has neither text nor image")
            return {"text": text, "image": None}
        if text is None:
            return {"text": IMAGE_QUERY_TEXT, "image": image}
    return with_instruction({"text": text, "image": image}, instruction)


class UniMEV2MTEBEncoder(AbsEncoder):
    """MTEB's encoder protocol over a ``UniMEV2Model``: L2-normalised last-token embeddings as float32 arrays.

    Args:
        model_name: a folder or Hub id (loaded with ``load_embedder``); the name MTEB reports.
        revision: the Hub revision.
        device: where the model runs (default: CUDA when available, else the CPU).
        prompt_format: for a plain VLM or an adapter's base: ``official`` or ``chat``.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        batch_size: items per forward pass (default: MTEB's batch size).
        use_task_instructions: put the task's prompt for the input's side (query or document) into the item.
        model: an already loaded ``UniMEV2Model`` to wrap instead of loading ``model_name``.
        mteb_model_meta: the model's ``ModelMeta`` (set by :meth:`ModelMeta.load_model`).
    """

    def __init__(
        self,
        model_name: str,
        revision: str | None = None,
        device: str | None = None,
        prompt_format: str = "official",
        dtype: str = "float32",
        batch_size: int | None = None,
        use_task_instructions: bool = True,
        model: Any = None,
        mteb_model_meta: ModelMeta | None = None,
        **kwargs: Any,
    ) -> None:
        if model is None:
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = load_embedder(
                model_name, prompt_format=prompt_format, dtype=dtype, device=device, revision=revision
            )
        self.model = model
        self.batch_size = batch_size
        self.use_task_instructions = use_task_instructions
        self.mteb_model_meta = mteb_model_meta or unime_v2_model_meta(model_name, revision=revision)

    def instruction(self, task_metadata: Any, prompt_type: PromptType | None) -> str:
        """The task's prompt for ``prompt_type`` (a ``{"query": …, "document": …}`` dict, or one string for queries)."""
        if not self.use_task_instructions:
            return ""
        prompt = getattr(task_metadata, "prompt", None)
        if isinstance(prompt, Mapping):
            return (prompt.get(prompt_type.value, "") if prompt_type is not None else "").strip()
        if isinstance(prompt, str) and prompt_type == PromptType.query:
            return prompt.strip()
        return ""

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embeddings ``(n, d)`` of the batches of ``inputs`` (a ``DataLoader`` of ``{"text", "image"}`` columns)."""
        instruction = self.instruction(task_metadata, prompt_type)
        chunks = [np.zeros((0, self.model.config.hidden_size), dtype=np.float32)]
        for batch in tqdm(inputs, desc="encode", disable=not kwargs.get("show_progress_bar", False)):
            texts: Sequence[Any] | None = batch.get("text")
            images: Sequence[Any] | None = batch.get("image")
            size = len(texts if texts is not None else images)
            items = [
                mteb_item(
                    texts[i] if texts is not None else None, images[i] if images is not None else None, instruction
                )
                for i in range(size)
            ]
            embeddings = self.model.encode(items, batch_size=self.batch_size or max(size, 1))
            chunks.append(torch.nn.functional.normalize(embeddings.float(), dim=-1).numpy())
        return np.concatenate(chunks)


def unime_v2_model_meta(
    path: str, revision: str | None = None, embed_dim: int | None = None, **loader_kwargs: Any
) -> ModelMeta:
    """A ``ModelMeta`` whose ``load_model()`` gives :class:`UniMEV2MTEBEncoder` for ``path`` (a folder or Hub id
    with a ``/``); ``loader_kwargs`` go to the encoder (``prompt_format``, ``dtype``, ``batch_size``, …)."""
    return ModelMeta(
        loader=UniMEV2MTEBEncoder,
        loader_kwargs=dict(loader_kwargs),
        name=path,
        revision=revision,
        release_date=None,
        languages=None,
        n_parameters=None,
        memory_usage_mb=None,
        max_tokens=None,
        embed_dim=embed_dim,
        license=None,
        open_weights=True,
        public_training_code="https://github.com/GaryGuTC/UniME-v2",
        public_training_data=None,
        framework=["PyTorch", "Transformers"],
        similarity_fn_name=ScoringFunction.COSINE,
        use_instructions=True,
        training_datasets=None,
        modalities=["text", "image"],
        model_type=["dense"],
        citation=UNIME_V2_CITATION,
    )


def mteb_encoder(model: Any, name: str = "local/unime-v2", **kwargs: Any) -> UniMEV2MTEBEncoder:
    """An already loaded ``UniMEV2Model`` as an MTEB encoder (``name`` is what MTEB reports; it needs a ``/``)."""
    meta = unime_v2_model_meta(name, embed_dim=model.config.hidden_size)
    return UniMEV2MTEBEncoder(name, model=model, mteb_model_meta=meta, **kwargs)
