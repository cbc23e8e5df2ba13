"""Candidate pools and global retrieval: the potential hard-negative set Ω_p of the paper (docs/method.md §1, §3).

Every query gets the ``top_k`` candidates of its pool most similar to it (faiss exact inner product on normalised
embeddings, i.e. cosine), after dropping its own positive (same text and image) and every candidate with
``cos >= delta`` (near-duplicates and likely false negatives). By default (``pool="global"``, the paper's global
retrieval; docs/method.md §3) every query searches the positives of all datasets; ``pool="dataset"`` restricts it
to its own source dataset, ``pool="target_modality"`` to the positives of the same modality as its own positive
(image, text, or image + text). A pool holds each distinct candidate
(same text + image) once; the number of duplicates removed is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .records import Item, QueryRecord


POOL_MODES = ("global", "dataset", "target_modality")


def _pool_name(record: QueryRecord, mode: str) -> str:
    if mode == "dataset":
        return record.source
    if mode == "target_modality":
        positive = record.positive
        has_text = bool(positive.bare_text)
        return "+".join(
            name for name, present in (("image", positive.image is not None), ("text", has_text)) if present
        )
    return "global"


@dataclass
class CandidatePools:
    """Distinct candidate items and, per pool, which of them it holds.

    Attributes:
        candidates: the distinct items (by content key), in order of first appearance.
        pools: pool name -> ids into ``candidates`` (each distinct item once).
        duplicates: pool name -> how many repeated positives were folded into one candidate.
        query_pool: per record, the name of its pool.
        positive_ids: per record, the id of its own positive in ``candidates``.
    """

    candidates: list[Item]
    pools: dict[str, np.ndarray]
    duplicates: dict[str, int]
    query_pool: list[str]
    positive_ids: np.ndarray


def build_pools(records: Sequence[QueryRecord], mode: str = "global") -> CandidatePools:
    """Candidate pools from the positives of ``records`` (``mode``: one of :data:`POOL_MODES`)."""
    if mode not in POOL_MODES:
        raise ValueError(f"pool={mode!r}; choose one of {POOL_MODES}")
    ids: dict[str, int] = {}
    candidates: list[Item] = []
    members: dict[str, dict[int, None]] = {}
    counts: dict[str, int] = {}
    positive_ids = np.empty(len(records), dtype=np.int64)
    query_pool = []
    for row, record in enumerate(records):
        key = record.positive.key
        if key not in ids:
            ids[key] = len(candidates)
            candidates.append(record.positive)
        pool = _pool_name(record, mode)
        members.setdefault(pool, {})[ids[key]] = None
        counts[pool] = counts.get(pool, 0) + 1
        positive_ids[row] = ids[key]
        query_pool.append(pool)
    pools = {name: np.fromiter(member, dtype=np.int64) for name, member in members.items()}
    duplicates = {name: counts[name] - len(pools[name]) for name in pools}
    return CandidatePools(candidates, pools, duplicates, query_pool, positive_ids)


@dataclass
class RetrievalResult:
    """Per query, the retrieved candidates in descending similarity (padded arrays, ``-1`` / NaN beyond ``counts``).

    Attributes:
        candidate_ids: ``(n_queries, top_k)`` ids into :attr:`CandidatePools.candidates`.
        similarities: ``(n_queries, top_k)`` cosine similarities.
        counts: ``(n_queries,)`` how many candidates were kept (``< top_k`` when the pool is small).
        near_duplicates: ``(n_queries,)`` pool candidates dropped for ``cos >= delta`` (the positive not counted).
    """

    candidate_ids: np.ndarray
    similarities: np.ndarray
    counts: np.ndarray
    near_duplicates: np.ndarray
    meta: dict = field(default_factory=dict)

    def row(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The kept candidate ids and similarities of query ``index``."""
        n = int(self.counts[index])
        return self.candidate_ids[index, :n], self.similarities[index, :n]

    def save(self, path: str | Path) -> None:
        """Write as ``.npz`` (through a temporary file, so a reader never sees half of it)."""
        path = Path(path)
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(
            tmp,
            candidate_ids=self.candidate_ids,
            similarities=self.similarities,
            counts=self.counts,
            near_duplicates=self.near_duplicates,
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> RetrievalResult:
        with np.load(path) as data:
            return cls(**{name: data[name] for name in data.files})


def check_finite(embeddings: np.ndarray, names: Sequence[str], what: str) -> None:
    """Raise if any embedding has a NaN or infinite value, naming the first offending items."""
    bad = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
    if bad.size:
        shown = ", ".join(names[i] for i in bad[:5])
        raise ValueError(f"{bad.size} {what} embedding(s) contain NaN/inf values (e.g. {shown}); check the embedder")


def _faiss():
    """The ``faiss`` module, with the install command in the error when neither faiss build is installed."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "mining's retrieval needs faiss: pip install 'unime-v2[cpu]' (faiss-cpu) or 'unime-v2[gpu]' (faiss-gpu)"
        ) from error
    return faiss


def _normalised(embeddings: np.ndarray) -> np.ndarray:
    out = np.array(embeddings, dtype=np.float32, order="C", copy=True)
    _faiss().normalize_L2(out)
    return out


def _index(candidates: np.ndarray, use_gpu: bool) -> Any:
    """Exact inner-product index (a ``faiss.Index``); on all GPUs when faiss has GPU support and ``use_gpu``."""
    faiss = _faiss()
    index = faiss.IndexFlatIP(candidates.shape[1])
    if use_gpu and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(candidates)
    return index


def search_pool(
    queries: np.ndarray,
    pool: np.ndarray,
    exclude: np.ndarray,
    delta: float,
    top_k: int,
    use_gpu: bool = True,
) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Top ``top_k`` of ``pool`` (normalised embeddings) per query, without row ``exclude[q]`` and ``cos >= delta``.

    Searches ``top_k + 1`` deep and doubles the depth for queries that lost too many hits to the filters, until
    they have ``top_k`` or the pool is exhausted. Since hits come sorted, every dropped near-duplicate ranks above
    every kept hit, so the near-duplicate count is exact.
    Returns per query: kept pool rows, their similarities, the number of near-duplicates dropped.
    """
    n_pool = pool.shape[0]
    index = _index(pool, use_gpu)
    rows: list[np.ndarray] = [np.empty(0, np.int64)] * len(queries)
    sims: list[np.ndarray] = [np.empty(0, np.float32)] * len(queries)
    dropped = [0] * len(queries)
    pending = np.arange(len(queries))
    depth = min(n_pool, top_k + 1)
    while pending.size:
        scores, hits = index.search(queries[pending], depth)
        retry = []
        for q, score, hit in zip(pending, scores, hits):
            valid = (hit >= 0) & (hit != exclude[q])
            near = valid & (score >= delta)
            keep = valid & ~near
            rows[q], sims[q], dropped[q] = hit[keep][:top_k], score[keep][:top_k], int(near.sum())
            if keep.sum() < top_k and depth < n_pool:
                retry.append(q)
        pending = np.asarray(retry, dtype=np.int64)
        depth = min(n_pool, depth * 2)
    return rows, sims, dropped


def retrieve(
    query_embeddings: np.ndarray,
    candidate_embeddings: np.ndarray,
    pools: CandidatePools,
    delta: float,
    top_k: int = 50,
    use_gpu: bool = True,
) -> RetrievalResult:
    """Retrieve each query's ``top_k`` candidates from its pool (see the module docstring).

    Args:
        query_embeddings: ``(n_queries, d)``, one row per record (same order as the records the pools came from).
        candidate_embeddings: ``(len(pools.candidates), d)``.
        pools: from :func:`build_pools`.
        delta: similarity threshold; candidates with ``cos >= delta`` are dropped.
        top_k: candidates kept per query (50 in the paper).
        use_gpu: use a faiss GPU index when faiss has GPUs.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    n_queries = query_embeddings.shape[0]
    queries, candidates = _normalised(query_embeddings), _normalised(candidate_embeddings)
    ids = np.full((n_queries, top_k), -1, dtype=np.int64)
    sims = np.full((n_queries, top_k), np.nan, dtype=np.float32)
    counts = np.zeros(n_queries, dtype=np.int64)
    near = np.zeros(n_queries, dtype=np.int64)
    pool_of = np.asarray(pools.query_pool)
    for name, members in pools.pools.items():
        members_q = np.flatnonzero(pool_of == name)
        local = {int(c): i for i, c in enumerate(members)}
        exclude = np.array([local.get(int(pools.positive_ids[q]), -1) for q in members_q], dtype=np.int64)
        rows, scores, dropped = search_pool(queries[members_q], candidates[members], exclude, delta, top_k, use_gpu)
        for q, row, score, n_near in zip(members_q, rows, scores, dropped):
            counts[q] = len(row)
            ids[q, : len(row)] = members[row]
            sims[q, : len(row)] = score
            near[q] = n_near
    return RetrievalResult(ids, sims, counts, near)
