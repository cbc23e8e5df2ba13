"""Judge prompts as token pieces: a shared prefix (prompt + query) and one suffix per candidate.

The paper's judge reads ``<prompt> Query:<query>, Candidates:<candidate>.`` in the model's chat template. The user
turn is ``[prompt + " Query:", query image?, query text, ", Candidates:", candidate image?, candidate text, "."]``.
To share the prefix between all candidates of a query, the rendered prompt is cut after ``", Candidates:"`` and
the two pieces are tokenized separately, so no BPE merge can cross the cut: the full pair's token ids are *by
definition* ``prefix ids + suffix ids``, in the prefix-shared path and in every reference path alike.

A chat template that reorders the parts (LLaVA-OneVision's Hub template renders all images first) cannot keep a
candidate image after the cut; such pairs are encoded whole (:func:`render_full`) and scored without sharing.

Images are processed one per image by the model's own processor, so a query image is encoded the same way whatever
the candidate is (for LLaVA-OneVision this means every image gets its single-image "anyres" encoding, also in a
two-image pair; see docs/mining.md). :class:`ImageInputs` adapters split a processor batch into per-image inputs
and join per-image inputs back into a model batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .configuration_unime_v2 import MROPE_MODEL_TYPES


JUDGE_PROMPT = (
    "I will provide you with a query and a candidate. Please evaluate whether the candidate meets the requirements "
    "of the query. If it does, respond with 'Yes'; if it doesn't, respond with 'No'."
)
RERANK_PAIR_PROMPT = JUDGE_PROMPT  # the released reranker's pairwise instruction is the paper's judge prompt
RERANK_PAIR_PROMPT_RELEASED = RERANK_PAIR_PROMPT.replace("doesn't, respond", "doesn't, responed")
RERANK_LIST_PROMPT = (
    "I will provide you with a query followed by multiple candidates in the format: (1) cand1 (2) cand2, etc. "
    "Each candidate is independent of the others. Evaluate each candidate against the query, and respond with the "
    "number corresponding to the candidate that best meets the requirements of the query."
)
_CUT = "\ue000UNIME_V2_PREFIX_END\ue000"


@dataclass(frozen=True)
class PairTemplate:
    """How a (query, candidate) pair is laid out in the user turn:
    ``prompt + query_label``, query image, query text, ``candidate_label``, candidate image, candidate text, ``end``.

    :data:`JUDGE_TEMPLATE` is the paper's judge (``<prompt> Query:<q>, Candidates:<c>.``); :data:`RERANK_TEMPLATE`
    the released reranker's pairwise turn (``<prompt>Query:<q>Candidate:<c>``, parts joined as the chat template
    joins text parts). The prefix (shared by all candidates of a query) ends right after ``candidate_label``.
    """

    prompt: str = JUDGE_PROMPT
    query_label: str = " Query:"
    candidate_label: str = ", Candidates:"
    end: str = "."

    def with_prompt(self, prompt: str) -> PairTemplate:
        return PairTemplate(prompt, self.query_label, self.candidate_label, self.end)


JUDGE_TEMPLATE = PairTemplate()
RERANK_TEMPLATE = PairTemplate(RERANK_PAIR_PROMPT, "Query:", "Candidate:", "")


class PrefixNotShared(ValueError):
    """The chat template puts candidate content before the cut, so the query prefix cannot be shared."""


@dataclass
class Piece:
    """Token ids of a prompt piece and the processed inputs of its images (in token order)."""

    input_ids: torch.Tensor
    images: list[dict[str, torch.Tensor]]

    def __add__(self, other: Piece) -> Piece:
        return Piece(torch.cat([self.input_ids, other.input_ids]), self.images + other.images)


class ImageInputs:
    """Per-image split/join of processor image outputs for models that stack one entry per image (LLaVA-OneVision).

    ``pixel_values`` ``(n_images, n_patches, …)`` entries are padded to the longest when joined; the model takes
    each image's real patch count from ``image_sizes``.
    """

    keys: tuple[str, ...] = ("pixel_values", "image_sizes")

    def split(self, batch: Mapping[str, Any], n_images: int) -> list[dict[str, torch.Tensor]]:
        present = [key for key in self.keys if key in batch]
        return [{key: batch[key][i : i + 1] for key in present} for i in range(n_images)]

    def join(self, images: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if not images:
            return {}
        joined = {}
        for key in images[0]:
            parts = [image[key] for image in images]
            if parts[0].ndim >= 3:
                longest = max(part.shape[1] for part in parts)
                parts = [_pad_dim1(part, longest) for part in parts]
            joined[key] = torch.cat(parts)
        return joined


class MRopeImageInputs(ImageInputs):
    """Qwen-VL: ``pixel_values`` are the flattened patches of all images, ``image_grid_thw`` one row per image."""

    keys = ("pixel_values", "image_grid_thw")

    def split(self, batch: Mapping[str, Any], n_images: int) -> list[dict[str, torch.Tensor]]:
        if n_images == 0:
            return []
        grids = batch["image_grid_thw"]
        patches = torch.split(batch["pixel_values"], grids.prod(-1).tolist())
        return [{"pixel_values": patches[i], "image_grid_thw": grids[i : i + 1]} for i in range(n_images)]

    def join(self, images: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if not images:
            return {}
        return {key: torch.cat([image[key] for image in images]) for key in self.keys}


def _pad_dim1(tensor: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - tensor.shape[1]
    if missing == 0:
        return tensor
    pad = [0, 0] * (tensor.ndim - 2) + [0, missing]
    return F.pad(tensor, pad)


def image_inputs_for(model_type: str) -> ImageInputs:
    """The split/join adapter of a model family."""
    return MRopeImageInputs() if model_type in MROPE_MODEL_TYPES else ImageInputs()


def as_template(prompt: str | PairTemplate) -> PairTemplate:
    """A bare prompt string means the judge layout with that instruction."""
    return prompt if isinstance(prompt, PairTemplate) else JUDGE_TEMPLATE.with_prompt(prompt)


def _item_parts(item: Mapping[str, Any]) -> list[dict[str, str]]:
    parts: list[dict[str, str]] = [{"type": "image"}] if item.get("image") is not None else []
    if item.get("text"):
        parts.append({"type": "text", "text": item["text"]})
    return parts


def _content(
    prompt: str | PairTemplate, query: Mapping[str, Any], candidate: Mapping[str, Any], cut: str = _CUT
) -> list[dict[str, str]]:
    """The user turn of a pair (see :class:`PairTemplate`), with the cut mark after the candidate label."""
    template = as_template(prompt)
    parts: list[dict[str, str]] = [{"type": "text", "text": template.prompt + template.query_label}]
    parts += _item_parts(query)
    parts.append({"type": "text", "text": template.candidate_label + cut})
    parts += _item_parts(candidate)
    if template.end:
        parts.append({"type": "text", "text": template.end})
    return parts


def listwise_content(prompt: str, query: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The listwise user turn: prompt, ``Query:`` query, ``Candidates:``, then ``(i) `` + candidate i (1-based)."""
    parts: list[dict[str, str]] = [{"type": "text", "text": prompt + "Query:"}]
    parts += _item_parts(query)
    parts.append({"type": "text", "text": "Candidates:"})
    for number, candidate in enumerate(candidates, start=1):
        parts.append({"type": "text", "text": f"({number}) "})
        parts += _item_parts(candidate)
    return parts


