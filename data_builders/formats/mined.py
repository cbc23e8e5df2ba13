"""The schema of a UniME-V2 mined hard-negative dataset, and lossless conversion to and from the authors' JSON.

One row per training query. Columns (:data:`MINED_FEATURES`):

==================== ======================= ====================================================================
column               type                    meaning
==================== ======================= ====================================================================
``query_id``         string                  stable id of the query (authors' JSON: ``"<file stem>-<index>"``)
``source``           string                  source dataset name (``"A-OKVQA"``, ``"MSCOCO_t2i"``, …)
``query_text``       string                  query text, MMEB style (instruction inside, ``<|image_1|>`` marker)
``query_image``      Image (None allowed)    query image
``query_image_path`` string                  its path relative to the image root; ``""`` when unknown / none
``pos_text``         string                  positive candidate text (``""`` when the positive is image-only)
``pos_image``        Image (None allowed)    positive candidate image
``pos_image_path``   string                  its relative path; ``""`` when unknown / none
``pos_score``        float32                 judge score s+ of (query, positive), in [0, 1]
``neg_texts``        List[string]            hard-negative texts (10 stored)
``neg_images``       List[Image|None]        hard-negative images, same length
``neg_image_paths``  List[string]            their relative paths, same length (``""`` when unknown / none)
``neg_scores``       List[float32]           judge score of each negative, in [0, 1]
``neg_similarities`` List[float32]           retrieval cosine of each negative; NaN when unknown (authors' JSON)
==================== ======================= ====================================================================

**Why separate path columns.** The ``Image`` feature's own ``path`` is not stable: it is absolute when the image
is referenced from disk and is reduced to a bare file name (or dropped) when the bytes are embedded by
``push_to_hub``/``save_to_disk``. The authors' format identifies images by their path relative to the MMEB-train
image root, so that relative path is kept verbatim in ``*_image_path``; the ``Image`` columns hold the pixels (or
a lazy reference to the file). JSON → dataset → JSON therefore returns the same texts, the same relative paths
and the same scores (to float32 precision). Dataset → JSON drops ``query_id``, ``source`` and
``neg_similarities``, which the authors' format has no place for.

Build a dataset with ``datasets.Dataset.from_list([make_mined_row(...), ...], features=MINED_FEATURES)``;
:func:`make_mined_row` fills the optional columns and validates the row.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets import Features, List, Value
from datasets import Image as ImageFeature
from tqdm.auto import tqdm


NUM_STORED_NEGATIVES = 10
"""How many hard negatives a mined record stores (paper: "at least ten"; the authors' JSON has exactly 10)."""

MINED_FEATURES = Features(
    {
        "query_id": Value("string"),
        "source": Value("string"),
        "query_text": Value("string"),
        "query_image": ImageFeature(),
        "query_image_path": Value("string"),
        "pos_text": Value("string"),
        "pos_image": ImageFeature(),
        "pos_image_path": Value("string"),
        "pos_score": Value("float32"),
        "neg_texts": List(Value("string")),
        "neg_images": List(ImageFeature()),
        "neg_image_paths": List(Value("string")),
        "neg_scores": List(Value("float32")),
        "neg_similarities": List(Value("float32")),
    }
)

MORE_POSITIVE_FEATURES = Features(
    {
        "more_pos_texts": List(Value("string")),
        "more_pos_images": List(ImageFeature()),
        "more_pos_image_paths": List(Value("string")),
        "more_pos_scores": List(Value("float32")),
    }
)
"""The columns a mined dataset gains when its source has several positives per query (``columns.positives``): the
further positives and their judge scores, beside ``pos_*`` (docs/mining.md, "Several positives")."""


AUTHORS_KEYS = (
    "query_text",
    "query_image",
    "pos_text",
    "pos_image",
    "query_pos_scores",
    "hard_negatives",
    "hard_negatives_scores",
)
"""The keys of one record of the authors' mined-negatives JSON (docs/method.md §5), in their order."""

IMAGE_COLUMNS = ("query_image", "pos_image", "neg_images")
_NEG_LIST_COLUMNS = ("neg_images", "neg_image_paths", "neg_scores", "neg_similarities")
_SIMILARITY_SLACK = 1e-3  # cosines computed in bf16/fp16 may exceed 1 by rounding


def repeat_to(values: Sequence[int], length: int) -> list[int]:
    """Repeat ``values`` in order until there are ``length`` of them (``[a, b] -> [a, b, a, b, …]``)."""
    if not values:
        raise ValueError("cannot repeat an empty list")
    return [values[i % len(values)] for i in range(length)]


def _fail(index: int | str, message: str, where: str = "") -> ValueError:
    prefix = f"{where}: " if where else ""
    return ValueError(f"{prefix}record {index}: {message}")


# ----------------------------------------------------------------------------------------------- validation


def _check_score(value: Any, name: str, index: int | str, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise _fail(index, f"{name} must be a number, got {type(value).__name__} ({value!r})", where)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise _fail(index, f"{name} = {value} is not a judge score in [0, 1]", where)


def _check_similarity(value: Any, name: str, index: int | str, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise _fail(index, f"{name} must be a number or NaN, got {type(value).__name__}", where)
    if not math.isnan(value) and not -1.0 - _SIMILARITY_SLACK <= value <= 1.0 + _SIMILARITY_SLACK:
        raise _fail(index, f"{name} = {value} is not a cosine similarity in [-1, 1] (or NaN when unknown)", where)


def _check_string(value: Any, name: str, index: int | str, where: str) -> None:
    if not isinstance(value, str):
        raise _fail(index, f"{name} must be a string, got {type(value).__name__} ({value!r})", where)


def has_image(image: Any) -> bool:
    if isinstance(image, Mapping):  # undecoded Image feature value: {"bytes", "path"}
        return bool(image.get("bytes")) or bool(image.get("path"))
    return image is not None and image != ""


def validate_mined_record(
    record: Mapping[str, Any],
    index: int | str,
    num_negatives: int | None = NUM_STORED_NEGATIVES,
    where: str = "",
) -> None:
    """Check one row of a mined dataset; raise a ``ValueError`` naming ``record {index}`` (and ``where``) if bad.

    Checks: every column of :data:`MINED_FEATURES` present with the right type; ``num_negatives`` negatives
    (``None`` accepts any number ≥ 1) and every per-negative list of that length; judge scores finite and in
    [0, 1]; similarities NaN or in [-1, 1]; every item has a text or an image; an item with a relative image path
    also has the image. Image files are not opened here (images may be PIL objects or embedded bytes).
    """
    if not isinstance(record, Mapping):
        raise _fail(
            index, f"expected a mapping with the columns of MINED_FEATURES, got {type(record).__name__}", where
        )
    missing = [name for name in MINED_FEATURES if name not in record]
    if missing:
        raise _fail(index, f"missing column(s) {missing}; build rows with make_mined_row()", where)
    for name in ("query_id", "source", "query_text", "query_image_path", "pos_text", "pos_image_path"):
        _check_string(record[name], name, index, where)
    _check_score(record["pos_score"], "pos_score", index, where)
    neg_texts = record["neg_texts"]
    if not isinstance(neg_texts, Sequence) or isinstance(neg_texts, str):
        raise _fail(index, f"neg_texts must be a list of strings, got {type(neg_texts).__name__}", where)
    count = len(neg_texts)
    if num_negatives is not None and count != num_negatives:
        raise _fail(index, f"has {count} hard negatives, expected {num_negatives}", where)
    if count == 0:
        raise _fail(index, "has no hard negatives", where)
    for name in _NEG_LIST_COLUMNS:
        value = record[name]
        if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != count:
            length = len(value) if isinstance(value, Sequence) else type(value).__name__
            raise _fail(index, f"{name} has {length} entries but neg_texts has {count}", where)
    for j in range(count):
        _check_string(neg_texts[j], f"neg_texts[{j}]", index, where)
        _check_string(record["neg_image_paths"][j], f"neg_image_paths[{j}]", index, where)
        _check_score(record["neg_scores"][j], f"neg_scores[{j}]", index, where)
        _check_similarity(record["neg_similarities"][j], f"neg_similarities[{j}]", index, where)
    items = [("query", record["query_text"], record["query_image"], record["query_image_path"])]
    items.append(("positive", record["pos_text"], record["pos_image"], record["pos_image_path"]))
    items += [
        (f"negative {j}", neg_texts[j], record["neg_images"][j], record["neg_image_paths"][j]) for j in range(count)
    ]
    for role, text, image, path in items:
        if not text.strip() and not has_image(image):
            raise _fail(index, f"{role} has neither text nor image", where)
        if path and not has_image(image):
            raise _fail(index, f"{role} has image path {path!r} but no image", where)


def make_mined_row(
    *,
    query_text: str,
    pos_text: str,
    pos_score: float,
    neg_texts: Sequence[str],
    neg_scores: Sequence[float],
    query_image: Any = None,
    pos_image: Any = None,
    neg_images: Sequence[Any] | None = None,
    query_image_path: str = "",
    pos_image_path: str = "",
    neg_image_paths: Sequence[str] | None = None,
    neg_similarities: Sequence[float] | None = None,
    source: str = "",
    query_id: str = "",
    num_negatives: int | None = NUM_STORED_NEGATIVES,
) -> dict[str, Any]:
    """One validated row of :data:`MINED_FEATURES`; omitted images are ``None``, paths ``""``, similarities NaN.

    Images may be PIL images, file paths or ``{"bytes", "path"}`` dicts (anything the ``Image`` feature encodes).
    """
    count = len(neg_texts)
    row = {
        "query_id": query_id,
        "source": source,
        "query_text": query_text,
        "query_image": query_image,
        "query_image_path": query_image_path,
        "pos_text": pos_text,
        "pos_image": pos_image,
        "pos_image_path": pos_image_path,
        "pos_score": float(pos_score),
        "neg_texts": list(neg_texts),
        "neg_images": list(neg_images) if neg_images is not None else [None] * count,
        "neg_image_paths": list(neg_image_paths) if neg_image_paths is not None else [""] * count,
        "neg_scores": [float(s) for s in neg_scores],
        "neg_similarities": (
            [float(s) for s in neg_similarities] if neg_similarities is not None else [math.nan] * count
        ),
    }
    validate_mined_record(row, query_id or "<new>", num_negatives=num_negatives)
    return row


# ----------------------------------------------------------------------------------------------- authors' JSON → dataset


def _load_json_list(json_path: str | os.PathLike) -> list[Any]:
    path = os.fspath(json_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: mined-negatives JSON not found")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, list):
        raise ValueError(
            f"{path}: expected a JSON list of records with keys {list(AUTHORS_KEYS)}, got a {type(data).__name__}"
        )
    return data


def source_from_path(relative_path: str) -> str:
    """The MMEB-train dataset a relative image path belongs to: ``images/<source>/...`` → ``<source>``."""
    parts = Path(relative_path).parts
    if len(parts) >= 3 and parts[0] == "images":
        return parts[1]
    return parts[0] if len(parts) >= 2 else ""


def _resolve_image(relative: str, image_root: str, index: int, role: str, where: str, check: bool) -> str | None:
    if relative == "":
        return None
    full = os.path.join(image_root, relative)
    if check and not os.path.isfile(full):
        raise FileNotFoundError(f"{where}: record {index}: {role} image {relative!r} not found at {full!r}")
    return full


def authors_record_to_row(
    record: Any,
    index: int,
    image_root: str | os.PathLike,
    where: str = "",
    num_negatives: int | None = NUM_STORED_NEGATIVES,
    check_images: bool = True,
    query_id_prefix: str = "",
    source: str | None = None,
) -> dict[str, Any]:
    """Convert one record of the authors' JSON to a row of :data:`MINED_FEATURES` (images as absolute paths)."""
    if not isinstance(record, Mapping):
        raise _fail(index, f"expected an object with keys {list(AUTHORS_KEYS)}, got {type(record).__name__}", where)
    missing = [key for key in AUTHORS_KEYS if key not in record]
    if missing:
        raise _fail(index, f"missing key(s) {missing}; the authors' format has {list(AUTHORS_KEYS)}", where)
    extra = sorted(set(record) - set(AUTHORS_KEYS))
    if extra:
        raise _fail(index, f"unexpected key(s) {extra}; they would be lost in conversion", where)
    for key in ("query_text", "query_image", "pos_text", "pos_image"):
        _check_string(record[key], key, index, where)
    negatives, scores = record["hard_negatives"], record["hard_negatives_scores"]
    if not isinstance(negatives, list) or not all(isinstance(n, list) and len(n) == 2 for n in negatives):
        raise _fail(index, "hard_negatives must be a list of [text, image_path] pairs", where)
    if not isinstance(scores, list) or len(scores) != len(negatives):
        length = len(scores) if isinstance(scores, list) else type(scores).__name__
        raise _fail(
            index, f"hard_negatives_scores has {length} entries but hard_negatives has {len(negatives)}", where
        )
    for j, (text, image) in enumerate(negatives):
        _check_string(text, f"hard_negatives[{j}][0]", index, where)
        _check_string(image, f"hard_negatives[{j}][1]", index, where)
    _check_score(record["query_pos_scores"], "query_pos_scores", index, where)
    for j, score in enumerate(scores):
        _check_score(score, f"hard_negatives_scores[{j}]", index, where)
    root = os.fspath(image_root)
    paths = [record["query_image"], record["pos_image"], *(image for _, image in negatives)]
    inferred = next((source_from_path(p) for p in paths if p), "")
    row = {
        "query_id": f"{query_id_prefix}{index}",
        "source": inferred if source is None else source,
        "query_text": record["query_text"],
        "query_image": _resolve_image(record["query_image"], root, index, "query", where, check_images),
        "query_image_path": record["query_image"],
        "pos_text": record["pos_text"],
        "pos_image": _resolve_image(record["pos_image"], root, index, "positive", where, check_images),
        "pos_image_path": record["pos_image"],
        "pos_score": float(record["query_pos_scores"]),
        "neg_texts": [text for text, _ in negatives],
        "neg_images": [
            _resolve_image(image, root, index, f"negative {j}", where, check_images)
            for j, (_, image) in enumerate(negatives)
        ],
        "neg_image_paths": [image for _, image in negatives],
        "neg_scores": [float(s) for s in scores],
        "neg_similarities": [math.nan] * len(negatives),
    }
    validate_mined_record(row, index, num_negatives=num_negatives, where=where)
    return row


def from_authors_json(
    json_path: str | os.PathLike,
    image_root: str | os.PathLike,
    num_negatives: int | None = NUM_STORED_NEGATIVES,
    check_images: bool = True,
    source: str | None = None,
    show_progress_bar: bool = True,
) -> datasets.Dataset:
    """Read the authors' mined-negatives JSON (docs/method.md §5) into a dataset with :data:`MINED_FEATURES`.

    Args:
        json_path: the JSON file (a list of records with :data:`AUTHORS_KEYS`).
        image_root: the folder the relative image paths start from (the MMEB-train root holding ``images/``).
        num_negatives: required number of hard negatives per record; ``None`` accepts any number ≥ 1 (the
            training reader then applies its own padding policy).
        check_images: raise if an image file is missing (the error names the record, the role and the file).
        source: the ``source`` of every row; ``None`` infers it from the first image path (``images/<source>/…``).

    Images are referenced lazily (no bytes are copied). ``query_id`` is ``"<file stem>-<record index>"``;
    ``neg_similarities`` are NaN (the authors' JSON does not keep retrieval similarities).
    """
    where = os.fspath(json_path)
    records = _load_json_list(json_path)
    return _authors_rows(records, image_root, where, f"{Path(where).stem}-", num_negatives, check_images, source,
                         show_progress_bar)  # fmt: skip


def from_authors_dataset(
    dataset: datasets.Dataset,
    image_root: str | os.PathLike,
    name: str = "authors' JSON",
    num_negatives: int | None = NUM_STORED_NEGATIVES,
    check_images: bool = True,
    source: str | None = None,
    show_progress_bar: bool = True,
) -> datasets.Dataset:
    """The authors' mined JSON as ``datasets.load_dataset("json", data_files=...)`` (or their Hub repository,
    ``TianchengGu/UniME-V2-Training-Datasets``, with ``data_files=<one judge's file>``) returns it, converted like
    :func:`from_authors_json`; ``query_id`` is ``"<name stem>-<row index>"``."""
    return _authors_rows(dataset, image_root, name, f"{Path(name).stem}-", num_negatives, check_images, source,
                         show_progress_bar)  # fmt: skip


def _authors_rows(
    records: Iterable[Any],
    image_root: str | os.PathLike,
    where: str,
    prefix: str,
    num_negatives: int | None,
    check_images: bool,
    source: str | None,
    show_progress_bar: bool,
) -> datasets.Dataset:
    rows = [
        authors_record_to_row(record, index, image_root, where, num_negatives, check_images, prefix, source)
        for index, record in enumerate(tqdm(records, desc="read mined JSON", disable=not show_progress_bar))
    ]
    if not rows:
        raise ValueError(f"{where}: contains no records")
    return datasets.Dataset.from_list(rows, features=MINED_FEATURES)


# ----------------------------------------------------------------------------------------------- dataset → authors' JSON


def iter_undecoded_rows(dataset: datasets.Dataset, batch_size: int = 256) -> Iterator[dict[str, Any]]:
    """Rows as plain Python values, images as undecoded ``{"bytes", "path"}`` dicts (no pixel decoding)."""
    arrow = dataset.with_format("arrow")
    for start in range(0, len(dataset), batch_size):
        yield from arrow[start : start + batch_size].to_pylist()


FALLBACK_SCORE = 1.0
"""The judge score the sampler gives every negative of a fallback row (docs/method.md §3)."""


def is_fallback_row(neg_scores: Sequence[float]) -> bool:
    """Whether a mined row is a fallback row: no retrieved candidate survived the false-negative filter, so its
    negatives are a random draw, each stored with score :data:`FALLBACK_SCORE` (docs/mining.md, "Judge health").

    A sampled negative has ``s ≤ s₊ − β < 1`` for β > 0, so every stored score at 1.0 marks the fallback.
    """
    return len(neg_scores) > 0 and all(float(score) == FALLBACK_SCORE for score in neg_scores)


def fallback_rows(dataset: datasets.Dataset) -> list[int]:
    """Indices of the fallback rows of a mined dataset (read from ``neg_scores`` only)."""
    scores = dataset.select_columns(["neg_scores"]).with_format("arrow")
    out: list[int] = []
    for start in range(0, len(dataset), 4096):
        column = scores[start : start + 4096]["neg_scores"].to_pylist()
        out += [start + i for i, row in enumerate(column) if is_fallback_row(row)]
    return out


def _materialise_image(image: Mapping[str, Any] | None, relative: str, image_root: str, where: str) -> None:
    """Make sure ``image_root/relative`` holds ``image``: keep an existing file, else write the bytes or copy."""
    target = os.path.join(image_root, relative)
    if os.path.isfile(target) or image is None:
        return
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    if image.get("bytes"):
        with open(target, "wb") as handle:
            handle.write(image["bytes"])
    elif image.get("path") and os.path.isfile(image["path"]):
        shutil.copyfile(image["path"], target)
    else:
        raise FileNotFoundError(f"{where}: image for {relative!r} has neither bytes nor a readable file")


def _generated_path(row: Mapping[str, Any], index: int, role: str, image: Mapping[str, Any]) -> str:
    suffix = Path(image.get("path") or "").suffix or ".png"
    source = row["source"] or "unknown"
    name = row["query_id"] or str(index)
    return f"images/{source}/{name}_{role}{suffix}".replace(os.sep, "/")


def _relative_image(row: Mapping[str, Any], index: int, role: str, image: Any, relative: str, image_root: str) -> str:
    if image is None:
        return ""
    relative = relative or _generated_path(row, index, role, image)
    _materialise_image(image, relative, image_root, f"record {index} ({role})")
    return relative


def _authors_record(row: Mapping[str, Any], index: int, image_root: str) -> dict[str, Any]:
    count = len(row["neg_texts"])
    negatives = [
        [
            row["neg_texts"][j],
            _relative_image(row, index, f"neg{j}", row["neg_images"][j], row["neg_image_paths"][j], image_root),
        ]
        for j in range(count)
    ]
    return {
        "query_text": row["query_text"],
        "query_image": _relative_image(row, index, "query", row["query_image"], row["query_image_path"], image_root),
        "pos_text": row["pos_text"],
        "pos_image": _relative_image(row, index, "pos", row["pos_image"], row["pos_image_path"], image_root),
        "query_pos_scores": float(np.float32(row["pos_score"])),
        "hard_negatives": negatives,
        "hard_negatives_scores": [float(np.float32(s)) for s in row["neg_scores"]],
    }


def to_authors_json(
    dataset: datasets.Dataset,
    json_path: str | os.PathLike,
    image_root: str | os.PathLike,
    num_negatives: int | None = NUM_STORED_NEGATIVES,
    show_progress_bar: bool = True,
) -> Path:
    """Write a mined dataset in the authors' JSON format (docs/method.md §5), images relative to ``image_root``.

    An image keeps its ``*_image_path`` when it has one; an image without a path (e.g. rendered in memory) is
    written to ``image_root/images/<source>/<query_id>_<role>.<ext>``. A file already present at the target path is
    kept as it is (it is the same image when the dataset came from that root). Every row is validated before it is
    written; rows are streamed (the file is written record by record, as ``json.dump(records, indent=4)`` would
    write it, and renamed into place at the end), so the dataset never has to fit in memory;
    ``query_id``, ``source`` and ``neg_similarities`` are not part of the authors' format and are dropped.
    """
    missing = [name for name in MINED_FEATURES if name not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset lacks mined-format column(s) {missing}")
    rows = iter_undecoded_rows(dataset)
    root = os.fspath(image_root)
    out = Path(json_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    bar = tqdm(rows, total=len(dataset), desc="write mined JSON", disable=not show_progress_bar)
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write("[")
        for index, row in enumerate(bar):
            validate_mined_record(row, index, num_negatives=num_negatives)
            record = json.dumps(_authors_record(row, index, root), ensure_ascii=False, indent=4)
            handle.write(("\n    " if index == 0 else ",\n    ") + record.replace("\n", "\n    "))
        handle.write("\n]" if len(dataset) else "]")
    tmp.replace(out)
    return out
