"""Turns UniME-V2 items (``{"text", "image"}``, MMEB style) into backbone inputs (Hub remote code).

An item is a mapping with ``text`` (a string, possibly with the MMEB marker ``<|image_1|>`` where the image goes)
and ``image`` (a PIL image, a path, or ``None``). Two prompt formats exist (see :class:`UniMEV2Config`):

* ``official`` — what the released checkpoints saw. Qwen-VL: raw text, ``<|image_1|>`` replaced by the bare
  ``<|image_pad|>`` (no chat template, no ``<|vision_start|>``), nothing appended. LLaVA-OneVision: the chat
  template with one user turn ``[image, text]`` and the generation prompt.
* ``chat`` — the backbone's chat template, user turn ``[image, text]``, generation prompt, vision delimiters.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

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
        if len(markers) > int(has_image):
            raise ValueError(
                f"item {index}: text has {len(markers)} image marker(s) {markers} but "
                f"{int(has_image)} image; UniME-V2 items carry at most one image, marked {IMAGE_MARKER}"
            )
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
        tokenizer = self.backbone_processor.tokenizer
        tokenizer.padding_side = self.config.padding_side
        kwargs: dict[str, Any] = {"padding": True, "return_tensors": return_tensors}
        if self.config.max_length:
            kwargs.update(truncation=True, max_length=self.config.max_length)
        return self.backbone_processor(text=texts, images=images or None, **kwargs)
