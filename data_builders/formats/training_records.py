"""Training records for the UniME-V2 embedder, read alike from the authors' JSON and from our mined datasets.

A record is ``{"query": item, "positive": item, "negatives": [item × k], "scores": [s+, s1..sk], ...}`` where an
item is ``{"text": str, "image": PIL image | None}`` (the embedder's item format). The k negatives are chosen
from the stored ones (10 in both formats):

* ``first`` — the first k, in stored order (the authors' loader; their mining stores the hardest first);
* ``random`` — k distinct ones drawn with a generator seeded by ``(seed, record index)``, kept in stored order:
  the same record always gets the same negatives, whichever process, epoch or resumed run reads it.

Bad input is never skipped. At construction every record is checked (number of negatives, judge scores finite and
in [0, 1], texts, images present) and the first bad one raises a ``ValueError``/``FileNotFoundError`` naming it.
A record with fewer than k negatives is an error unless ``pad_policy="repeat"``, which repeats its negatives in
order up to k (as the authors' mining pads to 10), logs a warning and counts the records in ``num_padded``.

Fallback rows (every negative a random draw scored 1.0: the sampler's fallback, docs/mining.md "Judge health") are
counted in ``fallback_records`` and logged with their share; ``drop_fallback_rows=True`` leaves them out.

Items whose text has an image marker but which have no image (MMEB-train's WebQA queries: ``<|image_1|>`` with an
empty path) are counted per dataset in ``markers_without_image`` and logged; the embedder's processor decides what
they become (by default the backbone's image token as text, what the released checkpoints saw; docs/method.md §5).
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from .mined import (
    MINED_FEATURES,
    NUM_STORED_NEGATIVES,
    from_authors_json,
    has_image,
    is_fallback_row,
    iter_undecoded_rows,
    make_mined_row,
    repeat_to,
    validate_mined_record,
)


logger = logging.getLogger(__name__)

NEGATIVE_SELECTIONS = ("first", "random")
_MARKER = re.compile(r"<\|image_\d+\|>")
PAD_POLICIES = ("error", "repeat")


def select_negatives(
    num_stored: int, k: int, selection: str = "first", seed: int = 0, record_index: int = 0
) -> list[int]:
    """Indices of the k negatives to use out of ``num_stored`` (k ≤ num_stored; see the module docstring)."""
    if k > num_stored:
        raise ValueError(f"cannot select {k} of {num_stored} negatives")
    if selection == "first":
        return list(range(k))
    if selection == "random":
        rng = np.random.default_rng([seed, record_index])
        return sorted(rng.choice(num_stored, size=k, replace=False).tolist())
    raise ValueError(f"negative_selection={selection!r}; choose one of {NEGATIVE_SELECTIONS}")


def _image_missing(image: Mapping[str, Any] | None) -> str | None:
    """The missing file of an undecoded image value, or ``None`` when the image can be read."""
    if image is None or image.get("bytes"):
        return None
    path = image.get("path")
    return None if path and os.path.isfile(path) else (path or "<no path, no bytes>")


def _markers_without_image(row: Mapping[str, Any]) -> int:
    """How many of the row's items (query, positive, negatives) have an image marker in their text but no image."""
    pairs = [(row["query_text"], row["query_image"]), (row["pos_text"], row["pos_image"])]
    pairs += list(zip(row["neg_texts"], row["neg_images"]))
    return sum(bool(_MARKER.search(text)) and not has_image(image) for text, image in pairs)


def _check_images(row: Mapping[str, Any], index: int, where: str) -> None:
    images = [("query", row["query_image"]), ("positive", row["pos_image"])]
    images += [(f"negative {j}", image) for j, image in enumerate(row["neg_images"])]
    for role, image in images:
        missing = _image_missing(image)
        if missing is not None:
            raise FileNotFoundError(f"{where}: record {index}: {role} image file {missing!r} does not exist")


