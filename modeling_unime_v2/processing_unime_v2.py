"""Turns UniME-V2 items (``{"text", "image"}``, MMEB style) into backbone inputs (Hub remote code).

An item is a mapping with ``text`` (a string, possibly with the MMEB marker ``<|image_1|>`` where the image goes)
and ``image`` (a PIL image, a path, or ``None``). Two prompt formats exist (see :class:`UniMEV2Config`):

* ``official`` — what the released checkpoints saw. Qwen-VL: raw text, ``<|image_1|>`` replaced by the bare
  ``<|image_pad|>`` (no chat template, no ``<|vision_start|>``), nothing appended. LLaVA-OneVision: the chat
  template with one user turn ``[image, text]`` and the generation prompt.
* ``chat`` — the backbone's chat template, user turn ``[image, text]``, generation prompt, vision delimiters.

An item whose text has a marker but no image (MMEB-train's WebQA queries) gets, by default
(``config.marker_without_image == "image_token"``), the backbone's image token as a plain text token in place of
the marker, with no pixels: what the authors' code fed the released checkpoints. The backbone processor would
expand that token with another item's image, so those items are tokenized by the tokenizer alone and merged into
the batch; ``text_image_token_mask`` marks their image-token positions, which :class:`UniMEV2Model` embeds as text.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import AutoProcessor, BatchFeature
from transformers.image_utils import load_image

from .configuration_unime_v2 import IMAGE_MARKER, IMAGE_MARKER_PATTERN, UniMEV2Config


def _image_token(backbone_processor: Any) -> str:
    token = getattr(backbone_processor, "image_token", None)
    if token is None:
        raise ValueError(
            f"{type(backbone_processor).__name__} has no image_token; is this a vision-language processor?"
        )
    return token


def set_pixel_budget(processor: Any, min_pixels: int | None, max_pixels: int | None) -> None:
    """Set a Qwen-VL image processor's pixel budget (``size`` shortest/longest edge, in pixels)."""
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None or (min_pixels is None and max_pixels is None):
        return
    size = dict(getattr(image_processor, "size", None) or {})
    if min_pixels is not None:
        size["shortest_edge"] = min_pixels
    if max_pixels is not None:
        size["longest_edge"] = max_pixels
    image_processor.size = size


def load_item_image(image: Any, index: int) -> Any:
    """Open an item's image (PIL image or local path) as RGB; errors name the item and the file."""
    if image is None or hasattr(image, "convert"):
        return None if image is None else image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"item {index}: image file {path!r} does not exist")
        try:
            return load_image(path).convert("RGB")
        except Exception as error:  # PIL raises several unrelated types for a bad file
            raise ValueError(f"item {index}: cannot read image file {path!r}: {error}") from error
    raise TypeError(f"item {index}: image must be a PIL image, a path or None, got {type(image).__name__}")


