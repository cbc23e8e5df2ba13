"""Yes/No pairs for training a judge (the pairwise half of the UniME-V2-Reranker objective, docs/method.md §1–2).

From any query–positive dataset (mini-MMEB / MMEB-train style: ``qry``, ``qry_image``, ``pos_text``, ``pos_image``,
``dataset``) every query gives

* one **"Yes"** pair: (query, its own positive), and
* ``num_negatives`` **"No"** pairs: (query, the positive of another record of the same ``dataset``), drawn seeded
  from the in-pool positives that differ from the query's own positive (same text *and* same image counts as the
  same positive; repeated positives, e.g. classification labels, are drawn at most once).

The negatives are *in-pool*: the same kind of candidates hard-negative mining retrieves, with no retrieval and no
oracle. They can contain a false negative (another record's positive that happens to meet the query); like the
authors' reranker data, the pairs do not correct for that — the mini-MMEB oracle is never a training signal.

The judge reads the text without the MMEB image marker (``<|image_1|>`` and the newline after it; the image goes
into its own slot of the prompt) and otherwise as it is, exactly as the mining pipeline's judge reads it
(:class:`~unime_v2.modeling_unime_v2.processing_unime_v2_reranker.UniMEV2RerankerProcessor`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from unime_v2.modeling_unime_v2.processing_unime_v2_reranker import remove_image_markers

from ..mining.records import RecordColumns
from ..storage import item_key


YES, NO = 1, 0


def judge_text(text: str | None) -> str:
    """The text the judge reads: MMEB image markers removed, the rest as it is (trailing newlines included)."""
    return remove_image_markers(text)


# The judge's pairs read the same columns as mining does (mini-MMEB / MMEB-train names by default).
PairColumns = RecordColumns


@dataclass(frozen=True)
class JudgePair:
    """One judge example: record ``query_index``'s query with record ``candidate_index``'s positive."""

    query_index: int
    candidate_index: int
    label: int  # YES (1) or NO (0)
    source: str


def _undecoded(records: Any, columns: Sequence[str]) -> Any:
    """``records`` with its ``Image`` columns left undecoded (a cheap metadata change), for fingerprints."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        return records
    if not isinstance(records, datasets.Dataset):
        return records
    for name in columns:
        feature = records.features.get(name)
        if isinstance(feature, datasets.Image) and feature.decode:
            records = records.cast_column(name, datasets.Image(decode=False))
    return records


def _column(records: Any, name: str) -> list:
    if hasattr(records, "column_names"):
        if name not in records.column_names:
            raise KeyError(f"the dataset has no column {name!r} (columns: {records.column_names})")
        return list(records[name])
    try:
        return [row[name] for row in records]
    except KeyError as error:
        raise KeyError(f"a record has no field {name!r}") from error


def positive_keys(records: Any, columns: PairColumns = PairColumns()) -> list[str]:
    """One key per record: equal keys <=> same positive text and same positive image."""
    raw = _undecoded(records, [columns.pos_image])
    texts = _column(raw, columns.pos_text)
    images = _column(raw, columns.pos_image)
    return [item_key(t, i) for t, i in zip(texts, images)]


def _describe(records: Any, index: int, columns: PairColumns, source: str) -> str:
    """``record 3 (dataset 'X', query '…')`` for error messages."""
    text = _column_value(records, index, columns.query_text)
    return f"record {index} (dataset {source!r}, query {judge_text(text)[:60]!r})"


def _column_value(records: Any, index: int, name: str) -> Any:
    row = records[index]
    return row.get(name) if isinstance(row, Mapping) else None


