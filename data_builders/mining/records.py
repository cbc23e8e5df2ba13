"""The records the mining pipeline works on: (query, positive) pairs with content keys and checked images.

A source dataset (mini-MMEB, MMEB-train, …) is read once into :class:`QueryRecord` objects. Images stay as
references (the bytes or path ``datasets`` stores, read with ``Image(decode=False)``), so nothing is decoded until
an embedder or the judge needs it, and the mined dataset copies the original image bytes unchanged. Every item has
a content key (text + image), which identifies duplicates and keys the embedding cache.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from datasets import Dataset, Image
from PIL import Image as PILImage

from unime_v2.modeling_unime_v2.configuration_unime_v2 import strip_image_markers

from ..storage import content_hash, item_key


@dataclass(frozen=True)
class ImageRef:
    """An image as ``datasets`` stores it: encoded ``bytes`` and/or a file ``path``.

    ``relative_path`` is the path as the source wrote it relative to its image root (MMEB-train, the authors' JSON);
    ``""`` for images stored as bytes.
    """

    bytes: bytes | None = None
    path: str | None = None
    relative_path: str = ""

    @property
    def key(self) -> str:
        """Content identity: the hash of the bytes, or the path for file-only images (cheap at MMEB scale)."""
        if self.bytes is not None:
            return "sha256:" + content_hash(self.bytes)
        return "path:" + os.path.normpath(self.path or "")

    def to_feature(self) -> dict[str, Any]:
        """The ``{"bytes", "path"}`` dict an ``Image()`` column accepts; the original bytes are kept as they are."""
        return {"bytes": self.bytes, "path": self.path}

    def open(self, where: str) -> PILImage.Image:
        """Decode as RGB; a missing or unreadable image raises an error naming ``where`` and the file."""
        name = self.path or "<embedded bytes>"
        try:
            if self.bytes is not None:
                image = PILImage.open(io.BytesIO(self.bytes))
            else:
                image = PILImage.open(self.path)
            return image.convert("RGB")
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{where}: image file {name!r} does not exist") from error
        except Exception as error:  # PIL raises several unrelated types for a corrupt file
            raise ValueError(f"{where}: cannot read image {name!r}: {error}") from error


@dataclass(frozen=True)
class Item:
    """One side of a pair: text (MMEB style, ``<|image_1|>`` marks the image) and an optional image."""

    text: str
    image: ImageRef | None

    @property
    def key(self) -> str:
        """Same text and same image <=> same key; duplicates in a pool are found by it."""
        image_key = self.image.key if self.image is not None else "-"
        return item_key(self.text, image_key)

    @property
    def bare_text(self) -> str:
        """The text without the MMEB image marker (what the judge reads; the image goes in its own slot)."""
        return strip_image_markers(self.text)

    def embedder_item(self, where: str) -> dict[str, Any]:
        """``{"text", "image"}`` for :meth:`UniMEV2Model.encode`, with the image decoded (errors name ``where``)."""
        return {"text": self.text, "image": self.image.open(where) if self.image is not None else None}

    def judge_item(self, where: str) -> dict[str, Any]:
        """``{"text", "image"}`` for :class:`JudgeScorer`: bare text and decoded image."""
        return {"text": self.bare_text, "image": self.image.open(where) if self.image is not None else None}


@dataclass(frozen=True)
class QueryRecord:
    """A training pair of the source dataset, with where it came from."""

    query_id: str
    source: str
    query: Item
    positive: Item


@dataclass(frozen=True)
class RecordColumns:
    """Which columns of the source dataset hold what (mini-MMEB / MMEB-train names by default)."""

    query_text: str = "qry"
    query_image: str = "qry_image"
    pos_text: str = "pos_text"
    pos_image: str = "pos_image"
    source: str = "dataset"
    query_id: str | None = None

    @property
    def image_columns(self) -> list[str]:
        return [self.query_image, self.pos_image]


def _image_ref(value: Any, image_root: str | None, where: str) -> ImageRef | None:
    """Read a stored image cell: ``None``/``""`` (no image), an ``Image(decode=False)`` dict, or a path string."""
    if value is None or value == "":
        return None
    if isinstance(value, Mapping):
        data, path = value.get("bytes"), value.get("path")
        if data is None and not path:
            return None
        if data is not None:
            return ImageRef(bytes=data, path=path)
        full = _resolve(path, image_root)
        _require_file(full, where)
        return ImageRef(path=full, relative_path="" if os.path.isabs(path) else path)
    if isinstance(value, str):
        full = _resolve(value, image_root)
        _require_file(full, where)
        return ImageRef(path=full, relative_path="" if os.path.isabs(value) else value)
    raise TypeError(f"{where}: unsupported image value of type {type(value).__name__}")


def _resolve(path: str, image_root: str | None) -> str:
    return path if os.path.isabs(path) or image_root is None else os.path.join(image_root, path)


def _require_file(path: str, where: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: image file {path!r} does not exist")


def _undecoded(dataset: Dataset, columns: list[str]) -> Dataset:
    """Image columns read as ``{"bytes", "path"}`` dicts, so images are neither decoded nor re-encoded."""
    for name in columns:
        if name in dataset.column_names and isinstance(dataset.features[name], Image):
            dataset = dataset.cast_column(name, Image(decode=False))
    return dataset


def load_query_records(
    dataset: Dataset, columns: RecordColumns = RecordColumns(), image_root: str | None = None
) -> list[QueryRecord]:
    """Read every row of ``dataset`` as a :class:`QueryRecord`; bad rows raise errors naming the row and file.

    A row needs a query and a positive that each have text or an image. Image files that do not exist are reported
    here, before any model is loaded; unreadable image bytes are reported when first decoded.
    """
    missing = [c for c in (columns.query_text, columns.pos_text, columns.source) if c not in dataset.column_names]
    if missing:
        raise KeyError(f"source dataset lacks column(s) {missing}; it has {dataset.column_names}")
    dataset = _undecoded(dataset, columns.image_columns)
    records = []
    for row, example in enumerate(dataset):
        source = str(example[columns.source])
        query_id = str(example[columns.query_id]) if columns.query_id else f"{source}-{row}"
        where = f"record {query_id} (row {row})"
        query = Item(
            example[columns.query_text] or "", _image_ref(example.get(columns.query_image), image_root, where)
        )
        positive = Item(example[columns.pos_text] or "", _image_ref(example.get(columns.pos_image), image_root, where))
        for side, item in (("query", query), ("positive", positive)):
            if not item.text.strip() and item.image is None:
                raise ValueError(f"{where}: the {side} has neither text nor image")
        records.append(QueryRecord(query_id=query_id, source=source, query=query, positive=positive))
    ids = [r.query_id for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"query ids are not unique (column {columns.query_id!r}); they key shards and outputs")
    return records