def render_listwise(processor: Any, prompt: str, query: Mapping[str, Any], candidates: Sequence[Mapping]) -> str:
    """The chat-template text of a listwise prompt, ending with the generation prompt."""
    messages = [{"role": "user", "content": listwise_content(prompt, query, candidates)}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def images_of(item: Mapping[str, Any]) -> list[Any]:
    return [item["image"]] if item.get("image") is not None else []


def render_full(
    processor: Any, prompt: str | PairTemplate, query: Mapping[str, Any], candidate: Mapping[str, Any]
) -> str:
    """The chat-template text of one whole pair (no cut)."""
    messages = [{"role": "user", "content": _content(prompt, query, candidate, cut="")}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_pair(
    processor: Any, prompt: str | PairTemplate, query: Mapping[str, Any], candidate: Mapping[str, Any]
) -> tuple[str, str]:
    """The chat-template text of one pair, cut into (prefix, suffix) after ``", Candidates:"``.

    Raises :class:`PrefixNotShared` if the template does not keep the pieces in order (e.g. it moves all images
    to the front): then this pair cannot continue the query's shared prefix.
    """
    messages = [{"role": "user", "content": _content(prompt, query, candidate)}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if text.count(_CUT) != 1:
        raise PrefixNotShared("the judge's chat template dropped or repeated a text part; cannot cut the prompt")
    prefix, suffix = text.split(_CUT)
    image_token = processor.image_token
    wanted = (int(query.get("image") is not None), int(candidate.get("image") is not None))
    if (prefix.count(image_token), suffix.count(image_token)) != wanted:
        raise PrefixNotShared(
            "the judge's chat template does not keep the candidate image after the query "
            f"({prefix.count(image_token)} image(s) before the cut, {wanted[0]} expected)"
        )
    return prefix, suffix


def encode_pieces(
    processor: Any, adapter: ImageInputs, texts: Sequence[str], images: Sequence[Sequence[Any]]
) -> list[Piece]:
    """Tokenize each text (its images expanded by the processor) as a separate piece, in one processor call.

    ``images[i]`` are the images of ``texts[i]`` in order. Images go to the processor as one flat list, so each is
    encoded as a single image.
    """
    if not texts:
        return []
    flat = [image for row in images for image in row]
    processor.tokenizer.padding_side = "right"
    batch = processor(
        text=list(texts), images=flat or None, padding=True, return_tensors="pt", add_special_tokens=False
    )
    lengths = batch["attention_mask"].sum(-1).tolist()
    per_image = iter(adapter.split(batch, len(flat)))
    return [
        Piece(batch["input_ids"][row, :length].clone(), [next(per_image) for _ in images[row]])
        for row, length in enumerate(lengths)
    ]