class JudgePairDataset(torch.utils.data.Dataset):
    """Yes/No judge pairs over a query–positive dataset; items are decoded lazily.

    Each item: ``{"query": {"text", "image"}, "candidate": {"text", "image"}, "label": 1 | 0, "query_index",
    "candidate_index", "source"}`` — ``query`` / ``candidate`` are what ``UniMEV2Reranker.score`` takes.
    """

    def __init__(self, records: Any, pairs: Sequence[JudgePair], columns: PairColumns = PairColumns()):
        self.records = records
        self.pairs = list(pairs)
        self.columns = columns

    def __len__(self) -> int:
        return len(self.pairs)

    def query_item(self, index: int) -> dict[str, Any]:
        """Record ``index``'s query as a judge item."""
        row = self.records[index]
        return {"text": judge_text(row[self.columns.query_text]), "image": row[self.columns.query_image]}

    def positive_item(self, index: int) -> dict[str, Any]:
        """Record ``index``'s positive as a judge item."""
        row = self.records[index]
        return {"text": judge_text(row[self.columns.pos_text]), "image": row[self.columns.pos_image]}

    def __getitem__(self, i: int) -> dict[str, Any]:
        pair = self.pairs[i]
        return {
            "query": self.query_item(pair.query_index),
            "candidate": self.positive_item(pair.candidate_index),
            "label": pair.label,
            "query_index": pair.query_index,
            "candidate_index": pair.candidate_index,
            "source": pair.source,
        }

    @property
    def num_positive(self) -> int:
        return sum(p.label == YES for p in self.pairs)

    @property
    def num_negative(self) -> int:
        return sum(p.label == NO for p in self.pairs)

    def by_query(self) -> dict[int, list[JudgePair]]:
        """Pairs grouped by query record, in order (the positive first)."""
        groups: dict[int, list[JudgePair]] = {}
        for pair in self.pairs:
            groups.setdefault(pair.query_index, []).append(pair)
        return groups

    def validate(self) -> None:
        """Raise ``ValueError`` unless there are Yes and No pairs and every query record has both."""
        if not self.pairs:
            raise ValueError("the judge pair dataset is empty")
        for query, pairs in self.by_query().items():
            labels = {p.label for p in pairs}
            if labels != {YES, NO}:
                missing = "negative ('No')" if NO not in labels else "positive ('Yes')"
                where = _describe(self.records, query, self.columns, pairs[0].source)
                raise ValueError(
                    f"the judge pair dataset has no {missing} pair for {where}; every query needs its positive and "
                    f"at least one in-pool negative (pairs: {self.num_positive} Yes, {self.num_negative} No)"
                )


def check_pair_dataset(dataset: Any) -> None:
    """Validate a pair dataset before training: :class:`JudgePairDataset`, or any dataset with a ``label`` column
    (and optionally ``query_index``). Raises ``ValueError`` naming the record without a Yes or a No pair."""
    if isinstance(dataset, JudgePairDataset):
        dataset.validate()
        return
    names = getattr(dataset, "column_names", None)
    if not names or "label" not in names:
        return  # nothing cheap to check (e.g. a generic torch dataset); the collator checks labels per batch
    labels = list(dataset["label"])
    queries = list(dataset["query_index"]) if "query_index" in names else [None] * len(labels)
    seen: dict[Any, set[int]] = {}
    first_row: dict[Any, int] = {}
    for row, (query, label) in enumerate(zip(queries, labels)):
        seen.setdefault(query, set()).add(int(label))
        first_row.setdefault(query, row)
    if not labels:
        raise ValueError("the judge pair dataset is empty")
    for query, found in seen.items():
        if found != {YES, NO}:
            missing = "negative ('No')" if NO not in found else "positive ('Yes')"
            where = f"query record {query}" if query is not None else "the whole dataset"
            raise ValueError(
                f"the judge pair dataset has no {missing} pair for {where} (first row {first_row[query]})"
            )


def build_judge_pairs(
    records: Any,
    num_negatives: int = 1,
    seed: int = 0,
    query_indices: Sequence[int] | None = None,
    pool_indices: Sequence[int] | None = None,
    columns: PairColumns = PairColumns(),
) -> JudgePairDataset:
    """Build the Yes/No pairs of ``records`` (a ``datasets.Dataset`` or a list of dicts).

    Args:
        records: query–positive records (see :class:`PairColumns` for the column names).
        num_negatives: "No" pairs per query (fewer where the pool has fewer distinct other positives).
        seed: the draw of record ``i`` depends only on ``(seed, i)``, not on the other queries.
        query_indices: the records used as queries (default: all).
        pool_indices: the records whose positives form the candidate pool (default: ``query_indices``), e.g. a
            held-out split scores its queries against held-out positives only.
        columns: column names.

    Raises:
        ValueError: ``num_negatives < 1``, or a query whose pool (same ``dataset``, other positive) is empty — the
            message names the record.
    """
    if isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 1:
        raise ValueError(f"num_negatives must be an int >= 1, got {num_negatives!r}")
    n = len(records)
    queries = list(range(n)) if query_indices is None else [int(i) for i in query_indices]
    pool = queries if pool_indices is None else [int(i) for i in pool_indices]
    for i in (*queries, *pool):
        if not 0 <= i < n:
            raise IndexError(f"record index {i} out of range for {n} records")
    sources = [str(s) for s in _column(records, columns.source)]
    keys = positive_keys(records, columns)

    # distinct positives per source, in record order (first record of each key represents it)
    distinct: dict[str, list[int]] = {}
    position: dict[str, dict[str, int]] = {}
    for j in pool:
        src, key = sources[j], keys[j]
        slots = position.setdefault(src, {})
        if key not in slots:
            slots[key] = len(distinct.setdefault(src, []))
            distinct[src].append(j)

    pairs: list[JudgePair] = []
    for i in queries:
        src = sources[i]
        members = distinct.get(src, [])
        own = position.get(src, {}).get(keys[i])
        available = len(members) - (own is not None)
        if available <= 0:
            where = _describe(records, i, columns, src)
            raise ValueError(
                f"{where} has an empty candidate pool: no other record of dataset {src!r} in the pool has a "
                f"different positive, so no 'No' pair can be drawn (pool: {len(members)} distinct positive(s))"
            )
        k = min(num_negatives, available)
        rng = np.random.default_rng([seed, i])
        draw = rng.choice(len(members), size=min(k + 1, len(members)), replace=False).tolist()
        chosen = [slot for slot in draw if slot != own][:k]
        pairs.append(JudgePair(i, i, YES, src))
        pairs.extend(JudgePair(i, members[slot], NO, src) for slot in chosen)
    return JudgePairDataset(records, pairs, columns)


