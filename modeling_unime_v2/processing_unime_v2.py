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

:class:`UniMEV2Processor` is a ``ProcessorMixin`` saved with an ``AutoProcessor`` ``auto_map``; its formatting
settings live in the model's config. :func:`with_instruction` writes an instruction into an input in MMEB's layout
for ``encode_query`` / ``encode_document`` (docs/architecture.md, "Using the model").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import transformers
from transformers import AutoProcessor, BatchFeature, ProcessorMixin
from transformers.image_utils import load_image

from .configuration_unime_v2 import IMAGE_MARKER, IMAGE_MARKER_PATTERN, UniMEV2Config, strip_image_markers


IMAGE_ONLY_TEXT = "Represent the given image."
"""MMEB's text for an image that comes with no instruction and no text (its image targets' text)."""


def rename_item_error(error: Exception, name: Callable[[int], str | None]) -> Exception:
    """The same error with its leading ``item i:`` replaced by ``name(i)``, chained to the original.

    The processor names a bad input by its position in the list it was given (``item 3: image file … does not
    exist``); a caller that handed it a slice, a reordering or a flattened batch of records names it in the terms
    its own caller knows (``item 67``, ``record 12 (q7), negative 2``). A message without that head, or an index
    ``name`` maps to ``None``, comes back unchanged.
    """
    message = str(error)
    head, separator, rest = message.partition(":")
    words = head.split()
    new_head = None
    if separator and len(words) == 2 and words[0] == "item" and words[1].isdigit():
        new_head = name(int(words[1]))
    renamed = type(error)(message if new_head is None else f"{new_head}:{rest}")
    renamed.__cause__ = error
    return renamed


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


def is_image_input(value: Any) -> bool:
    """An image given as an input of ``encode_query`` / ``encode_document``: a PIL image or a ``pathlib.Path``
    (a ``str`` is always a text)."""
    return isinstance(value, os.PathLike) or hasattr(value, "convert")


def as_item(value: Any, index: int) -> dict[str, Any]:
    """One input of ``encode_query`` / ``encode_document`` as an item: a ``str`` is a text, a PIL image or a
    ``pathlib.Path`` an image, a mapping an item (its ``text`` and ``image``); anything else is refused, naming it."""
    if isinstance(value, Mapping):
        if value.get("text") is None and value.get("image") is None and unknown_keys_note(value):
            raise ValueError(f"item {index}: has neither text nor image{unknown_keys_note(value)}")
        return {"text": value.get("text"), "image": value.get("image")}
    if isinstance(value, str):
        return {"text": value, "image": None}
    if is_image_input(value):
        return {"text": None, "image": value}
    raise TypeError(
        f"item {index}: expected a text (str), an image (PIL image or pathlib.Path) or a mapping with 'text' and "
        f"'image', got {type(value).__name__}"
    )


def with_instruction(item: Mapping[str, Any], instruction: str) -> dict[str, Any]:
    """``item`` with ``instruction`` in MMEB's layout ``<|image_1|>\n{instruction} {text}\n``: the marker only
    when the item has an image, the text's own markers removed (docs/architecture.md, "Using the model").

    Without instruction a text-only item is left as it is (MMEB's text candidates are bare) and an image without
    text gets MMEB's ``Represent the given image.``.
    """
    image = item.get("image")
    text = item.get("text") or ""
    if not instruction and image is None:
        return {"text": text, "image": None}
    body = strip_image_markers(text)
    if instruction:
        body = f"{instruction} {body}" if body else instruction
    elif not body:
        body = IMAGE_ONLY_TEXT
    return {"text": f"{IMAGE_MARKER}\n{body}\n" if image is not None else f"{body}\n", "image": image}


def hub_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The ``from_pretrained`` keyword arguments that locate files (revision, token, cache, subfolder)."""
    keys = ("revision", "token", "cache_dir", "local_files_only", "trust_remote_code", "subfolder")
    return {key: kwargs[key] for key in keys if key in kwargs}


def processor_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`hub_kwargs` for loading a saved folder's processor: a stock transformers class, so no remote code is
    needed; ``trust_remote_code`` defaults to False, which keeps transformers from asking for it interactively on a
    local folder whose config names our remote model code."""
    return {"trust_remote_code": False, **hub_kwargs(kwargs)}


