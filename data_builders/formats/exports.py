"""A mined dataset written for the tools people train text embedders with (docs/mining.md, "Exports").

* ``sentence_transformers``: a Parquet folder (``train.parquet``) with the columns of sentence-transformers'
  ``DistillKLDivLoss``, in its order: ``query``, ``positive``, ``negative_1`` … ``negative_k``, ``label`` (the judge
  scores ``[s₊, s₁ … s_k]``). Nothing else is a column: that trainer feeds every other column to the loss. A query
  with several positives (``more_pos_*``) gives one row per positive, each with that positive's score and the
  query's negatives: the layout of sentence-transformers' own ``mine_hard_negatives`` (docs/mining.md, "Exports").
* ``flagembedding``: FlagEmbedding's fine-tuning JSONL (``train.jsonl``), one line per query: ``query``, ``pos``
  (every positive), ``neg``, ``pos_scores``, ``neg_scores`` (the judge scores, aligned with ``pos``/``neg``, for
  its knowledge distillation) and ``prompt`` when one is given.

Both tools read text. ``images`` decides the rows with an image item: ``skip`` (default) leaves them out (counted);
``text`` keeps them with their texts (an image-only item becomes ``""``) and, in the JSONL only, adds the image
paths relative to the image root as ``query_image``, ``pos_images`` (aligned with ``pos``), ``neg_images`` (``""`` for no image), keys
FlagEmbedding does not read. Fallback rows (every negative a random draw scored 1.0) are left out unless
``keep_fallback_rows``: as teacher scores they claim the negatives match better than the positive.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, List, Value

from unime_v2.data_builders.storage import atomic_directory

from .mined import MINED_FEATURES, MORE_POSITIVE_FEATURES, has_image, is_fallback_row, iter_undecoded_rows


logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("sentence_transformers", "flagembedding")
IMAGE_POLICIES = ("skip", "text")
EXPORT_DIRS = {"sentence_transformers": "sentence_transformers", "flagembedding": "flagembedding"}
"""The folder of each export under a mining run's ``output_dir``."""


@dataclass
class ExportSummary:
    """What an export wrote: rows written, mined rows (queries) written and left out and why, the file."""

    format: str
    path: str
    rows: int = 0
    queries: int = 0
    skipped_image_rows: int = 0
    skipped_fallback_rows: int = 0
    num_negatives: int = 0
    notes: list[str] = field(default_factory=list)