class UniMEV2Processor:
    """Formats items in the configured prompt format and runs the backbone's own processor on them.

    It holds the backbone processor (``Qwen2VLProcessor``, ``LlavaOnevisionProcessor``, …), which is what is saved
    next to the model; the formatting settings live in :class:`UniMEV2Config`, so they travel with the weights.
    """

    def __init__(self, backbone_processor: Any, config: UniMEV2Config):
        self.backbone_processor = backbone_processor
        self.config = config
        self.image_token = _image_token(backbone_processor)
        if config.uses_mrope:
            set_pixel_budget(backbone_processor, config.min_pixels, config.max_pixels)

    @classmethod
    def from_pretrained(cls, path: str, config: UniMEV2Config, **kwargs: Any) -> UniMEV2Processor:
        """Load the backbone processor saved at ``path`` (a folder or Hub id) and bind it to ``config``."""
        return cls(AutoProcessor.from_pretrained(path, **kwargs), config)

    def save_pretrained(self, path: str, **kwargs: Any) -> None:
        """Save the backbone processor (tokenizer, image/video processors, chat template) to ``path``."""
        self.backbone_processor.save_pretrained(path, **kwargs)

    @property
    def tokenizer(self) -> Any:
        return self.backbone_processor.tokenizer

    def format_text(self, text: str, has_image: bool, index: int = 0) -> str:
        """The exact string given to the backbone processor for one item."""
        markers = IMAGE_MARKER_PATTERN.findall(text)
        as_text = not has_image and bool(markers) and self.config.marker_without_image == "image_token"
        if len(markers) > int(has_image) and not as_text:
            hint = " (marker_without_image='error')" if not has_image else ""
            raise ValueError(
                f"item {index}: text has {len(markers)} image marker(s) {markers} but "
                f"{int(has_image)} image{hint}; UniME-V2 items carry at most one image, marked {IMAGE_MARKER}"
            )
        if as_text:
            text = IMAGE_MARKER_PATTERN.sub(self.image_token, text)
        if self.config.prompt_format == "official" and self.config.uses_mrope:
            if has_image and not markers:
                text = f"{IMAGE_MARKER}\n{text}"
            return IMAGE_MARKER_PATTERN.sub(self.image_token, text)
        bare = IMAGE_MARKER_PATTERN.sub("", text).strip()
        content: list[dict[str, str]] = [{"type": "image"}] if has_image else []
        if bare:
            content.append({"type": "text", "text": bare})
        messages = [{"role": "user", "content": content}]
        return self.backbone_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _with_text_image_tokens(
        self, texts: list[str], images: list[Any], rows: list[int], kwargs: dict[str, Any]
    ) -> BatchFeature:
        """The batch with ``rows`` (image token as text, no image) tokenized alone and merged in, re-padded."""
        tokenizer = self.backbone_processor.tokenizer
        text_kwargs = {k: v for k, v in kwargs.items() if k in ("truncation", "max_length")}
        ids: list[list[int]] = [[] for _ in texts]
        types: list[list[int]] = [[] for _ in texts]
        batch = BatchFeature()
        others = [i for i in range(len(texts)) if i not in set(rows)]
        if others:
            batch = self.backbone_processor(text=[texts[i] for i in others], images=images or None, **kwargs)
            for row, i in enumerate(others):
                keep = batch["attention_mask"][row].bool()
                ids[i] = batch["input_ids"][row][keep].tolist()
                if "mm_token_type_ids" in batch:
                    types[i] = batch["mm_token_type_ids"][row][keep].tolist()
        for i, row_ids in zip(rows, tokenizer([texts[i] for i in rows], **text_kwargs)["input_ids"]):
            ids[i], types[i] = list(row_ids), [0] * len(row_ids)
        padded = tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
        batch["input_ids"], batch["attention_mask"] = padded["input_ids"], padded["attention_mask"]
        if "mm_token_type_ids" in batch or self.config.uses_mrope:
            width = padded["input_ids"].shape[1]
            left = self.config.padding_side == "left"
            batch["mm_token_type_ids"] = torch.tensor(
                [[0] * (width - len(t)) + t if left else t + [0] * (width - len(t)) for t in types]
            )
        in_rows = torch.zeros(len(texts), 1, dtype=torch.bool)
        in_rows[rows] = True
        batch["text_image_token_mask"] = (
            batch["input_ids"] == tokenizer.convert_tokens_to_ids(self.image_token)
        ) & in_rows
        return batch

    def _prepare_image(self, image: Any, index: int) -> Any:
        pil = load_item_image(image, index)
        if pil is not None and self.config.image_resize:
            pil = pil.resize((self.config.image_resize, self.config.image_resize))
        return pil

    def prepare(self, items: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[Any]]:
        """Validate items, open their images and format their texts; errors name the item index."""
        texts, images = [], []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise TypeError(f"item {index}: expected a mapping with 'text' and 'image', got {type(item).__name__}")
            text = item.get("text") or ""
            if not isinstance(text, str):
                raise TypeError(f"item {index}: text must be a string, got {type(text).__name__}")
            image = self._prepare_image(item.get("image"), index)
            if not text.strip() and image is None:
                raise ValueError(f"item {index}: has neither text nor image")
            texts.append(self.format_text(text, image is not None, index))
            if image is not None:
                images.append(image)
        return texts, images

    def __call__(self, items: Sequence[Mapping[str, Any]], return_tensors: str = "pt") -> BatchFeature:
        """Backbone inputs for a batch of items (padded on ``config.padding_side``)."""
        if len(items) == 0:
            raise ValueError("no items to process")
        texts, images = self.prepare(items)
        rows = [i for i, text in enumerate(texts) if self.image_token in text and items[i].get("image") is None]
        tokenizer = self.backbone_processor.tokenizer
        tokenizer.padding_side = self.config.padding_side
        kwargs: dict[str, Any] = {"padding": True, "return_tensors": return_tensors}
        if self.config.max_length:
            kwargs.update(truncation=True, max_length=self.config.max_length)
        if rows:
            return self._with_text_image_tokens(texts, images, rows, kwargs)
        return self.backbone_processor(text=texts, images=images or None, **kwargs)