def _saved_config(path: str, kwargs: Mapping[str, Any]) -> UniMEV2Config:
    """The :class:`UniMEV2Config` saved at ``path``; a clear error when ``path`` is not a saved UniME-V2 model."""
    found = hub_kwargs(kwargs)
    found.pop("trust_remote_code", None)
    config_dict, _ = UniMEV2Config.get_config_dict(path, **found)
    if config_dict.get("model_type") != UniMEV2Config.model_type:
        raise ValueError(
            f"{path}: config.json has model_type {config_dict.get('model_type')!r}, not a saved UniME-V2 embedder; "
            "the processor reads its formatting settings from that config (pass config= to bind another one)"
        )
    return UniMEV2Config.from_dict(config_dict)


ITEM_KEYS = ("text", "image")
"""The keys of an item given to ``encode`` / the processor."""


def unknown_keys_note(item: Mapping[str, Any]) -> str:
    """`` (unknown key(s) 'txt'; accepted: 'text', 'image')`` for an item's keys other than :data:`ITEM_KEYS`."""
    unknown = sorted(set(map(str, item)) - set(ITEM_KEYS))
    return f" (unknown key(s) {', '.join(map(repr, unknown))}; accepted: 'text', 'image')" if unknown else ""


class UniMEV2Processor(ProcessorMixin):
    """Formats MMEB items in the configured prompt format and runs the backbone's own processor on them.

    A ``ProcessorMixin`` registered for ``AutoProcessor``: ``save_pretrained`` writes the backbone's tokenizer,
    image and video processors and chat template, plus ``processor_config.json`` with ``processor_class``,
    ``auto_map`` and the backbone processor's class and settings (``Qwen2VLProcessor``,
    ``LlavaOnevisionProcessor``, …), so that ``AutoProcessor.from_pretrained(folder, trust_remote_code=True)``
    returns this class. The formatting settings (``prompt_format``, ``marker_without_image``, ``image_resize``,
    pixel budget, ``padding_side``, ``max_length``) are not stored here: they have one home, the model's
    :class:`UniMEV2Config` (``config.json`` of the same folder), which :meth:`from_pretrained` reads and
    :meth:`bind` attaches; a model and its processor share the same config object.

    ``processor(items)`` returns exactly the batch :meth:`UniMEV2Model.encode` embeds, so
    ``model(**processor(items)).embeddings`` equals ``model.encode(items)``.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        video_processor: Any = None,
        chat_template: str | None = None,
        backbone_processor_class: str = "Qwen2VLProcessor",
        backbone_processor_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__(image_processor, tokenizer, video_processor, chat_template=chat_template)
        backbone_class = getattr(transformers, backbone_processor_class, None)
        if not (isinstance(backbone_class, type) and issubclass(backbone_class, ProcessorMixin)):
            raise ValueError(f"backbone_processor_class={backbone_processor_class!r} is not a transformers processor")
        self.backbone_processor_class = backbone_processor_class
        self.backbone_processor_kwargs = dict(backbone_processor_kwargs or {})
        self.backbone_processor = backbone_class(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            chat_template=chat_template,
            **self.backbone_processor_kwargs,
        )
        self.image_token = _image_token(self.backbone_processor)
        self.config: UniMEV2Config | None = None

    @classmethod
    def from_backbone_processor(cls, backbone_processor: Any, config: UniMEV2Config) -> UniMEV2Processor:
        """Wrap a backbone's processor (``AutoProcessor`` of a VLM checkpoint) and bind it to ``config``."""
        parts = backbone_processor.get_attributes()
        if sorted(parts) != ["image_processor", "tokenizer", "video_processor"]:
            raise ValueError(
                f"{type(backbone_processor).__name__} has parts {parts}; UniME-V2 wraps processors made of an "
                "image processor, a tokenizer and a video processor (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision)"
            )
        settings = backbone_processor.to_dict()
        for key in (*parts, "processor_class", "auto_map", "chat_template"):
            settings.pop(key, None)
        processor = cls(
            backbone_processor.image_processor,
            backbone_processor.tokenizer,
            backbone_processor.video_processor,
            chat_template=backbone_processor.chat_template,
            backbone_processor_class=type(backbone_processor).__name__,
            backbone_processor_kwargs=settings,
        )
        return processor.bind(config)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str, config: UniMEV2Config | None = None, **kwargs: Any
    ) -> UniMEV2Processor:
        """Load the processor saved at ``pretrained_model_name_or_path`` (a folder or Hub id) and bind it.

        ``config`` defaults to the :class:`UniMEV2Config` saved in the same place (what ``AutoProcessor`` uses). A
        folder whose processor is a plain backbone processor (a VLM checkpoint, or an embedder saved with its
        backbone's processor only) is wrapped with :meth:`from_backbone_processor`.
        """
        path = pretrained_model_name_or_path
        if config is None:
            config = _saved_config(path, kwargs)
        try:
            saved, _ = cls.get_processor_dict(path, **hub_kwargs(kwargs))
        except (OSError, ValueError):
            saved = {}
        if saved.get("processor_class") == cls.__name__:
            return super().from_pretrained(path, **kwargs).bind(config)
        return cls.from_backbone_processor(AutoProcessor.from_pretrained(path, **kwargs), config)

    def bind(self, config: UniMEV2Config) -> UniMEV2Processor:
        """Read the formatting settings from ``config`` from now on; applies its Qwen-VL pixel budget."""
        self.config = config
        if config.uses_mrope:
            set_pixel_budget(self.backbone_processor, config.min_pixels, config.max_pixels)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The saved ``processor_config.json``: sub-processors and backbone settings, never the bound config."""
        hidden = {key: self.__dict__.pop(key) for key in ("backbone_processor", "config") if key in self.__dict__}
        try:
            return super().to_dict()
        finally:
            self.__dict__.update(hidden)

    def query_items(self, inputs: Sequence[Any], instruction: str | None = None) -> list[dict[str, Any]]:
        """Items for queries: each input (text, image or item) with ``instruction`` (default: the config's
        ``query_instruction``) in MMEB's layout, see :func:`with_instruction`."""
        if instruction is None:
            instruction = self._bound_config().query_instruction
        return [with_instruction(as_item(value, index), instruction) for index, value in enumerate(inputs)]

    def document_items(self, inputs: Sequence[Any], instruction: str | None = None) -> list[dict[str, Any]]:
        """Items for documents (candidates), like :meth:`query_items` with the config's ``candidate_instruction``."""
        if instruction is None:
            instruction = self._bound_config().candidate_instruction
        return self.query_items(inputs, instruction)

    def _bound_config(self) -> UniMEV2Config:
        if self.config is None:
            raise ValueError(
                "this UniMEV2Processor has no UniMEV2Config bound; load it with from_pretrained(model_folder) "
                "or call bind(model.config)"
            )
        return self.config

    def format_text(self, text: str, has_image: bool, index: int = 0) -> str:
        """The exact string given to the backbone processor for one item."""
        config = self._bound_config()
        markers = IMAGE_MARKER_PATTERN.findall(text)
        as_text = not has_image and bool(markers) and config.marker_without_image == "image_token"
        if len(markers) > int(has_image) and not as_text:
            hint = " (marker_without_image='error')" if not has_image else ""
            raise ValueError(
                f"item {index}: text has {len(markers)} image marker(s) {markers} but "
                f"{int(has_image)} image{hint}; UniME-V2 items carry at most one image, marked {IMAGE_MARKER}"
            )
        if as_text:
            text = IMAGE_MARKER_PATTERN.sub(self.image_token, text)
        if config.prompt_format == "official" and config.uses_mrope:
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
        self._bound_config()
        texts, images = [], []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise TypeError(f"item {index}: expected a mapping with 'text' and 'image', got {type(item).__name__}")
            text = item.get("text") or ""
            if not isinstance(text, str):
                raise TypeError(f"item {index}: text must be a string, got {type(text).__name__}")
            image = self._prepare_image(item.get("image"), index)
            if not text.strip() and image is None:
                unknown = sorted(set(map(str, item)) - set(ITEM_KEYS))
                named = (
                    f" (unknown key(s) {', '.join(map(repr, unknown))}; accepted: 'text', 'image')" if unknown else ""
                )
                raise ValueError(f"item {index}: has neither text nor image{named}")
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
        tokenizer = self.tokenizer
        tokenizer.padding_side = self.config.padding_side
        kwargs: dict[str, Any] = {"padding": True, "return_tensors": return_tensors}
        if self.config.max_length:
            kwargs.update(truncation=True, max_length=self.config.max_length)
        if rows:
            return self._with_text_image_tokens(texts, images, rows, kwargs)
        return self.backbone_processor(text=texts, images=images or None, **kwargs)


UniMEV2Processor.register_for_auto_class("AutoProcessor")