class TrainingRecords(torch.utils.data.Dataset):
    """Map-style dataset of training records over a mined dataset (:data:`MINED_FEATURES`).

    Args:
        mined: a dataset with the mined-format columns (:func:`from_authors_json`, ``load_from_disk``, the Hub).
        num_hard_negatives: k, the negatives per record (paper: 8).
        negative_selection: ``first`` or ``random`` (seeded per record).
        pad_policy: ``error`` (default) or ``repeat`` for records with fewer than k negatives.
        seed: seed of the ``random`` selection.
        check_images: verify at construction that every referenced image file exists.
        name: how errors name the data (a file name or Hub id).
        drop_fallback_rows: leave out the fallback rows (counted and logged either way).
    """

    def __init__(
        self,
        mined: datasets.Dataset,
        num_hard_negatives: int = 8,
        negative_selection: str = "first",
        pad_policy: str = "error",
        seed: int = 0,
        check_images: bool = True,
        name: str = "mined dataset",
        drop_fallback_rows: bool = False,
    ):
        if negative_selection not in NEGATIVE_SELECTIONS:
            raise ValueError(f"negative_selection={negative_selection!r}; choose one of {NEGATIVE_SELECTIONS}")
        if pad_policy not in PAD_POLICIES:
            raise ValueError(f"pad_policy={pad_policy!r}; choose one of {PAD_POLICIES}")
        if num_hard_negatives < 0:
            raise ValueError(f"num_hard_negatives must be >= 0, got {num_hard_negatives}")
        missing = [column for column in MINED_FEATURES if column not in mined.column_names]
        if missing:
            raise ValueError(f"{name}: not a mined dataset, missing column(s) {missing}")
        self.mined = mined
        self.k = num_hard_negatives
        self.selection = negative_selection
        self.pad_policy = pad_policy
        self.seed = seed
        self.name = name
        self.padded_records: list[int] = []
        self.fallback_records: list[int] = []
        self.dropped_fallback_rows = False
        self.markers_without_image: dict[str, int] = {}
        self._validate(check_images)
        self._handle_fallbacks(drop_fallback_rows)

    @property
    def num_padded(self) -> int:
        """How many records had fewer than k negatives and were padded by repetition."""
        return len(self.padded_records)

    def _validate(self, check_images: bool) -> None:
        rows = iter_undecoded_rows(self.mined.select_columns(list(MINED_FEATURES)))
        short: list[tuple[int, int]] = []
        bar = tqdm(rows, total=len(self.mined), desc=f"check {self.name}", disable=len(self.mined) < 10_000)
        for index, row in enumerate(bar):
            validate_mined_record(row, index, num_negatives=None, where=self.name)
            if check_images:
                _check_images(row, index, self.name)
            if len(row["neg_texts"]) < self.k:
                short.append((index, len(row["neg_texts"])))
            if is_fallback_row(row["neg_scores"]):
                self.fallback_records.append(index)
            orphans = _markers_without_image(row)
            if orphans:
                source = row.get("source") or "?"
                self.markers_without_image[source] = self.markers_without_image.get(source, 0) + orphans
        if short and self.pad_policy == "error":
            index, count = short[0]
            others = f" (and {len(short) - 1} more record(s))" if len(short) > 1 else ""
            raise ValueError(
                f"{self.name}: record {index} has {count} hard negatives, fewer than num_hard_negatives={self.k}"
                f"{others}; fix the data, lower num_hard_negatives, or choose pad_policy='repeat'"
            )
        self.padded_records = [index for index, _ in short]
        if self.markers_without_image:
            logger.warning(
                f"{self.name}: items with an image marker but no image, per dataset: {self.markers_without_image} "
                "(the embedder's marker_without_image decides: image_token feeds the marker as the image token, "
                "no pixels, as the authors' code did; error refuses them)"
            )
        if short:
            logger.warning(
                f"{self.name}: pad_policy='repeat': {len(short)} record(s) have fewer than {self.k} hard negatives "
                f"and are padded by repeating their negatives in order (first: records {self.padded_records[:10]})"
            )

    @property
    def num_fallback(self) -> int:
        """How many rows of the mined dataset are fallback rows (before any drop; module docstring)."""
        return len(self.fallback_records)

    def _handle_fallbacks(self, drop: bool) -> None:
        """Warn about fallback rows with their count and share; with ``drop``, leave them out."""
        if not self.fallback_records:
            return
        total = len(self.mined)
        share = len(self.fallback_records) / total
        action = "dropped (drop_fallback_rows)" if drop else "kept; --drop_fallback_rows true leaves them out"
        logger.warning(
            f"{self.name}: {len(self.fallback_records)} of {total} rows ({share:.1%}) are fallback rows (no candidate "
            f"survived the false-negative filter: random negatives scored 1.0, above the positive); {action} "
            f"(first: records {self.fallback_records[:10]})"
        )
        if drop:
            fallback = set(self.fallback_records)
            kept = [i for i in range(total) if i not in fallback]
            if not kept:
                raise ValueError(
                    f"{self.name}: every row is a fallback row; drop_fallback_rows leaves nothing to train on"
                )
            position = {old: new for new, old in enumerate(kept)}
            self.mined = self.mined.select(kept)
            self.padded_records = [position[i] for i in self.padded_records if i in position]
            self.dropped_fallback_rows = True

    def negative_indices(self, index: int, num_stored: int) -> list[int]:
        """Which stored negatives record ``index`` uses, in the order they are fed."""
        if num_stored >= self.k:
            return select_negatives(num_stored, self.k, self.selection, self.seed, index)
        return repeat_to(select_negatives(num_stored, num_stored, self.selection, self.seed, index), self.k)

    def __len__(self) -> int:
        return len(self.mined)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            row = self.mined[int(index)]
        except (FileNotFoundError, OSError) as error:
            raise type(error)(f"{self.name}: record {index}: cannot read an image: {error}") from error
        chosen = self.negative_indices(int(index), len(row["neg_texts"]))
        return {
            "query": {"text": row["query_text"], "image": row["query_image"]},
            "positive": {"text": row["pos_text"], "image": row["pos_image"]},
            "negatives": [{"text": row["neg_texts"][j], "image": row["neg_images"][j]} for j in chosen],
            "scores": [float(row["pos_score"])] + [float(row["neg_scores"][j]) for j in chosen],
            "record_index": int(index),
            "query_id": row["query_id"],
        }

    @classmethod
    def from_authors_json(
        cls, json_path: str | os.PathLike, image_root: str | os.PathLike, **kwargs: Any
    ) -> TrainingRecords:
        """Records from the authors' mined-negatives JSON and its image root (docs/method.md §5)."""
        mined = from_authors_json(json_path, image_root, num_negatives=None, check_images=True)
        kwargs.setdefault("name", os.fspath(json_path))
        return cls(mined, check_images=False, **kwargs)