def split_queries(
    records: Any, heldout_fraction: float = 0.2, seed: int = 0, columns: PairColumns = PairColumns()
) -> tuple[list[int], list[int]]:
    """Seeded split of record indices into (train, held-out), stratified by ``dataset`` (every source in both)."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}")
    sources = [str(s) for s in _column(records, columns.source)]
    by_source: dict[str, list[int]] = {}
    for i, src in enumerate(sources):
        by_source.setdefault(src, []).append(i)
    rng = np.random.default_rng(seed)
    train, heldout = [], []
    for src in sorted(by_source):
        members = np.array(by_source[src])
        rng.shuffle(members)
        cut = int(round(len(members) * heldout_fraction))
        cut = min(max(cut, 1), len(members) - 1) if len(members) > 1 else 0
        heldout.extend(members[:cut].tolist())
        train.extend(members[cut:].tolist())
    return sorted(train), sorted(heldout)


JUDGE_PAIRS_MINI_MMEB = "judge_pairs:mini_mmeb"
"""Spec string of :func:`mini_mmeb_judge_pairs` as a reranker's ``train_data`` (the tiny judge recipe)."""


@dataclass
class MiniMMEBJudgePairs:
    """Judge pairs of mini-MMEB train facts and what measures a judge trained on them against the oracle.

    Attributes:
        pairs: the training pairs (queries of ``train_ids`` only, negatives from their positives).
        records: the mini-MMEB train records the pairs index.
        train_ids, heldout_ids: record indices of the training and the held-out queries (stratified by dataset).
        test_rows: mini-MMEB test rows (ground truth + hard distractors) of the same build.
    """

    pairs: JudgePairDataset
    records: Any
    train_ids: list[int]
    heldout_ids: list[int]
    test_rows: Any


def mini_mmeb_judge_pairs(
    seed: int,
    train_per_task: int,
    num_negatives: int = 1,
    heldout_fraction: float = 0.0,
    split_seed: int = 0,
    test_per_task: int = 1,
    num_candidates: int = 2,
    extra: Mapping[str, Any] | None = None,
) -> MiniMMEBJudgePairs:
    """Yes/No pairs (:func:`build_judge_pairs`) of a mini-MMEB build's train records; held-out queries and its test
    rows stay out of them. The mini-MMEB oracle never labels a pair: it only measures.

    Args:
        seed: the mini-MMEB build's seed.
        train_per_task: train records per task.
        num_negatives: "No" pairs per "Yes" pair.
        heldout_fraction: train records held out of the pairs (0: none), split with ``split_seed`` (which also
            seeds the negatives' draw).
        test_per_task, num_candidates: test rows per task and candidates per test row (ground truth included);
            the build's train queries exclude the test queries' facts, so both shape the train records too.
        extra: more :class:`~unime_v2.data_builders.mini_mmeb.MiniMMEBConfig` fields, e.g. ``tasks`` (default: the
            in-distribution tasks, the only ones with train records).
    """
    from ..mini_mmeb import MiniMMEBConfig, build_mini_mmeb
    from ..mini_mmeb.tasks import default_tasks

    extra = dict(extra or {})
    names = list(extra.pop("tasks", None) or [task.name for task in default_tasks() if not task.ood])
    config = MiniMMEBConfig(
        **{
            "seed": seed,
            "tasks": names,
            "train_pairs": train_per_task * len(names),
            "eval_queries": max(test_per_task, 1),
            "num_candidates": max(num_candidates, 2),
            "caption_images": 0,
            "long_caption_images": 0,
            "compositional_per_subset": 0,
            **extra,
        }  # fmt: skip
    )
    built = build_mini_mmeb(config)["mmeb"]
    records = built["train"]
    if heldout_fraction > 0:
        train_ids, heldout_ids = split_queries(records, heldout_fraction, seed=split_seed)
    else:
        train_ids, heldout_ids = list(range(len(records))), []
    pairs = build_judge_pairs(records, num_negatives, seed=split_seed, query_indices=train_ids)
    return MiniMMEBJudgePairs(pairs, records, train_ids, heldout_ids, built["test"])
