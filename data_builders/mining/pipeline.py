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
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from datasets import Dataset, DatasetDict, concatenate_datasets, load_dataset, load_from_disk
from tqdm.auto import tqdm

from unime_v2.data_builders.recipes import resolve_backbone
from unime_v2.data_builders.storage import atomic_directory
from unime_v2.modeling_unime_v2.prompting_unime_v2 import JUDGE_PROMPT

from ..formats.mined import MINED_FEATURES, make_mined_row, to_authors_json
from .config import MiningConfig
from .embedding_cache import EmbeddingCache
from .hard_negatives import HardNegativeSampler
from .models import checkpoint_fingerprint, load_embedder, load_judge
from .records import Item, QueryRecord, load_query_records
from .report import negative_statistics, plot_score_histogram, score_summary, write_report
from .retrieval import CandidatePools, RetrievalResult, build_pools, check_finite, retrieve
from .shards import ShardStore


ShardCallback = Callable[[int, Path], None]


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
    """The split to mine: generated mini-MMEB, a ``save_to_disk`` folder, or a Hub dataset (subsets concatenated)."""
    if config.data == "mini_mmeb":
        from ..mini_mmeb.builder import MiniMMEBConfig, build_mini_mmeb

        dataset = build_mini_mmeb(MiniMMEBConfig(**config.mini_mmeb))["mmeb"][config.data_split]
    elif Path(config.data).exists():
        loaded = load_from_disk(config.data)
        dataset = loaded[config.data_split] if isinstance(loaded, DatasetDict) else loaded
    elif config.data_subsets:
        parts = []
        for subset in config.data_subsets:
            part = load_dataset(config.data, subset, split=config.data_split)
            if config.columns.source not in part.column_names:
                part = part.add_column(config.columns.source, [subset] * len(part))
            parts.append(part)
        dataset = concatenate_datasets(parts)
    else:
        dataset = load_dataset(config.data, split=config.data_split)
    if config.max_queries is not None:
        dataset = dataset.select(range(min(config.max_queries, len(dataset))))
    return dataset


def _hash(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def _distinct(items: Sequence[Item], names: Sequence[str]) -> tuple[list[Item], list[str], np.ndarray]:
    """Distinct items (by key), a name for each (its first record), and the index of every input item."""
    index: dict[str, int] = {}
    distinct, distinct_names, mapping = [], [], np.empty(len(items), dtype=np.int64)
    for row, (item, name) in enumerate(zip(items, names)):
        if item.key not in index:
            index[item.key] = len(distinct)
            distinct.append(item)
            distinct_names.append(name)
        mapping[row] = index[item.key]
    return distinct, distinct_names, mapping


# --------------------------------------------------------------------------------------------------- embedding


def _encoder(items: Sequence[Item], names: Sequence[str], load: Callable[[], Any], batch_size: int):
    """``encode(range) -> array`` with the (lazily loaded) embedder; errors name the records."""

    def encode(rows: range) -> np.ndarray:
        batch = [items[i].embedder_item(names[i]) for i in rows]
        try:
            return load().encode(batch, batch_size=batch_size).float().numpy()
        except (ValueError, TypeError, FileNotFoundError) as error:
            match = re.match(r"item (\d+):", str(error))
            where = names[rows.start + int(match.group(1))] if match else f"items {rows.start}..{rows.stop - 1}"
            raise type(error)(f"{where}: {error}") from error

    return encode


def embed_all(
    config: MiningConfig, records: Sequence[QueryRecord], pools: CandidatePools, state: PartialState
) -> tuple[np.ndarray, np.ndarray, str, dict[str, int]]:
    """Query and candidate embeddings (from the cache where present). Returns them, the embedder fingerprint and
    cache statistics."""
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

    queries, query_names, query_rows = _distinct(
        [r.query for r in records], [f"record {r.query_id} (query)" for r in records]
    )
    first_record = {int(c): records[row].query_id for row, c in reversed(list(enumerate(pools.positive_ids)))}
    candidate_names = [f"record {first_record[c]} (positive)" for c in range(len(pools.candidates))]
    stats = {}
    embeddings = []
    for items, names, what in ((queries, query_names, "queries"), (pools.candidates, candidate_names, "candidates")):
        keys = [item.key for item in items]
        encode = _encoder(items, names, load, config.embed_batch_size)
        embeddings.append(cache.embed(keys, encode, state, show_progress_bar=config.progress, desc=f"embed {what}"))
        stats["embedding_chunks_computed"] = stats.get("embedding_chunks_computed", 0) + cache.computed_chunks
        stats["embedding_chunks_reused"] = stats.get("embedding_chunks_reused", 0) + cache.loaded_chunks
        cache.computed_chunks = 0
    check_finite(embeddings[0], query_names, "query")
    check_finite(embeddings[1], candidate_names, "candidate")
    return embeddings[0][query_rows], embeddings[1], fingerprint, stats


def retrieve_all(
    config: MiningConfig,
    query_embeddings: np.ndarray,
    candidate_embeddings: np.ndarray,
    pools: CandidatePools,
    fingerprint: str,
    state: PartialState,
) -> RetrievalResult:
    """Retrieval on the main process, saved under its fingerprint; every process loads the same result."""
    path = config.resolved_cache_dir / "retrieval" / f"retrieval-{fingerprint[:32]}.npz"
    if state.is_main_process and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        retrieve(query_embeddings, candidate_embeddings, pools, config.delta, config.top_k, config.faiss_gpu).save(
            path
        )
    state.wait_for_everyone()
    return RetrievalResult.load(path)


def empty_pool_queries(config: MiningConfig, records: Sequence[QueryRecord], retrieval: RetrievalResult) -> list[int]:
    """Indices of queries with no candidate; raises when ``on_empty_pool == "error"``."""
    empty = np.flatnonzero(retrieval.counts == 0).tolist()
    if empty and config.on_empty_pool == "error":
        ids = ", ".join(records[q].query_id for q in empty[:10])
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
    records: Sequence[QueryRecord],
    pools: CandidatePools,
    retrieval: RetrievalResult,
    bar: tqdm,
) -> list[dict[str, Any]]:
    out = []
    for position in store.query_range(shard):
        q = active[position]
        record = records[q]
        ids, _ = retrieval.row(q)
        where = f"record {record.query_id}"
        candidates = [record.positive.judge_item(f"{where} (positive)")]
        candidates += [pools.candidates[c].judge_item(f"{where} (candidate {c})") for c in ids]
        scores = judge.score(record.query.judge_item(f"{where} (query)"), candidates)
        if not np.isfinite(scores).all():
            raise ValueError(f"{where}: the judge returned a non-finite score")
        out.append(
            {
                "query_id": record.query_id,
                "candidate_ids": ids.tolist(),
                "positive_score": float(scores[0]),
                "candidate_scores": [float(s) for s in scores[1:]],
            }
        )
        bar.update(len(candidates))
    return out