def parse_formats(value: str | Sequence[str] | None) -> list[str]:
    """Export formats from a list or a comma-separated string (``""``/``None``/``none``: none); unknown ones raise."""
    if value is None:
        return []
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [name.strip() for name in names if name.strip() and name.strip().lower() != "none"]
    unknown = [name for name in names if name not in EXPORT_FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {list(EXPORT_FORMATS)}")
    return names


def _row_has_image(row: Mapping[str, Any]) -> bool:
    items = [row["query_image"], row["pos_image"], *row["neg_images"], *(row.get("more_pos_images") or [])]
    return any(map(has_image, items))


def _positives(row: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """``(text, image path, judge score)`` of each positive of a mined row: ``pos_*`` first, then ``more_pos_*``."""
    first = (row["pos_text"], row["pos_image_path"], float(row["pos_score"]))
    texts, paths, scores = (row.get(f"more_pos_{name}") or [] for name in ("texts", "image_paths", "scores"))
    return [first, *((text, path, float(score)) for text, path, score in zip(texts, paths, scores))]


def _kept_rows(
    dataset: datasets.Dataset, summary: ExportSummary, images: str, keep_fallback_rows: bool
) -> Iterator[dict[str, Any]]:
    """The rows to export (undecoded, with ``more_pos_*`` when the dataset has them), counting in ``summary`` the
    queries kept and those left out."""
    if images not in IMAGE_POLICIES:
        raise ValueError(f"images={images!r}; choose one of {IMAGE_POLICIES}")
    more = [name for name in MORE_POSITIVE_FEATURES if name in dataset.column_names]
    for row in iter_undecoded_rows(dataset.select_columns([*MINED_FEATURES, *more])):
        if not keep_fallback_rows and is_fallback_row(row["neg_scores"]):
            summary.skipped_fallback_rows += 1
        elif images == "skip" and _row_has_image(row):
            summary.skipped_image_rows += 1
        else:
            summary.queries += 1
            yield row


def _num_negatives(dataset: datasets.Dataset, num_negatives: int | None) -> int:
    """``num_negatives``, or the fewest negatives any row stores (every row must have that many)."""
    fewest = min((len(n) for n in dataset["neg_scores"]), default=0)
    k = fewest if num_negatives is None else num_negatives
    if k < 1 or k > fewest:
        raise ValueError(f"num_negatives={num_negatives}: choose 1..{fewest} (the fewest negatives a row stores)")
    return k


def _log(summary: ExportSummary) -> ExportSummary:
    left_out = summary.skipped_image_rows + summary.skipped_fallback_rows
    if left_out:
        logger.warning(
            f"{summary.format} export: {summary.rows} rows written to {summary.path}; left out "
            f"{summary.skipped_image_rows} row(s) with images (images='skip') and "
            f"{summary.skipped_fallback_rows} fallback row(s)"
        )
    return summary


def sentence_transformers_features(num_negatives: int) -> Features:
    """The columns of the sentence-transformers export, in ``DistillKLDivLoss``'s order."""
    columns = {"query": Value("string"), "positive": Value("string")}
    columns.update({f"negative_{j + 1}": Value("string") for j in range(num_negatives)})
    return Features({**columns, "label": List(Value("float32"))})


def _st_records(row: Mapping[str, Any], k: int) -> list[dict[str, Any]]:
    """The sentence-transformers rows of one mined row: one per positive, the same negatives in each."""
    negatives = {f"negative_{j + 1}": row["neg_texts"][j] for j in range(k)}
    scores = [float(s) for s in row["neg_scores"][:k]]
    return [
        {"query": row["query_text"], "positive": text, **negatives, "label": [score, *scores]}
        for text, _, score in _positives(row)
    ]


def _st_batches(rows: Iterator[dict[str, Any]], k: int, size: int = 1024) -> Iterator[dict[str, list[Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch += _st_records(row, k)
        if len(batch) >= size:
            yield {key: [r[key] for r in batch] for key in batch[0]}
            batch = []
    if batch:
        yield {key: [r[key] for r in batch] for key in batch[0]}


def to_sentence_transformers(
    dataset: datasets.Dataset,
    directory: str | os.PathLike,
    images: str = "skip",
    keep_fallback_rows: bool = False,
    num_negatives: int | None = None,
) -> ExportSummary:
    """Write ``directory/train.parquet`` for sentence-transformers' ``DistillKLDivLoss`` (module docstring).

    Load it with ``datasets.load_dataset("parquet", data_files=".../train.parquet", split="train")``.
    ``num_negatives``: the first k stored negatives (default: all, the fewest any row has). ``rows`` counts the
    Parquet rows (one per positive), ``queries`` the mined rows they come from.
    """
    k = _num_negatives(dataset, num_negatives)
    summary = ExportSummary("sentence_transformers", str(Path(directory) / "train.parquet"), num_negatives=k)
    features = sentence_transformers_features(k)
    rows = _kept_rows(dataset, summary, images, keep_fallback_rows)
    with atomic_directory(Path(directory), replace=True) as tmp:
        tmp.mkdir(parents=True)
        with pq.ParquetWriter(str(Path(tmp) / "train.parquet"), features.arrow_schema) as writer:
            for batch in _st_batches(rows, k):
                writer.write_table(pa.Table.from_pydict(batch, schema=features.arrow_schema))
                summary.rows += len(batch["query"])
    return _log(summary)


def _flag_record(row: Mapping[str, Any], k: int, images: str, prompt: str | None) -> dict[str, Any]:
    positives = _positives(row)
    record: dict[str, Any] = {
        "query": row["query_text"],
        "pos": [text for text, _, _ in positives],
        "neg": list(row["neg_texts"][:k]),
        "pos_scores": [score for _, _, score in positives],
        "neg_scores": [float(s) for s in row["neg_scores"][:k]],
    }
    if prompt is not None:
        record["prompt"] = prompt
    if images == "text":
        record["query_image"] = row["query_image_path"]
        record["pos_images"] = [path for _, path, _ in positives]
        record["neg_images"] = list(row["neg_image_paths"][:k])
    return record


def to_flagembedding(
    dataset: datasets.Dataset,
    directory: str | os.PathLike,
    images: str = "skip",
    keep_fallback_rows: bool = False,
    num_negatives: int | None = None,
    prompt: str | None = None,
) -> ExportSummary:
    """Write ``directory/train.jsonl`` in FlagEmbedding's fine-tuning format (module docstring).

    ``prompt``: the query instruction FlagEmbedding prepends (its ``query_instruction_format``); MMEB-style queries
    carry theirs inside the text, so none is written by default.
    """
    k = _num_negatives(dataset, num_negatives)
    summary = ExportSummary("flagembedding", str(Path(directory) / "train.jsonl"), num_negatives=k)
    with atomic_directory(Path(directory), replace=True) as tmp:
        tmp.mkdir(parents=True)
        with open(Path(tmp) / "train.jsonl", "w", encoding="utf-8") as handle:
            for row in _kept_rows(dataset, summary, images, keep_fallback_rows):
                handle.write(json.dumps(_flag_record(row, k, images, prompt), ensure_ascii=False) + "\n")
                summary.rows += 1
    return _log(summary)


def export_mined(
    dataset: datasets.Dataset,
    output_dir: str | os.PathLike,
    formats: str | Sequence[str],
    images: str = "skip",
    keep_fallback_rows: bool = False,
) -> dict[str, dict[str, Any]]:
    """Write each export of ``formats`` to ``output_dir/<format>/``; returns their summaries (for the report)."""
    writers = {"sentence_transformers": to_sentence_transformers, "flagembedding": to_flagembedding}
    out = {}
    for name in parse_formats(formats):
        target = Path(output_dir) / EXPORT_DIRS[name]
        out[name] = asdict(writers[name](dataset, target, images=images, keep_fallback_rows=keep_fallback_rows))
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """``python -m unime_v2.data_builders.formats.exports MINED OUTPUT_DIR --formats ...`` (docs/mining.md)."""
    import argparse

    from .training_records import load_mined_dataset

    parser = argparse.ArgumentParser(description="Export a mined dataset for sentence-transformers / FlagEmbedding.")
    parser.add_argument("mined", help="a mined dataset: save_to_disk or Parquet folder, Hub id, or authors' .json")
    parser.add_argument("output_dir", help="the exports go to OUTPUT_DIR/<format>/")
    parser.add_argument("--formats", default=",".join(EXPORT_FORMATS), help="comma-separated: %(default)s")
    parser.add_argument("--images", choices=IMAGE_POLICIES, default="skip", help="rows with images (default skip)")
    parser.add_argument("--keep_fallback_rows", action="store_true", help="also export fallback rows")
    parser.add_argument("--image_root", default=None, help="image root of an authors' JSON")
    parser.add_argument("--split", default="train")
    args = parser.parse_args(argv)
    dataset = load_mined_dataset(args.mined, args.split, args.image_root)
    summaries = export_mined(dataset, args.output_dir, args.formats, args.images, args.keep_fallback_rows)
    print(json.dumps(summaries, indent=2))
    return summaries


if __name__ == "__main__":
    main()
