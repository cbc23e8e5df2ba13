"""The MLLM-as-a-Judge hard-negative mining pipeline (docs/method.md §1–3), end to end, resumable and multi-process.

    records ─► embed queries + pool candidates (cached) ─► faiss retrieval (top_k, cos < δ, no positive)
            ─► judge scores, positive included (shards, split over processes) ─► sampler ─► mined dataset

:func:`mine` runs it under ``accelerate`` (``PartialState``): embedding chunks and judge shards are split between
processes with ``split_between_processes``; the main process merges, samples and writes the dataset
(:data:`~unime_v2.data_builders.formats.mined.MINED_FEATURES`), the report, the score histogram and, optionally, the
authors' JSON. Every stage result is saved under a fingerprint of what determines it, so a rerun or a run killed at
any moment and started again recomputes nothing that was saved, and produces the same dataset.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from datasets import Dataset, Features, List, Value, concatenate_datasets, load_dataset
from datasets import config as datasets_config
from datasets.arrow_writer import ArrowWriter
from tqdm.auto import tqdm

from unime_v2.data_builders.checkpoints import load_embedder
from unime_v2.data_builders.recipes import resolve_backbone
from unime_v2.data_builders.storage import atomic_directory
from unime_v2.modeling_unime_v2 import JUDGE_PROMPT
from unime_v2.modeling_unime_v2.processing_unime_v2 import rename_item_error

from ..formats.exports import export_mined
from ..formats.mined import MINED_FEATURES, MORE_POSITIVE_FEATURES, make_mined_row, to_authors_json
from ..formats.training_records import load_mined_dataset
from ..sources import read_dataset
from .config import MiningConfig
from .embedding_cache import EmbeddingCache
from .hard_negatives import HardNegativeSampler, SampledNegatives
from .models import checkpoint_fingerprint, load_judge
from .records import (
    CorpusColumns,
    CorpusTable,
    DigestKeys,
    Item,
    QueryRecord,
    RecordTable,
    distinct_rows,
    load_query_records,
)
from .report import (
    JudgeHealth,
    NegativeStatistics,
    log_judge_health,
    plot_score_histogram,
    score_summary,
    write_report,
)
from .retrieval import (
    QUERY_CHUNK,
    CandidatePools,
    RetrievalResult,
    build_pools,
    check_finite,
    pair_similarities,
    retrieve,
)
from .shards import ShardStore


ShardCallback = Callable[[int, Path], None]

CORPUS_FEATURES = Features({"neg_corpus_ids": List(Value("string"))})
"""The column a dataset mined from a corpus (``corpus``) gains: each negative's corpus id (``""`` for a negative
that is another query's positive, ``pool=corpus+positives``)."""


def mined_features(config: MiningConfig) -> Features:
    """:data:`MINED_FEATURES`, with :data:`MORE_POSITIVE_FEATURES` when the source has a positives column and
    :data:`CORPUS_FEATURES` when a corpus is mined."""
    features = dict(MINED_FEATURES)
    if config.columns.positives:
        features.update(MORE_POSITIVE_FEATURES)
    if config.corpus:
        features.update(CORPUS_FEATURES)
    return Features(features)


@dataclass
class MiningResult:
    """What the main process of :func:`mine` returns: the mined dataset, the report, where they were written."""

    dataset: Dataset
    report: dict[str, Any]
    output_dir: Path

    def push_to_hub(self, repo_id: str, token: str | None = None, private: bool | None = None) -> Any:
        """Push the dataset (parquet shards), its card (settings + report, ``configs:``) and the report files
        (``mining/``) to ``repo_id`` in one commit (docs/publishing.md); returns the ``CommitInfo``."""
        from unime_v2.hub_cards.publishing import stage_mined_dataset, upload_staged, upload_workspace

        with upload_workspace(self.output_dir / "dataset") as staging:
            staged = stage_mined_dataset(self.dataset, self.report, staging, repo_id, self.output_dir)
            return upload_staged(staged, repo_id, private=private, token=token, commit_message="Upload mined dataset")


# --------------------------------------------------------------------------------------------------- inputs