def _pairs(store: ShardStore, shards: Sequence[int], active: Sequence[int], retrieval: RetrievalResult) -> int:
    """Pairs (positive + candidates) the judge scores for ``shards``."""
    return sum(1 + int(retrieval.counts[active[p]]) for shard in shards for p in store.query_range(shard))


def judge_all(
    config: MiningConfig,
    records: Sequence[QueryRecord],
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
            "dtype": config.judge_dtype,
            "min_pixels": config.judge_min_pixels,
            "max_pixels": config.judge_max_pixels,
            "prefix_sharing": config.prefix_sharing,
            "attn": config.judge_attn_implementation,
        },
    )
    run = _hash(judge_fingerprint, retrieval_fingerprint, [records[q].query_id for q in active], config.shard_size)
    store = ShardStore(cache_dir / "judge" / run[:32], len(active), config.shard_size)
    pending = store.pending()
    reused = store.n_shards - len(pending)
    state.wait_for_everyone()  # every process has listed the pending shards before anyone writes new ones
    with state.split_between_processes(pending) as mine:
        pairs = _pairs(store, mine, active, retrieval)
        bar = tqdm(
            total=pairs,
            desc=f"judge [{state.process_index}]",
            unit="pair",
            position=state.process_index,
            disable=not config.progress or not mine,
            dynamic_ncols=True,
        )
        judge = load_judge(path, config, state.device) if mine else None
        for shard in mine:
            scored = _judge_shard(judge, store, shard, active, records, pools, retrieval, bar)
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


def assemble(
    config: MiningConfig,
    records: Sequence[QueryRecord],
    pools: CandidatePools,
    retrieval: RetrievalResult,
    active: Sequence[int],
    store: ShardStore,
) -> tuple[Dataset, dict[str, Any], dict[str, list[float]]]:
    """Read the shards, sample the negatives and build the mined dataset; returns it, counts and score lists."""
    sampler = HardNegativeSampler(config.beta, config.num_negatives, config.interval, config.seed)
    rows: list[dict[str, Any]] = []
    counts = {"false_negatives_removed": 0, "queries_with_false_negatives": 0, "padded": 0, "fallbacks": 0}
    per_source: dict[str, dict[str, int]] = {}
    scores: dict[str, list[float]] = {"positives": [], "candidates": [], "selected": []}
    judged = [entry for shard in range(store.n_shards) for entry in store.read(shard)]
    owner = {int(c): records[row].source for row, c in reversed(list(enumerate(pools.positive_ids)))}
    stats: dict[str, list[Any]] = {"positive": [], "negative": [], "query_source": [], "source": [], "fallback": []}
    for q, entry in zip(active, judged):
        record = records[q]
        ids, sims = retrieval.row(q)
        if entry["query_id"] != record.query_id or entry["candidate_ids"] != ids.tolist():
            raise ValueError(f"judge shards of {store.directory} do not match record {record.query_id}; delete them")
        sample = sampler.sample(entry["candidate_scores"], entry["positive_score"], record.query_id)
        negatives = [pools.candidates[ids[i]] for i in sample.indices]
        query_image, query_path = _image_columns(record.query)
        pos_image, pos_path = _image_columns(record.positive)
        neg_images = [_image_columns(n) for n in negatives]
        rows.append(
            make_mined_row(
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
                neg_similarities=[float(sims[i]) for i in sample.indices],
                num_negatives=config.num_negatives,
            )
        )
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
        for key, value in (
            ("positive", entry["positive_score"]),
            ("negative", sample.scores),
            ("query_source", record.source),
            ("source", [owner[int(ids[i])] for i in sample.indices]),
            ("fallback", sample.fallback),
        ):
            stats[key].append(value)
        scores["positives"].append(entry["positive_score"])
        scores["candidates"].extend(entry["candidate_scores"])
        scores["selected"].extend(sample.scores if not sample.fallback else [])
    dataset = (
        Dataset.from_list(rows, features=MINED_FEATURES)
        if rows
        else Dataset.from_dict({name: [] for name in MINED_FEATURES}, features=MINED_FEATURES)
    )
    negatives = negative_statistics(
        stats["positive"], stats["negative"], stats["query_source"], stats["source"], stats["fallback"]
    )
    return dataset, {"counts": counts, "per_source": per_source, "negatives": negatives}, scores


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
        "prefix_sharing",
        "on_empty_pool",
        "data",
        "data_split",
    )
    return {key: getattr(config, key) for key in keys}


