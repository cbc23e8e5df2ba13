"""The records the mining pipeline works on: (query, positive) pairs with content keys and checked images.

A source dataset (mini-MMEB, MMEB-train, …) is read lazily as :class:`QueryRecord` objects
(:class:`RecordTable`: rows are built from the memory-mapped table when a stage needs them). Images stay as
references (the bytes or path ``datasets`` stores, read with ``Image(decode=False)``), so nothing is decoded until
an embedder or the judge needs it, and the mined dataset copies the original image bytes unchanged. Every item has
a content key (text + image), which identifies duplicates and keys the embedding cache.
"""

from __future__ import annotations

import io
import os
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
from datasets import Dataset, Image
from PIL import Image as PILImage

from unime_v2.modeling_unime_v2.configuration_unime_v2 import strip_image_markers

from ..storage import item_key


@dataclass(frozen=True)
class ImageRef:
    """An image as ``datasets`` stores it: encoded ``bytes`` and/or a file ``path``.

    ``relative_path`` is the path as the source wrote it relative to its image root (MMEB-train, the authors' JSON);
    ``""`` for images stored as bytes.
    """

    bytes: bytes | None = None
    path: str | None = None
    relative_path: str = ""

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
        """Same text and same image <=> same key (:func:`~unime_v2.data_builders.storage.item_key`); duplicates in a
        pool are found by it."""
        return item_key(self.text, self.image.to_feature() if self.image is not None else None)

    @property
    def bare_text(self) -> str:
        """The text without the MMEB image marker, whitespace stripped (tells whether the item carries text)."""
        return strip_image_markers(self.text)

    @property
    def modality(self) -> str:
        """``image``, ``text`` or ``image+text``: what the item carries (the ``target_modality`` pools group by it)."""
        present = (("image", self.image is not None), ("text", bool(self.bare_text)))
        return "+".join(name for name, has in present if has)

    def embedder_item(self, where: str) -> dict[str, Any]:
        """``{"text", "image"}`` for :meth:`UniMEV2Model.encode`, with the image decoded (errors name ``where``)."""
        return {"text": self.text, "image": self.image.open(where) if self.image is not None else None}

    def judge_item(self, where: str) -> dict[str, Any]:
        """``{"text", "image"}`` for the judge (:meth:`UniMEV2Reranker.score_queries`), with the image decoded; the
        judge's processor removes the image marker and reads the rest of the text as it is."""
        return {"text": self.text, "image": self.image.open(where) if self.image is not None else None}


@dataclass(frozen=True)
class QueryRecord:
    """A training pair of the source dataset, with where it came from."""

    query_id: str
    source: str
    query: Item
    positive: Item
    more_positives: tuple[Item, ...] = ()

    @property
    def positives(self) -> tuple[Item, ...]:
        """Every positive of the query: ``positive`` first, then ``more_positives`` (docs/mining.md, "Data")."""
        return (self.positive, *self.more_positives)


@dataclass(frozen=True)
class RecordColumns:
    """Which columns of the source dataset hold what (mini-MMEB / MMEB-train names by default)."""

    query_text: str = "qry"
    query_image: str = "qry_image"
    pos_text: str = "pos_text"
    pos_image: str = "pos_image"
    source: str = "dataset"
    query_id: str | None = None
    positives: str | None = None

    @property
    def image_columns(self) -> list[str]:
        return [self.query_image, self.pos_image]


def _image_ref(value: Any, image_root: str | None, where: str, check: bool = True) -> ImageRef | None:
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
        if check:
            _require_file(full, where)
        return ImageRef(path=full, relative_path="" if os.path.isabs(path) else path)
    if isinstance(value, str):
        full = _resolve(value, image_root)
        if check:
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
) -> RecordTable:
    """The rows of ``dataset`` as :class:`QueryRecord` objects, read lazily (see :class:`RecordTable`).

    Every row is checked once here, in batches, without keeping any image: a row needs a query and a positive that
    each have text or an image, and image files must exist (errors name the row and file, before any model is
    loaded); unreadable image bytes are reported when first decoded.
    """
    return RecordTable(dataset, columns, image_root)