def load_source(config: MiningConfig) -> Dataset:
    """The split to mine: generated mini-MMEB, a Hub dataset (subsets concatenated), or anything
    :func:`~unime_v2.data_builders.sources.read_dataset` reads (JSON/JSONL/CSV/Parquet files and folders of them,
    ``save_to_disk`` folders). Data without a source column gets one: the file's name (the subset's on the Hub)."""
    source = config.columns.source
    if config.data == "mini_mmeb":
        from ..mini_mmeb.builder import MiniMMEBConfig, build_mini_mmeb

        dataset = build_mini_mmeb(MiniMMEBConfig(**config.mini_mmeb))["mmeb"][config.data_split]
    elif config.data_subsets and not Path(config.data).exists():
        parts = []
        for subset in config.data_subsets:
            part = load_dataset(config.data, subset, split=config.data_split)
            if source not in part.column_names:
                part = part.add_column(source, [subset] * len(part))
            parts.append(part)
        dataset = concatenate_datasets(parts)
    else:
        dataset = read_dataset(config.data, config.data_split, source_column=source)
    if source not in dataset.column_names:
        dataset = dataset.add_column(source, [Path(config.data.rstrip("/")).stem or "data"] * len(dataset))
    if config.max_queries is not None:
        dataset = dataset.select(range(min(config.max_queries, len(dataset))))
    return dataset


def load_corpus(config: MiningConfig) -> CorpusTable | None:
    """The corpus of candidates ``config.corpus`` names (any form :func:`read_dataset` reads), or ``None``."""
    if not config.corpus:
        return None
    dataset = read_dataset(config.corpus, config.corpus_split)
    columns = CorpusColumns(config.corpus_id_column, config.corpus_text_column, config.corpus_image_column)
    try:
        return CorpusTable(dataset, columns, config.corpus_image_root or config.image_root)
    except (KeyError, ValueError) as error:
        raise type(error)(f"corpus {config.corpus}: {error.args[0]}") from error