def load_mined_dataset(
    source: str,
    split: str = "train",
    image_root: str | None = None,
    max_records: int | None = None,
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """Open a mined dataset, memory-mapped: an authors' ``.json`` (needs ``image_root``), a ``save_to_disk`` folder,
    a folder of Parquet files (mining with ``image_storage=reference``: images read from their files) or a Hub id."""
    if source.endswith(".json"):
        if image_root is None:
            raise ValueError(f"{source}: an authors' JSON needs its image root (train_image_root)")
        mined = from_authors_json(source, image_root, num_negatives=None)
    elif os.path.isdir(source) and not os.path.isfile(os.path.join(source, "state.json")):
        files = sorted(str(path) for path in Path(source).glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{source}: neither a save_to_disk folder nor Parquet files of a mined dataset")
        mined = datasets.Dataset.from_parquet(files, features=MINED_FEATURES, cache_dir=cache_dir)
    elif os.path.isdir(source):
        mined = datasets.load_from_disk(source)
    else:
        mined = datasets.load_dataset(source, split=split)
    if isinstance(mined, datasets.DatasetDict):
        if split not in mined:
            raise ValueError(f"{source}: no split {split!r}; it has {list(mined)}")
        mined = mined[split]
    if max_records is not None:
        mined = mined.select(range(min(max_records, len(mined))))
    return mined


def oracle_mined_dataset(
    mmeb_rows: datasets.Dataset, num_negatives: int = NUM_STORED_NEGATIVES, source_prefix: str = ""
) -> datasets.Dataset:
    """DEMO / TEST DATA ONLY: a mined-format dataset whose "judge scores" are mini-MMEB's ORACLE scores.

    Stands in for real MLLM-judge mining in the tiny recipes. Each MMEB-eval style row of mini-MMEB
    (ground truth at index 0, generated hard distractors and random candidates, each with its scene record)
    becomes one record: the positive is candidate 0, the negatives are the other candidates ranked by oracle score
    (hardest first), only those strictly below the positive's, repeated in order up to ``num_negatives`` when
    fewer; every score is :func:`~unime_v2.data_builders.mini_mmeb.builder.oracle_score`, the generator's exact match
    fraction. No model is involved, so this data says nothing about judge quality.
    """
    from ..mini_mmeb.builder import eval_candidates, oracle_score

    rows = []
    for index, row in enumerate(iter_undecoded_rows(mmeb_rows)):
        candidates = eval_candidates(row)
        scores = [oracle_score(row, candidate) for candidate in candidates]
        ranked = sorted(range(1, len(candidates)), key=lambda j: -scores[j])
        negatives = [j for j in ranked if scores[j] < scores[0]]
        if not negatives:
            raise ValueError(f"mini-MMEB row {index} ({row['dataset']}): no candidate scores below the positive")
        negatives = repeat_to(negatives, num_negatives) if len(negatives) < num_negatives else negatives
        negatives = negatives[:num_negatives]
        rows.append(
            make_mined_row(
                query_id=f"{row['dataset']}-{index}",
                source=f"{source_prefix}{row['dataset']}",
                query_text=row["qry_text"],
                query_image=row["qry_image"],
                pos_text=row["tgt_text"][0] or "",
                pos_image=row["tgt_image"][0],
                pos_score=scores[0],
                neg_texts=[row["tgt_text"][j] or "" for j in negatives],
                neg_images=[row["tgt_image"][j] for j in negatives],
                neg_scores=[scores[j] for j in negatives],
                num_negatives=num_negatives,
            )
        )
    return datasets.Dataset.from_list(rows, features=MINED_FEATURES)


ORACLE_MINI_MMEB_NAME = "mini-MMEB (ORACLE scores)"
"""The name of :func:`oracle_mini_mmeb` records in logs and cards."""

LABELS_MINI_MMEB_NAME = "mini-MMEB (training labels)"
"""The name of :func:`labelled_mini_mmeb` records in logs and cards."""

HELDOUT_RESERVE = 200
"""Held-out queries per task whose facts the ``labels:mini_mmeb`` training rows keep clear of (as the tiny VLM's
pretraining corpus does): every evaluation of the demo (32 rows per task at most) stays unseen."""


def labelled_negative_order(kinds: list[str], rng: random.Random) -> list[int]:
    """Indices 1.. of a training list in the order the judge's instruction data uses them: one-edit hard distractors
    and the other candidates (same-task targets of other facts, the in-pool kind) each shuffled, then interleaved two
    to one, so that a record's first negatives are mostly hard ones with in-pool ones among them."""
    from ..mini_mmeb import ONE_EDIT_KINDS

    hard = [j for j in range(1, len(kinds)) if kinds[j] in ONE_EDIT_KINDS]
    other = [j for j in range(1, len(kinds)) if kinds[j] not in ONE_EDIT_KINDS]
    rng.shuffle(hard)
    rng.shuffle(other)
    order: list[int] = []
    while hard or other:
        order += hard[:2] + other[:1]
        hard, other = hard[2:], other[1:]
    return order


def labelled_mined_dataset(
    mmeb_rows: datasets.Dataset, num_negatives: int = NUM_STORED_NEGATIVES, seed: int = 0
) -> datasets.Dataset:
    """Mini-MMEB training rows as mined-format records scored by their LABELS only: the ground truth 1.0, every
    other candidate 0.0 (no oracle score, no model). The negatives are ordered by :func:`labelled_negative_order`
    (seeded per record), so a reranker trainer's "hardest first" picks (ties keep the stored order) are hard
    distractors and in-pool targets. The instruction data of the shipped tiny judge (docs/tiny_judge.md)."""
    rows = []
    for index, row in enumerate(iter_undecoded_rows(mmeb_rows)):
        order = labelled_negative_order(list(row["tgt_kind"]), random.Random(f"{seed}/labels/{index}"))
        if not order:
            raise ValueError(f"mini-MMEB row {index} ({row['dataset']}): its list holds no negative")
        negatives = (repeat_to(order, num_negatives) if len(order) < num_negatives else order)[:num_negatives]
        rows.append(
            make_mined_row(
                query_id=f"{row['dataset']}-{index}",
                source=row["dataset"],
                query_text=row["qry_text"],
                query_image=row["qry_image"],
                pos_text=row["tgt_text"][0] or "",
                pos_image=row["tgt_image"][0],
                pos_score=1.0,
                neg_texts=[row["tgt_text"][j] or "" for j in negatives],
                neg_images=[row["tgt_image"][j] for j in negatives],
                neg_scores=[0.0] * len(negatives),
                num_negatives=num_negatives,
            )
        )
    return datasets.Dataset.from_list(rows, features=MINED_FEATURES)


def labelled_mini_mmeb(
    seed: int, train_per_task: int, extra: Mapping[str, Any] | None = None, heldout_reserve: int = HELDOUT_RESERVE
) -> datasets.Dataset:
    """The ``labels:mini_mmeb`` training data: the training rows of
    :func:`~unime_v2.data_builders.mini_mmeb.splits.mini_mmeb_splits` (``train_per_task`` per IND task, facts
    disjoint from the first ``heldout_reserve`` held-out queries of every task) as :func:`labelled_mined_dataset`
    records. Labels only: what an instruct model's instruction data gives it."""
    from ..mini_mmeb.splits import mini_mmeb_splits

    train, _ = mini_mmeb_splits(seed, train_per_task, heldout_reserve, 2, extra)
    return labelled_mined_dataset(train, seed=seed)


def oracle_mini_mmeb(
    seed: int,
    train_per_task: int,
    test_per_task: int = 1,
    num_candidates: int = 2,
    extra: Mapping[str, Any] | None = None,
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The ``oracle:mini_mmeb`` training data (DEMO / TEST DATA ONLY, logged as such) and the held-out rows of the
    same split.

    The training rows of :func:`~unime_v2.data_builders.mini_mmeb.splits.mini_mmeb_splits` (``seed``,
    ``train_per_task`` queries per IND task, their facts disjoint from the first ``test_per_task`` held-out queries
    of each task, ``extra`` more ``MiniMMEBConfig`` fields) as :func:`oracle_mined_dataset` records; the held-out
    rows have ``num_candidates`` candidates each.
    """
    from ..mini_mmeb.splits import mini_mmeb_splits

    logger.warning(
        "train_data=oracle:mini_mmeb: the 'judge scores' are mini-MMEB ORACLE scores (exact match fractions from "
        "the generator), NOT MLLM-judge scores: demo data for the tiny recipes only"
    )
    train, heldout = mini_mmeb_splits(seed, train_per_task, test_per_task, num_candidates, extra)
    return oracle_mined_dataset(train), heldout


__all__ = [
    "HELDOUT_RESERVE",
    "LABELS_MINI_MMEB_NAME",
    "ORACLE_MINI_MMEB_NAME",
    "labelled_mined_dataset",
    "labelled_mini_mmeb",
    "labelled_negative_order",
    "oracle_mini_mmeb",
    "oracle_mined_dataset",
    "NUM_STORED_NEGATIVES",
    "NEGATIVE_SELECTIONS",
    "PAD_POLICIES",
    "TrainingRecords",
    "load_mined_dataset",
    "repeat_to",
    "select_negatives",
]