class DigestKeys(Sequence[str]):
    """Content keys (SHA-256 hex, :func:`~unime_v2.data_builders.storage.item_key`) held as 32-byte digests in one
    ``(n, 32)`` uint8 array (32 bytes a key instead of a ~120-byte Python string); items read back as hex."""

    def __init__(self, digests: np.ndarray):
        self.digests = digests

    def __len__(self) -> int:
        return len(self.digests)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> DigestKeys: ...

    def __getitem__(self, index: int | slice) -> str | DigestKeys:
        if isinstance(index, slice):
            return DigestKeys(self.digests[index])
        return self.digests[index].tobytes().hex()

    def __iter__(self) -> Iterator[str]:
        return (row.tobytes().hex() for row in self.digests)

    def take(self, rows: np.ndarray) -> DigestKeys:
        """The keys of ``rows``, in that order."""
        return DigestKeys(self.digests[rows])


class Labels(Sequence[str]):
    """A column of few distinct strings (sources, modalities): the distinct ones and a small code per row."""

    def __init__(self, values: Iterable[str] = ()):
        self.names: list[str] = []
        self._code: dict[str, int] = {}
        self.codes = array("i")
        for value in values:
            self.append(value)

    def append(self, value: str) -> None:
        code = self._code.setdefault(value, len(self.names))
        if code == len(self.names):
            self.names.append(value)
        self.codes.append(code)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        return self.names[self.codes[index]]

    def __iter__(self) -> Iterator[str]:
        return (self.names[code] for code in self.codes)


class RowIds(Sequence[str]):
    """The default query ids, ``<source>-<row>``, made on access (unique by construction: the row number follows
    the last ``-``)."""

    def __init__(self, sources: Labels):
        self.sources = sources

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        index = int(index)
        return f"{self.sources[index]}-{index % len(self) if index < 0 else index}"

    def __iter__(self) -> Iterator[str]:
        return (f"{source}-{row}" for row, source in enumerate(self.sources))