def _write_outputs(
    config: MiningConfig, dataset: Dataset, report: dict[str, Any], scores: dict[str, list[float]]
) -> Path:
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_directory(output_dir / "dataset", replace=True) as tmp:
        dataset.save_to_disk(str(tmp))
    plot_score_histogram(
        scores["positives"], scores["candidates"], scores["selected"], output_dir / "judge_scores.png"
    )
    if config.authors_json and len(dataset):
        root = config.authors_json_image_root or config.image_root or str(output_dir / "authors_json")
        to_authors_json(
            dataset, output_dir / "mined.json", root, num_negatives=config.num_negatives, show_progress_bar=False
        )
    write_report(report, output_dir)
    return output_dir


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
    if not records:
        raise ValueError(f"{config.data} ({config.data_split}) has no records to mine")
    pools = build_pools(records, config.pool)
    timings["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    query_embeddings, candidate_embeddings, embedder_fp, cache_stats = embed_all(config, records, pools, state)
    timings["embed"] = time.perf_counter() - clock

    clock = time.perf_counter()
    retrieval_fp = _hash(
        embedder_fp,
        [r.query.key for r in records],
        [c.key for c in pools.candidates],
        {k: v.tolist() for k, v in pools.pools.items()},
        pools.query_pool,
        pools.positive_ids.tolist(),
        config.delta,
        config.top_k,
    )
    retrieval = retrieve_all(config, query_embeddings, candidate_embeddings, pools, retrieval_fp, state)
    empty = empty_pool_queries(config, records, retrieval)
    skipped = set(empty)
    active = [q for q in range(len(records)) if q not in skipped]
    timings["retrieve"] = time.perf_counter() - clock

    clock = time.perf_counter()
    store, judge_stats = judge_all(config, records, pools, retrieval, active, retrieval_fp, state, on_shard_written)
    timings["judge"] = time.perf_counter() - clock
    if not state.is_main_process:
        return None

    clock = time.perf_counter()
    dataset, sampled, scores = assemble(config, records, pools, retrieval, active, store)
    pairs = int(sum(1 + retrieval.counts[q] for q in active))
    query_keys = [r.query.key for r in records]
    counts = {
        "records": len(records),
        "queries": len(dataset),
        "skipped_empty_pool": len(empty),
        "pairs_judged": pairs,
        **sampled["counts"],
        "pools_smaller_than_top_k": int((retrieval.counts[active] < config.top_k).sum()) if active else 0,
        "near_duplicates_dropped": int(retrieval.near_duplicates.sum()),
        "duplicate_candidates": int(sum(pools.duplicates.values())),
        "duplicate_queries": len(query_keys) - len(set(query_keys)),
    }
    report = {
        "settings": _settings(config),
        "counts": counts,
        "per_source": sampled["per_source"],
        "negatives": sampled["negatives"],
        "timings_s": timings,
        "scores": {name: score_summary(values) for name, values in scores.items()},
        "resume": {**cache_stats, **{k: v for k, v in judge_stats.items() if k != "judge_fingerprint"}},
        "fingerprints": {
            "embedder": embedder_fp,
            "judge": judge_stats["judge_fingerprint"],
            "retrieval": retrieval_fp,
        },
        "skipped_query_ids": [records[q].query_id for q in empty],
        "num_processes": state.num_processes,
    }
    report["throughput"] = {
        "judge_pairs_per_s_main_process": judge_stats["pairs_judged_by_main_this_run"] / max(timings["judge"], 1e-9)
    }
    output_dir = _write_outputs(config, dataset, report, scores)
    timings["assemble_and_write"] = time.perf_counter() - clock
    write_report(report, output_dir)
    return MiningResult(dataset=dataset, report=report, output_dir=output_dir)