def _hash(*parts: Any) -> str:
    """SHA-256 of the JSON of ``parts``, encoded piece by piece (a list of 662k keys is never one string).

    :class:`DigestKeys` and iterators hash as the lists they hold, read one item at a time (never built as lists).
    """
    digest = hashlib.sha256()
    encoder = json.JSONEncoder(sort_keys=True, default=str)
    for part in parts:
        pieces = _list_pieces(part, encoder) if isinstance(part, (DigestKeys, Iterator)) else encoder.iterencode(part)
        for piece in pieces:
            digest.update(piece.encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def _list_pieces(items: Iterable[Any], encoder: json.JSONEncoder) -> Iterator[str]:
    """The pieces of ``encoder.iterencode(list(items))``, without the list."""
    yield "["
    for i, item in enumerate(items):
        if i:
            yield ", "
        yield from encoder.iterencode(item)
    yield "]"


# --------------------------------------------------------------------------------------------------- embedding


def _encoder(
    items: Sequence[Item],
    preloaded: Callable[[range], Any],
    name: Callable[[int], str],
    load: Callable[[], Any],
    batch_size: int,
    num_workers: int = 0,
):
    """``encode(range) -> array`` of ``items[range]`` with the (lazily loaded) embedder, reading them in one batch
    (``preloaded(range)``; batches prepared in ``num_workers`` processes); errors name the items."""

    def encode(chunk: range) -> np.ndarray:
        with preloaded(chunk):
            batch = [items[i].embedder_item(name(i)) for i in chunk]
        try:
            return load().encode(batch, batch_size=batch_size, num_workers=num_workers).float().numpy()
        except (ValueError, TypeError, FileNotFoundError) as error:
            renamed = rename_item_error(error, lambda i: name(chunk.start + i))
            if renamed.args == error.args:  # not about one item: name the chunk
                raise type(error)(f"items {chunk.start}..{chunk.stop - 1}: {error}") from error
            raise renamed from error

    return encode


class _QueryItems(Sequence[Item]):
    """The query items of records ``rows`` (``items[i]`` is the query of record ``rows[i]``)."""

    def __init__(self, records: RecordTable, rows: np.ndarray):
        self.records, self.rows = records, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Item:  # type: ignore[override]
        return self.records[int(self.rows[index])].query


def _check_finite_in_chunks(embeddings: np.ndarray, name: Callable[[int], str], what: str) -> None:
    """:func:`check_finite` over a (memory-mapped) array read a chunk at a time."""
    bad = [
        start + np.flatnonzero(~np.isfinite(embeddings[start : start + QUERY_CHUNK]).all(axis=1))
        for start in range(0, len(embeddings), QUERY_CHUNK)
    ]
    rows = np.concatenate(bad) if bad else np.empty(0, dtype=np.int64)
    if rows.size:
        check_finite(embeddings[rows], [name(int(i)) for i in rows], what)


def embed_all(
    config: MiningConfig, records: RecordTable, pools: CandidatePools, state: PartialState
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, dict[str, int]]:
    """Query and candidate embeddings (from the cache where present), memory-mapped from one ``.npy`` file each.

    Returns the embeddings of the distinct queries, each record's row in them, the candidate embeddings, the
    embedder fingerprint and cache statistics.
    """
    cache_dir = config.resolved_cache_dir
    path = resolve_backbone(config.embedder, main_process_first=state.main_process_first)
    fingerprint = checkpoint_fingerprint(
        path,
        {
            "prompt_format": config.embedder_prompt_format,
            "dtype": config.embedder_dtype,
            "marker_without_image": config.marker_without_image,
            **({"embedder_base": config.embedder_base} if config.embedder_base else {}),
        },
    )
    cache = EmbeddingCache(cache_dir / "embeddings", fingerprint, config.embed_chunk_size)
    loaded: list[Any] = []

    def load() -> Any:  # only when a chunk is missing: a fully cached run never loads the embedder
        if not loaded:
            loaded.append(
                load_embedder(
                    path,
                    config.embedder_prompt_format,
                    config.embedder_dtype,
                    state.device,
                    config.marker_without_image,
                    config.embedder_base,
                )
            )
        return loaded[0]

    ids, query_keys = records.query_ids, records.query_keys
    query_rows, query_of_record = distinct_rows(query_keys)
    candidates = pools.candidates
    n_positives = len(candidates.rows)

    def query_name(i: int) -> str:
        return f"record {ids[int(query_rows[i])]} (query)"

    def candidate_name(i: int) -> str:
        if i >= n_positives:
            return candidates.name(i)
        return f"record {ids[int(candidates.rows[i])]} (positive)"

    sides = (
        (
            _QueryItems(records, query_rows),
            lambda chunk: records.preloaded(query_rows[chunk.start : chunk.stop]),
            query_keys.take(query_rows),
            "queries",
            "query",
            query_name,
        ),
        (candidates, candidates.preloaded, pools.candidate_keys, "candidates", "candidate", candidate_name),
    )
    stats = {}
    embeddings = []
    for items, preloaded, keys, what, kind, name in sides:
        encode = _encoder(items, preloaded, name, load, config.embed_batch_size, config.embed_num_workers)
        array = cache.embed(keys, encode, state, config.progress, f"embed {what}", memmap=True)
        _check_finite_in_chunks(array, name, kind)
        embeddings.append(array)
        stats["embedding_chunks_computed"] = stats.get("embedding_chunks_computed", 0) + cache.computed_chunks
        stats["embedding_chunks_reused"] = stats.get("embedding_chunks_reused", 0) + cache.loaded_chunks
        cache.computed_chunks = 0
    return embeddings[0], query_of_record, embeddings[1], fingerprint, stats


def retrieve_all(
    config: MiningConfig,
    query_embeddings: np.ndarray,
    query_rows: np.ndarray,
    candidate_embeddings: np.ndarray,
    pools: CandidatePools,
    fingerprint: str,
    state: PartialState,
) -> RetrievalResult:
    """Retrieval on the main process, saved under its fingerprint; every process memory-maps the same result.

    The result is a folder of ``.npy`` files (:meth:`RetrievalResult.save`); its name carries the fingerprint.
    """
    path = config.resolved_cache_dir / "retrieval" / f"retrieval-{fingerprint[:32]}"
    if state.is_main_process and not path.exists():
        with atomic_directory(path) as tmp:
            tmp.mkdir()
            retrieve(
                query_embeddings,
                candidate_embeddings,
                pools,
                config.delta,
                config.top_k,
                config.faiss_gpu,
                query_rows,
                directory=tmp,
            )
    state.wait_for_everyone()
    return RetrievalResult.load(path)


def empty_pool_queries(config: MiningConfig, records: RecordTable, retrieval: RetrievalResult) -> list[int]:
    """Indices of queries with no candidate; raises when ``on_empty_pool == "error"``."""
    empty = np.flatnonzero(retrieval.counts == 0).tolist()
    if empty and config.on_empty_pool == "error":
        ids = ", ".join(records.query_ids[q] for q in empty[:10])
        raise ValueError(
            f"{len(empty)} quer{'y has' if len(empty) == 1 else 'ies have'} no candidate left in their pool "
            f"after removing the positive and cos >= delta={config.delta} (e.g. {ids}); set on_empty_pool='skip' "
            "to leave them out (they are listed in the report), or use pool='global'"
        )
    return empty


# --------------------------------------------------------------------------------------------------- judging


def _judge_shard(
    judge: Any,
    store: ShardStore,
    shard: int,
    active: Sequence[int],
    records: RecordTable,
    pools: CandidatePools,
    retrieval: RetrievalResult,
    bar: tqdm,
    queries_per_forward: int = 1,
) -> list[dict[str, Any]]:
    """Judge scores of one shard's queries: ``queries_per_forward`` queries per call of the judge."""
    positions = list(store.query_range(shard))
    out = []
    for start in range(0, len(positions), queries_per_forward):
        group = [
            _judge_inputs(active[p], records, pools, retrieval) for p in positions[start : start + queries_per_forward]
        ]
        all_scores = judge.score_queries([g[2] for g in group], [g[3] for g in group], queries_per_forward)
        for (record, ids, _, candidates), scores in zip(group, all_scores):
            scores = np.asarray(scores, dtype=np.float32)
            if not np.isfinite(scores).all():
                raise ValueError(f"record {record.query_id}: the judge returned a non-finite score")
            n_positives = len(record.positives)
            entry = {
                "query_id": record.query_id,
                "candidate_ids": ids.tolist(),
                "positive_score": float(scores[0]),
                "candidate_scores": [float(s) for s in scores[n_positives:]],
            }
            if n_positives > 1:
                entry["positive_scores"] = [float(s) for s in scores[:n_positives]]
            out.append(entry)
            bar.update(len(candidates))
    return out


def _judge_inputs(
    q: int, records: RecordTable, pools: CandidatePools, retrieval: RetrievalResult
) -> tuple[QueryRecord, np.ndarray, Any, list[Any]]:
    """``(record, candidate ids, query item, [*positives, *candidates])`` of query ``q`` for the judge."""
    ids, _ = retrieval.row(q)
    with records.preloaded([q]), pools.candidates.preloaded(ids.tolist()):  # one query's items read at once
        record = records[q]
        where = f"record {record.query_id}"
        candidates = [item.judge_item(f"{where} (positive {j})") for j, item in enumerate(record.positives)]
        candidates += [pools.candidates[c].judge_item(f"{where} ({_candidate_label(pools, c)})") for c in ids]
        query = record.query.judge_item(f"{where} (query)")
    return record, ids, query, candidates


def _num_positives(records: RecordTable, q: int) -> int:
    more = records.more_positive_keys
    return 1 + (len(more[q]) if more is not None else 0)


def _candidate_label(pools: CandidatePools, c: int) -> str:
    corpus_id = pools.candidates.corpus_id(c)
    return f"corpus item {corpus_id}" if corpus_id else f"candidate {c}"


def _pairs(
    store: ShardStore, shards: Sequence[int], active: Sequence[int], retrieval: RetrievalResult, records: RecordTable
) -> int:
    """Pairs (positives + candidates) the judge scores for ``shards``."""
    return sum(
        _num_positives(records, active[p]) + int(retrieval.counts[active[p]])
        for shard in shards
        for p in store.query_range(shard)
    )


def judge_all(
    config: MiningConfig,
    records: RecordTable,
    pools: CandidatePools,
    retrieval: RetrievalResult,
    active: Sequence[int],
    retrieval_fingerprint: str,
    state: PartialState,
    on_shard_written: ShardCallback | None = None,
) -> tuple[ShardStore, dict[str, Any]]:
    """Score every active query's positive and candidates, shard by shard; processes share the pending shards."""
    cache_dir = config.resolved_cache_dir
    path = resolve_backbone(config.judge, main_process_first=state.main_process_first)
    judge_fingerprint = checkpoint_fingerprint(
        path,
        {
            "prompt": JUDGE_PROMPT,
            "tokens": "whole pair",  # each pair is the tokenization of its whole text, markers removed, not stripped
            "dtype": config.judge_dtype,
            "min_pixels": config.judge_min_pixels,
            "max_pixels": config.judge_max_pixels,
            "prefix_sharing": config.prefix_sharing,
            "attn": config.judge_attn_implementation,
            "queries_per_forward": config.judge_queries_per_forward,  # several per forward round differently
        },
    )
    ids = records.query_ids
    more = records.more_positive_keys
    extra = [[more[q] for q in active]] if more is not None and any(more) else []  # the positives it scores
    run = _hash(judge_fingerprint, retrieval_fingerprint, (ids[q] for q in active), config.shard_size, *extra)
    store = ShardStore(cache_dir / "judge" / run[:32], len(active), config.shard_size)
    pending = store.pending()
    reused = store.n_shards - len(pending)
    if reused and state.is_main_process:
        print(f"resuming mining: {reused} of {store.n_shards} judge shards done ({store.directory})")
    state.wait_for_everyone()  # every process has listed the pending shards before anyone writes new ones
    with state.split_between_processes(pending) as mine:
        pairs = _pairs(store, mine, active, retrieval, records)
        bar = tqdm(
            total=pairs,
            desc=f"judge [{state.process_index}]",
            unit="pair",
            position=state.process_index,
            disable=not config.progress or not mine,
            dynamic_ncols=True,
        )
        judge = load_judge(path, config, state.device) if mine else None
        queries_per_forward = config.judge_queries_per_forward if config.prefix_sharing else 1
        for shard in mine:
            scored = _judge_shard(judge, store, shard, active, records, pools, retrieval, bar, queries_per_forward)
            target = store.write(shard, scored, writer=state.process_index)
            if on_shard_written is not None:
                on_shard_written(shard, target)
        bar.close()
    state.wait_for_everyone()
    return store, {
        "judge_shards": store.n_shards,
        "judge_shards_reused": reused,
        "judge_fingerprint": judge_fingerprint,
        "pairs_judged_by_main_this_run": pairs,
    }


# --------------------------------------------------------------------------------------------------- assembly


def _image_columns(item: Item) -> tuple[dict[str, Any] | None, str]:
    if item.image is None:
        return None, ""
    return item.image.to_feature(), item.image.relative_path


class _PartWriter:
    """Mined rows appended to Arrow part files of ``rows_per_part`` rows as they are produced (images by reference:
    path images keep their path, nothing is embedded), so assembly holds one batch of rows, never the dataset."""

    def __init__(self, directory: Path, rows_per_part: int, features: Features = MINED_FEATURES):
        self.directory = directory
        self.features = features
        self.rows_per_part = rows_per_part
        self.parts: list[Path] = []
        self.writer: ArrowWriter | None = None
        self.rows = 0
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)

    def write(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            self.parts.append(self.directory / f"part-{len(self.parts):06d}.arrow")
            self.writer = ArrowWriter(features=self.features, path=str(self.parts[-1]), writer_batch_size=64)
        self.writer.write(row)
        self.rows += 1
        if self.rows % self.rows_per_part == 0:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.finalize()
            self.writer.close()
            self.writer = None


class _ScoreFiles:
    """The judge scores the histogram and the report summarise, appended as float32 (the dataset's precision) to
    one file per group under ``directory`` and memory-mapped back, so they never sit in memory (33M candidate
    scores at MMEB-train size)."""

    GROUPS = ("positives", "candidates", "selected")

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.paths = {name: directory / f"{name}.f32" for name in self.GROUPS}
        self.files = {name: path.open("wb") for name, path in self.paths.items()}

    def add(self, entry: dict[str, Any], selected: Sequence[float]) -> None:
        values = ([entry["positive_score"]], entry["candidate_scores"], selected)
        for name, group in zip(self.GROUPS, values):
            self.files[name].write(np.asarray(group, dtype=np.float32).tobytes())

    def arrays(self) -> dict[str, np.ndarray]:
        for handle in self.files.values():
            handle.close()
        return {name: _read_only_floats(path) for name, path in self.paths.items()}


def _read_only_floats(path: Path) -> np.ndarray:
    """The float32 values of ``path``, memory-mapped (an empty file gives an empty array: it cannot be mapped)."""
    if path.stat().st_size == 0:
        return np.empty(0, dtype=np.float32)
    return np.memmap(path, dtype=np.float32, mode="r")


def _mined_row(
    config: MiningConfig,
    record: QueryRecord,
    entry: dict[str, Any],
    sample: SampledNegatives,
    negatives: Sequence[Item],
    similarities: np.ndarray,
) -> dict[str, Any]:
    query_image, query_path = _image_columns(record.query)
    pos_image, pos_path = _image_columns(record.positive)
    neg_images = [_image_columns(n) for n in negatives]
    row = make_mined_row(
        query_id=record.query_id,
        source=record.source,
        query_text=record.query.text,
        query_image=query_image,
        query_image_path=query_path,
        pos_text=record.positive.text,
        pos_image=pos_image,
        pos_image_path=pos_path,
        pos_score=entry["positive_score"],
        neg_texts=[n.text for n in negatives],
        neg_images=[image for image, _ in neg_images],
        neg_image_paths=[path for _, path in neg_images],
        neg_scores=list(sample.scores),
        neg_similarities=[float(similarities[i]) for i in sample.indices],
        num_negatives=config.num_negatives,
    )
    if config.columns.positives:
        more = [_image_columns(item) for item in record.more_positives]
        row.update(
            more_pos_texts=[item.text for item in record.more_positives],
            more_pos_images=[image for image, _ in more],
            more_pos_image_paths=[path for _, path in more],
            more_pos_scores=entry.get("positive_scores", [entry["positive_score"]])[1:],
        )
    return row


def assemble(
    config: MiningConfig,
    records: RecordTable,
    pools: CandidatePools,
    retrieval: RetrievalResult,
    active: Sequence[int],
    store: ShardStore,
    positive_similarities: np.ndarray | None = None,
) -> tuple[list[Path], dict[str, Any], dict[str, np.ndarray]]:
    """Read the shards one at a time, sample the negatives and write the mined rows to Arrow part files.

    ``positive_similarities``: per record, the embedder similarity of its query and positive (the margins of
    ``config.window`` need it).

    Returns the part files (in order), counts and the score arrays (memory-mapped from ``cache/scores``). Only one
    row's items are read at a time; the part writer holds at most 64 rows.
    """
    window = config.window
    sampler = HardNegativeSampler(config.beta, config.num_negatives, config.interval, config.seed, window=window)
    counts = {"false_negatives_removed": 0, "queries_with_false_negatives": 0, "padded": 0, "fallbacks": 0}
    per_source: dict[str, dict[str, int]] = {}
    scores = _ScoreFiles(config.resolved_cache_dir / "scores")
    statistics = NegativeStatistics()
    health = JudgeHealth("judged candidates")
    sources = records.sources
    writer = _PartWriter(config.resolved_cache_dir / "rows", config.rows_per_part, mined_features(config))
    ids_of = records.query_ids
    for shard in tqdm(range(store.n_shards), desc="assemble", unit="shard", disable=not config.progress):
        for position, entry in zip(store.query_range(shard), store.read(shard)):
            q = active[position]
            ids, sims = retrieval.row(q)
            if entry["query_id"] != ids_of[q] or entry["candidate_ids"] != ids.tolist():
                raise ValueError(f"judge shards of {store.directory} do not match record {ids_of[q]}; delete them")
            positive_similarity = None if positive_similarities is None else float(positive_similarities[q])
            positive_scores = entry.get("positive_scores", [entry["positive_score"]])
            reference = min(positive_scores)  # the least positive
            sample = sampler.sample(entry["candidate_scores"], reference, ids_of[q], sims, positive_similarity)
            chosen = [int(ids[i]) for i in sample.indices]
            with records.preloaded([q]), pools.candidates.preloaded(chosen):  # the row's items, read at once
                record = records[q]
                negatives = [pools.candidates[c] for c in chosen]
                row = _mined_row(config, record, entry, sample, negatives, sims)
                if config.corpus:
                    row["neg_corpus_ids"] = [pools.candidates.corpus_id(c) for c in chosen]
                writer.write(row)
            flags = {
                "queries": 1,
                "false_negatives_removed": sample.n_false_negatives,
                "queries_with_false_negatives": int(sample.n_false_negatives > 0),
                "padded": int(sample.padded),
                "fallbacks": int(sample.fallback),
            }
            source = per_source.setdefault(record.source, dict.fromkeys(flags, 0))
            for key, value in flags.items():
                source[key] += value
                if key in counts:
                    counts[key] += value
            negative_sources = [pools.candidates.source(c, sources) for c in chosen]
            statistics.add(entry["positive_score"], sample.scores, record.source, negative_sources, sample.fallback)
            health.add(positive_scores, entry["candidate_scores"], sample.fallback)
            scores.add(entry, sample.scores if not sample.fallback else [])
    writer.close()
    return (
        writer.parts,
        {
            "counts": counts,
            "per_source": per_source,
            "negatives": statistics.result(),
            "judge_health": health.result(config.judge_health_thresholds),
        },
        scores.arrays(),
    )


ROW_GROUP_SIZE = "16MB"
"""Rows ``save_to_disk`` reads, embeds and writes at once (``datasets``' default, 100MB, keeps ~400MB of batches
alive while saving image datasets; at 16MB that is ~40MB, measured in docs/mining.md "Memory at scale")."""


@contextmanager
def _row_groups(size: str) -> Iterator[None]:
    """Make ``datasets`` write record batches / row groups of at most ``size`` (restored afterwards)."""
    previous = datasets_config.MAX_ROW_GROUP_SIZE
    datasets_config.MAX_ROW_GROUP_SIZE = size
    try:
        yield
    finally:
        datasets_config.MAX_ROW_GROUP_SIZE = previous


def save_mined_dataset(
    parts: Sequence[Path],
    target: Path,
    image_storage: str,
    cache_dir: Path,
    features: Features = MINED_FEATURES,
) -> Dataset:
    """Assemble the part files into the dataset folder ``target`` and return it, memory-mapped from there.

    ``embedded``: ``save_to_disk`` of the parts concatenated memory-mapped (it reads image files and embeds their
    bytes a batch at a time); ``reference``: the parts as Parquet files, image paths kept, nothing embedded.
    """
    if parts:
        dataset = concatenate_datasets([Dataset.from_file(str(part)) for part in parts])
    else:
        dataset = Dataset.from_dict({name: [] for name in features}, features=features)
    with atomic_directory(target, replace=True) as tmp, _row_groups(ROW_GROUP_SIZE):
        if image_storage == "embedded":
            dataset.save_to_disk(str(tmp))
        else:
            for i, part in enumerate(parts or [None]):
                piece = Dataset.from_file(str(part)) if part is not None else dataset
                piece.to_parquet(str(Path(tmp) / f"data-{i:05d}-of-{max(len(parts), 1):05d}.parquet"))
    return load_mined_dataset(str(target), cache_dir=str(cache_dir / "parquet"))


# --------------------------------------------------------------------------------------------------- driver


def _settings(config: MiningConfig) -> dict[str, Any]:
    keys = (
        "embedder",
        "embedder_prompt_format",
        "judge",
        "judge_dtype",
        "pool",
        "delta",
        "top_k",
        "beta",
        "num_negatives",
        "interval",
        "seed",
        "range_min",
        "range_max",
        "absolute_margin",
        "relative_margin",
        "prefix_sharing",
        "on_empty_pool",
        "data",
        "data_split",
        "corpus",
    )
    return {key: getattr(config, key) for key in keys}


def _write_outputs(
    config: MiningConfig, parts: Sequence[Path], report: dict[str, Any], scores: dict[str, np.ndarray]
) -> tuple[Dataset, Path]:
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    dataset = save_mined_dataset(
        parts, output_dir / "dataset", config.image_storage, config.resolved_cache_dir, mined_features(config)
    )
    for part in parts:
        part.unlink()
    plot_score_histogram(
        scores["positives"], scores["candidates"], scores["selected"], output_dir / "judge_scores.png"
    )
    if config.authors_json and len(dataset):
        root = config.authors_json_image_root or config.image_root or str(output_dir / "authors_json")
        to_authors_json(
            dataset, output_dir / "mined.json", root, num_negatives=config.num_negatives, show_progress_bar=False
        )
    if config.export and len(dataset):
        report["exports"] = export_mined(dataset, output_dir, config.export, config.export_images)
    write_report(report, output_dir)
    return dataset, output_dir


def mine(
    config: MiningConfig, state: PartialState | None = None, on_shard_written: ShardCallback | None = None
) -> MiningResult | None:
    """Run the pipeline of ``config``; the main process returns the :class:`MiningResult`, others ``None``.

    Args:
        config: every setting (see :class:`MiningConfig`).
        state: the ``accelerate`` state (one is created when omitted; launch with ``accelerate launch``).
        on_shard_written: called with ``(shard, path)`` after each judge shard this process writes (progress hooks,
            fault-injection tests).
    """
    state = state or PartialState(cpu=not torch.cuda.is_available())
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    records = load_query_records(load_source(config), config.columns, config.image_root)
    if not len(records):
        raise ValueError(f"{config.data} ({config.data_split}) has no records to mine")
    pools = build_pools(records, config.pool, load_corpus(config))
    timings["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    query_embeddings, query_rows, candidate_embeddings, embedder_fp, cache_stats = embed_all(
        config, records, pools, state
    )
    distinct_queries = len(query_embeddings)  # one embedding per distinct query
    timings["embed"] = time.perf_counter() - clock

    clock = time.perf_counter()
    query_keys = records.query_keys
    retrieval_fp = _hash(
        embedder_fp,
        query_keys,
        pools.candidate_keys,
        {k: v.tolist() for k, v in pools.pools.items()},
        pools.query_pool,
        pools.positive_ids.tolist(),
        config.delta,
        config.top_k,
        *([pools.excluded.tolist()] if pools.excluded is not None else []),
    )
    retrieval = retrieve_all(config, query_embeddings, query_rows, candidate_embeddings, pools, retrieval_fp, state)
    positive_similarities = None
    if config.window.uses_similarities and state.is_main_process:
        positive_similarities = pair_similarities(
            query_embeddings, query_rows, candidate_embeddings, pools.positive_ids
        )
    del query_embeddings, candidate_embeddings
    empty = empty_pool_queries(config, records, retrieval)
    active = np.setdiff1d(np.arange(len(records)), np.asarray(empty, dtype=np.int64))
    timings["retrieve"] = time.perf_counter() - clock

    clock = time.perf_counter()
    store, judge_stats = judge_all(config, records, pools, retrieval, active, retrieval_fp, state, on_shard_written)
    timings["judge"] = time.perf_counter() - clock
    if not state.is_main_process:
        return None

    clock = time.perf_counter()
    parts, sampled, scores = assemble(config, records, pools, retrieval, active, store, positive_similarities)
    pairs = int(sum(_num_positives(records, int(q)) for q in active) + retrieval.counts[active].sum())
    counts = {
        "records": len(records),
        "queries": len(active),
        "skipped_empty_pool": len(empty),
        "pairs_judged": pairs,
        **sampled["counts"],
        "pools_smaller_than_top_k": int((retrieval.counts[active] < config.top_k).sum()) if len(active) else 0,
        "near_duplicates_dropped": int(retrieval.near_duplicates.sum()),
        "duplicate_candidates": int(sum(pools.duplicates.values())),
        "duplicate_queries": len(query_keys) - distinct_queries,
    }
    ids = records.query_ids
    report = {
        "settings": _settings(config),
        "counts": counts,
        "per_source": sampled["per_source"],
        "negatives": sampled["negatives"],
        "judge_health": log_judge_health(sampled["judge_health"]),
        "timings_s": timings,
        "scores": {name: score_summary(values) for name, values in scores.items()},
        "resume": {**cache_stats, **{k: v for k, v in judge_stats.items() if k != "judge_fingerprint"}},
        "fingerprints": {
            "embedder": embedder_fp,
            "judge": judge_stats["judge_fingerprint"],
            "retrieval": retrieval_fp,
        },
        "skipped_query_ids": [ids[q] for q in empty],
        "num_processes": state.num_processes,
    }
    report["throughput"] = {
        "judge_pairs_per_s_main_process": judge_stats["pairs_judged_by_main_this_run"] / max(timings["judge"], 1e-9)
    }
    dataset, output_dir = _write_outputs(config, parts, report, scores)
    del scores
    for path in (config.resolved_cache_dir / "scores").glob("*.f32"):
        path.unlink()
    timings["assemble_and_write"] = time.perf_counter() - clock
    write_report(report, output_dir)
    return MiningResult(dataset=dataset, report=report, output_dir=output_dir)