def distinct_rows(keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The first row of every distinct key (in order of first appearance), and for every row the index of its key
    among the distinct ones. :class:`DigestKeys` are compared as digests, in NumPy."""
    if isinstance(keys, DigestKeys):
        if not len(keys):
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        flat = np.ascontiguousarray(keys.digests).view(np.dtype((np.void, 32))).ravel()
        _, first_of_sorted, inverse = np.unique(flat, return_index=True, return_inverse=True)
        order = np.argsort(first_of_sorted, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return first_of_sorted[order].astype(np.int64), rank[inverse.ravel()]
    index: dict[str, int] = {}
    first: list[int] = []
    mapping = np.empty(len(keys), dtype=np.int64)
    for row, key in enumerate(keys):
        if key not in index:
            index[key] = len(first)
            first.append(row)
        mapping[row] = index[key]
    return np.asarray(first, dtype=np.int64), mapping


class RecordTable(Sequence[QueryRecord]):
    """The records of a source dataset, built on access from its (memory-mapped) Arrow table.

    Only what every stage needs for all records stays in memory, compactly: ids (made on access unless the source
    has an id column), sources and positive modalities (:class:`Labels`), the content keys of queries and
    positives (:class:`DigestKeys`). ``table[i]`` reads row ``i``; :meth:`preloaded` reads the rows a shard or
    chunk needs in one batch and keeps them while it works, so peak memory is the working set of one shard, not
    the dataset (docs/mining.md, "Memory at scale").
    """

    def __init__(self, dataset: Dataset, columns: RecordColumns = RecordColumns(), image_root: str | None = None):
        missing = [c for c in (columns.query_text, columns.pos_text, columns.source) if c not in dataset.column_names]
        if missing:
            raise KeyError(f"source dataset lacks column(s) {missing}; it has {dataset.column_names}")
        if columns.positives and columns.positives not in dataset.column_names:
            raise KeyError(
                f"source dataset lacks the positives column {columns.positives!r}; it has {dataset.column_names}"
            )
        wanted = [
            columns.query_text,
            columns.pos_text,
            columns.source,
            *columns.image_columns,
            columns.query_id,
            columns.positives,
        ]
        dataset = dataset.select_columns([c for c in dict.fromkeys(wanted) if c and c in dataset.column_names])
        self.dataset = _undecoded(dataset, columns.image_columns)
        self.columns = columns
        self.image_root = image_root
        self._window: dict[int, QueryRecord] = {}
        ids: list[str] = []
        self.sources = Labels()
        self.positive_modalities = Labels()
        query_keys, positive_keys = bytearray(), bytearray()
        self.more_positive_keys: list[tuple[str, ...]] | None = [] if columns.positives else None
        for record in self._scan(range(len(self.dataset)), check=True):
            if self.more_positive_keys is not None:
                self.more_positive_keys.append(tuple(item.key for item in record.more_positives))
            if columns.query_id:
                ids.append(record.query_id)
            self.sources.append(record.source)
            query_keys += bytes.fromhex(record.query.key)
            positive_keys += bytes.fromhex(record.positive.key)
            self.positive_modalities.append(record.positive.modality)
        self.query_keys = DigestKeys(np.frombuffer(query_keys, dtype=np.uint8).reshape(-1, 32))
        self.positive_keys = DigestKeys(np.frombuffer(positive_keys, dtype=np.uint8).reshape(-1, 32))
        self.query_ids: Sequence[str] = ids if columns.query_id else RowIds(self.sources)
        if columns.query_id and len(set(ids)) != len(ids):
            raise ValueError(f"query ids are not unique (column {columns.query_id!r}); they key shards and outputs")

    def _scan(self, rows: range, batch_size: int = 128, check: bool = False) -> Iterator[QueryRecord]:
        for start in range(rows.start, rows.stop, batch_size):
            batch = self.dataset[start : min(start + batch_size, rows.stop)]
            for offset in range(len(next(iter(batch.values())))):
                yield self._record({name: values[offset] for name, values in batch.items()}, start + offset, check)

    def _record(self, example: Mapping[str, Any], row: int, check: bool = False) -> QueryRecord:
        """Row ``row`` as a record; ``check``: also check that its image files exist (done once, by the scan)."""
        columns, root = self.columns, self.image_root
        source = str(example[columns.source])
        query_id = str(example[columns.query_id]) if columns.query_id else f"{source}-{row}"
        where = f"record {query_id} (row {row})"
        query_image = _image_ref(example.get(columns.query_image), root, where, check)
        query = Item(example[columns.query_text] or "", query_image)
        positive = Item(
            example[columns.pos_text] or "", _image_ref(example.get(columns.pos_image), root, where, check)
        )
        for side, item in (("query", query), ("positive", positive)):
            if not item.text.strip() and item.image is None:
                raise ValueError(f"{where}: the {side} has neither text nor image")
        more = self._more_positives(
            example.get(columns.positives) if columns.positives else None, positive, where, check
        )
        return QueryRecord(query_id=query_id, source=source, query=query, positive=positive, more_positives=more)

    def _more_positives(self, values: Any, positive: Item, where: str, check: bool) -> tuple[Item, ...]:
        """The further positives of a row: a list of texts or ``{"text", "image"}`` items (an image: a path under
        ``image_root`` or a ``{"bytes", "path"}`` dict); repeats of an earlier positive are dropped."""
        if values is None:
            return ()
        if isinstance(values, (str, Mapping)) or not isinstance(values, Sequence):
            raise ValueError(f"{where}: {self.columns.positives} must be a list of positives, got {values!r:.80}")
        items, seen = [], {positive.key}
        for j, value in enumerate(values):
            name = f"{where}: {self.columns.positives}[{j}]"
            if isinstance(value, str):
                item = Item(value, None)
            elif isinstance(value, Mapping):
                unknown = sorted(set(value) - {"text", "image"})
                if unknown:
                    raise ValueError(f"{name}: unknown key(s) {unknown}; a positive has text and/or image")
                item = Item(value.get("text") or "", _image_ref(value.get("image"), self.image_root, name, check))
            else:
                raise ValueError(f"{name}: a positive is a text or a {{'text', 'image'}} mapping, got {value!r:.80}")
            if not item.text.strip() and item.image is None:
                raise ValueError(f"{name}: has neither text nor image")
            if item.key not in seen:
                seen.add(item.key)
                items.append(item)
        return tuple(items)

    def __len__(self) -> int:
        return len(self.sources)

    @overload
    def __getitem__(self, index: int) -> QueryRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[QueryRecord]: ...

    def __getitem__(self, index: int | slice) -> QueryRecord | list[QueryRecord]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = int(index)
        if index in self._window:
            return self._window[index]
        if not -len(self) <= index < len(self):
            raise IndexError(f"record {index} out of range ({len(self)} records)")
        index %= len(self)
        return self._record(self.dataset[index], index)

    def __iter__(self) -> Iterator[QueryRecord]:
        return self._scan(range(len(self)))

    @contextmanager
    def preloaded(self, rows: Iterable[int]) -> Iterator[None]:
        """Read ``rows`` in one batch and serve them from memory inside the ``with`` block (then drop them)."""
        wanted = sorted({int(row) for row in rows} - self._window.keys())
        added = []
        if wanted:
            batch = self.dataset[wanted]
            for offset, row in enumerate(wanted):
                self._window[row] = self._record({name: values[offset] for name, values in batch.items()}, row)
                added.append(row)
        try:
            yield
        finally:
            for row in added:
                self._window.pop(row, None)


@dataclass(frozen=True)
class CorpusColumns:
    """Which columns of a corpus hold its ids, texts and images (a text or an image column may be absent)."""

    id: str = "id"
    text: str = "text"
    image: str = "image"


class CorpusTable(Sequence[Item]):
    """A collection of candidates (documents, images, captions) with ids, read lazily from its Arrow table.

    Held in memory: the content keys (:class:`DigestKeys`, 32 bytes an item); ids and items are read on access
    (:meth:`preloaded` reads a batch), so a million candidates cost ~32 MB besides the memory-mapped table.
    """

    def __init__(self, dataset: Dataset, columns: CorpusColumns = CorpusColumns(), image_root: str | None = None):
        if columns.id not in dataset.column_names:
            raise KeyError(f"corpus lacks its id column {columns.id!r}; it has {dataset.column_names}")
        present = [c for c in (columns.text, columns.image) if c in dataset.column_names]
        if not present:
            raise KeyError(
                f"corpus has neither a text column {columns.text!r} nor an image column {columns.image!r}; "
                f"it has {dataset.column_names}"
            )
        self.dataset = _undecoded(dataset.select_columns([columns.id, *present]), [columns.image])
        self.columns = columns
        self.image_root = image_root
        self._window: dict[int, tuple[str, Item]] = {}
        keys = bytearray()
        seen: dict[str, int] = {}
        for row, (corpus_id, item) in self._scan(check=True):
            if corpus_id in seen:
                raise ValueError(f"corpus ids are not unique: {corpus_id!r} (rows {seen[corpus_id]} and {row})")
            seen[corpus_id] = row
            keys += bytes.fromhex(item.key)
        del seen
        self.keys = DigestKeys(np.frombuffer(keys, dtype=np.uint8).reshape(-1, 32))

    def _scan(self, batch_size: int = 1024, check: bool = False) -> Iterator[tuple[int, tuple[str, Item]]]:
        for start in range(0, len(self.dataset), batch_size):
            batch = self.dataset[start : start + batch_size]
            for offset in range(len(batch[self.columns.id])):
                row = start + offset
                yield row, self._entry({name: values[offset] for name, values in batch.items()}, row, check)

    def _entry(self, example: Mapping[str, Any], row: int, check: bool = False) -> tuple[str, Item]:
        columns = self.columns
        corpus_id = example[columns.id]
        if corpus_id is None or str(corpus_id) == "":
            raise ValueError(f"corpus row {row}: no id (column {columns.id!r})")
        where = f"corpus item {corpus_id} (row {row})"
        item = Item(
            example.get(columns.text) or "", _image_ref(example.get(columns.image), self.image_root, where, check)
        )
        if not item.text.strip() and item.image is None:
            raise ValueError(f"{where}: has neither text nor image")
        return str(corpus_id), item

    def __len__(self) -> int:
        return len(self.keys)

    def entry(self, index: int) -> tuple[str, Item]:
        """``(id, item)`` of row ``index``."""
        index = int(index)
        if index in self._window:
            return self._window[index]
        return self._entry(self.dataset[index], index)

    def __getitem__(self, index: int) -> Item:  # type: ignore[override]
        return self.entry(index)[1]

    def id(self, index: int) -> str:
        return self.entry(index)[0]

    @contextmanager
    def preloaded(self, rows: Iterable[int]) -> Iterator[None]:
        """Read ``rows`` in one batch and serve them from memory inside the ``with`` block."""
        wanted = sorted({int(row) for row in rows} - self._window.keys())
        if wanted:
            batch = self.dataset[wanted]
            for offset, row in enumerate(wanted):
                self._window[row] = self._entry({name: values[offset] for name, values in batch.items()}, row)
        try:
            yield
        finally:
            for row in wanted:
                self._window.pop(row, None)
