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

from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..storage import atomic_directory
from .records import CorpusTable, DigestKeys, Item, QueryRecord, RecordTable, distinct_rows


CORPUS_MODES = ("corpus", "corpus+positives")
POOL_MODES = ("global", "dataset", "target_modality", *CORPUS_MODES)


def _pool_name(source: str, positive_modality: str, mode: str) -> str:
    if mode == "dataset":
        return source
    if mode == "target_modality":
        return positive_modality
    return "global"


class CandidateItems(Sequence[Item]):
    """The distinct candidates as a view: candidate ``c < len(rows)`` is the positive of record ``rows[c]``, a
    candidate ``c ≥ len(rows)`` is item ``c − len(rows)`` of the corpus (read on access)."""

    def __init__(self, records: Sequence[QueryRecord], rows: np.ndarray, corpus: CorpusTable | None = None):
        self.records = records
        self.rows = rows
        self.corpus = corpus

    def __len__(self) -> int:
        return len(self.rows) + (len(self.corpus) if self.corpus is not None else 0)

    def __getitem__(self, index: int) -> Item:  # type: ignore[override]
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"candidate {index} out of range ({len(self)} candidates)")
        if index < len(self.rows):
            return self.records[int(self.rows[index])].positive
        return self.corpus[index - len(self.rows)]

    def corpus_id(self, index: int) -> str:
        """The corpus id of candidate ``index`` (``""`` for a positive)."""
        index = int(index)
        return "" if index < len(self.rows) else self.corpus.id(index - len(self.rows))

    def name(self, index: int, sources: Sequence[str] | None = None) -> str:
        """``record <id> (positive)`` or ``corpus item <id>``, for errors."""
        index = int(index)
        if index >= len(self.rows):
            return f"corpus item {self.corpus_id(index)}"
        return f"candidate {index} (positive of record row {int(self.rows[index])})"

    def source(self, index: int, sources: Sequence[str]) -> str:
        """The source dataset of candidate ``index`` (``corpus`` for a corpus item)."""
        index = int(index)
        return sources[int(self.rows[index])] if index < len(self.rows) else "corpus"

    @contextmanager
    def preloaded(self, ids: Iterable[int]) -> Iterator[None]:
        """Read the items of candidates ``ids`` in batches (records and corpus) inside the ``with`` block."""
        ids = np.asarray(list(ids), dtype=np.int64)
        positives, corpus = ids[ids < len(self.rows)], ids[ids >= len(self.rows)] - len(self.rows)
        with ExitStack() as stack:
            if hasattr(self.records, "preloaded"):
                stack.enter_context(self.records.preloaded(self.rows[positives].tolist()))
            if self.corpus is not None and corpus.size:
                stack.enter_context(self.corpus.preloaded(corpus.tolist()))
            yield


@dataclass
class CandidatePools:
    """Distinct candidate items and, per pool, which of them it holds.

    Attributes:
        candidates: the distinct items (by content key), in order of first appearance (a view over the records).
        pools: pool name -> ids into ``candidates`` (each distinct item once).
        duplicates: pool name -> how many repeated positives were folded into one candidate.
        query_pool: per record, the name of its pool.
        positive_ids: per record, the id of its own positive in ``candidates``.
        candidate_keys: per candidate, its content key (:class:`DigestKeys` for a :class:`RecordTable`).
        excluded: ``None`` when every record has one positive; else ``(n_records, m)`` ids of the candidates that
            are one of the record's positives (its own first, ``-1`` padding): never retrieved for it.
    """

    candidates: CandidateItems
    pools: dict[str, np.ndarray]
    duplicates: dict[str, int]
    query_pool: list[str]
    positive_ids: np.ndarray
    candidate_keys: Sequence[str] = field(default_factory=list)
    excluded: np.ndarray | None = None

    def excluded_of(self, chunk: np.ndarray) -> np.ndarray:
        """The candidate ids to exclude for records ``chunk``: ``(len(chunk),)`` or ``(len(chunk), m)``."""
        return self.positive_ids[chunk] if self.excluded is None else self.excluded[chunk]

    @property
    def candidate_rows(self) -> np.ndarray:
        """Per candidate, the record whose positive it is (the first one)."""
        return self.candidates.rows


def more_positive_keys(records: Sequence[QueryRecord]) -> list[tuple[str, ...]] | None:
    """Per record, the content keys of its further positives; ``None`` when no record has any."""
    if isinstance(records, RecordTable):
        keys = records.more_positive_keys
    else:
        keys = [tuple(item.key for item in record.more_positives) for record in records]
    return keys if keys is not None and any(keys) else None


def _excluded(
    positive_ids: np.ndarray, candidate_keys: Sequence[str], record_keys: list[tuple[str, ...]], start: int = 0
) -> np.ndarray:
    """Per record, the candidate ids whose item is one of its positives (see :attr:`CandidatePools.excluded`):
    its own positive's id first, then every candidate from ``start`` on with the key of one of ``record_keys``."""
    wanted = {key for keys in record_keys for key in keys}
    ids: dict[str, list[int]] = {}
    for c, key in enumerate(candidate_keys[start:] if start else candidate_keys, start=start):
        if key in wanted:
            ids.setdefault(key, []).append(c)
    rows = [
        [int(own), *(c for key in keys for c in ids.get(key, ()) if c != own)]
        for own, keys in zip(positive_ids, record_keys)
    ]
    excluded = np.full((len(rows), max(map(len, rows), default=1)), -1, dtype=np.int64)
    for row, found in enumerate(rows):
        excluded[row, : len(found)] = found
    return excluded


def _record_columns(records: Sequence[QueryRecord]) -> tuple[Sequence[str], Sequence[str], Sequence[str]]:
    """Sources, positive keys and positive modalities of every record (kept by a RecordTable, else computed)."""
    if isinstance(records, RecordTable):
        return records.sources, records.positive_keys, records.positive_modalities
    return (
        [r.source for r in records],
        [r.positive.key for r in records],
        [r.positive.modality for r in records],
    )


def _corpus_pools(
    records: Sequence[QueryRecord],
    mode: str,
    corpus: CorpusTable,
    keys: Sequence[str],
    candidate_rows: np.ndarray,
    positive_ids: np.ndarray,
) -> CandidatePools:
    """The one pool of a corpus (``corpus``), with the distinct positives in front (``corpus+positives``).

    Candidate ids: the distinct positives first (always embedded: the margins need them), then the corpus items.
    A corpus item equal to one of a query's positives is never retrieved for it; each distinct corpus item is in
    the pool once, and with ``corpus+positives`` a corpus item equal to a positive only as that positive.
    """
    n_positives = len(candidate_rows)
    positive_keys = keys.take(candidate_rows) if isinstance(keys, DigestKeys) else [keys[r] for r in candidate_rows]
    corpus_first, _ = distinct_rows(corpus.keys)
    members = n_positives + corpus_first
    duplicates = len(corpus) - len(corpus_first)
    if mode == "corpus+positives":
        known = set(positive_keys)
        fresh = np.fromiter((key not in known for key in corpus.keys.take(corpus_first)), bool, len(corpus_first))
        members = np.concatenate([np.arange(n_positives), members[fresh]])
        duplicates += int((~fresh).sum())
    if isinstance(positive_keys, DigestKeys):
        candidate_keys: Sequence[str] = DigestKeys(np.concatenate([positive_keys.digests, corpus.keys.digests]))
    else:
        candidate_keys = [*positive_keys, *corpus.keys]
    record_keys = [(key,) for key in keys]
    more = more_positive_keys(records)
    if more is not None:
        record_keys = [own + extra for own, extra in zip(record_keys, more)]
    excluded = _excluded(positive_ids, candidate_keys, record_keys, n_positives)
    candidates = CandidateItems(records, candidate_rows, corpus)
    query_pool = ["corpus"] * len(positive_ids)
    return CandidatePools(
        candidates, {"corpus": members}, {"corpus": duplicates}, query_pool, positive_ids, candidate_keys, excluded
    )


def build_pools(
    records: Sequence[QueryRecord], mode: str = "global", corpus: CorpusTable | None = None
) -> CandidatePools:
    """Candidate pools from the positives of ``records`` (``mode``: one of :data:`POOL_MODES`); the corpus modes
    search ``corpus`` (with the positives: ``corpus+positives``)."""
    if mode not in POOL_MODES:
        raise ValueError(f"pool={mode!r}; choose one of {POOL_MODES}")
    if (mode in CORPUS_MODES) != (corpus is not None):
        raise ValueError(f"pool={mode!r} {'needs' if corpus is None else 'does not use'} a corpus ({CORPUS_MODES})")
    sources, keys, modalities = _record_columns(records)
    if corpus is not None:
        candidate_rows, positive_ids = distinct_rows(keys)
        return _corpus_pools(records, mode, corpus, keys, candidate_rows, positive_ids)
    candidate_rows, positive_ids = distinct_rows(keys)
    query_pool = [_pool_name(source, modality, mode) for source, modality in zip(sources, modalities)]
    names = {name: code for code, name in enumerate(dict.fromkeys(query_pool))}
    pool_codes = np.fromiter((names[name] for name in query_pool), dtype=np.int64, count=len(query_pool))
    pools, duplicates = {}, {}
    for name, code in names.items():
        positives = positive_ids[pool_codes == code]
        _, first = np.unique(positives, return_index=True)
        pools[name] = positives[np.sort(first)]  # each distinct candidate once, in order of first appearance
        duplicates[name] = len(positives) - len(first)
    candidate_keys = keys.take(candidate_rows) if isinstance(keys, DigestKeys) else [keys[r] for r in candidate_rows]
    candidates = CandidateItems(records, candidate_rows)
    more_keys = more_positive_keys(records)
    excluded = None if more_keys is None else _excluded(positive_ids, candidate_keys, more_keys)
    return CandidatePools(candidates, pools, duplicates, query_pool, positive_ids, candidate_keys, excluded)


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
        """Write as a folder of ``.npy`` files, one per array (through a temporary folder, so a reader never sees
        half of it)."""
        with atomic_directory(path, replace=True) as tmp:
            tmp.mkdir()
            for name in RETRIEVAL_ARRAYS:
                np.save(tmp / f"{name}.npy", getattr(self, name))

    @classmethod
    def load(cls, path: str | Path) -> RetrievalResult:
        """The arrays of a :meth:`save` folder, memory-mapped read-only (the ``(n, top_k)`` arrays stay on disk)."""
        return cls(**{name: np.load(Path(path) / f"{name}.npy", mmap_mode="r") for name in RETRIEVAL_ARRAYS})


RETRIEVAL_ARRAYS = ("candidate_ids", "similarities", "counts", "near_duplicates")


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


QUERY_CHUNK = 4096
"""Queries normalised and searched together (and candidates added to an index together): the working set of
retrieval besides the index, so a memory-mapped embedding file is never read whole into memory."""


def pool_index(candidate_embeddings: np.ndarray, members: np.ndarray, use_gpu: bool, chunk: int = QUERY_CHUNK) -> Any:
    """Exact inner-product index (a ``faiss.Index``) of the normalised ``candidate_embeddings[members]``, added in
    chunks; on all GPUs when faiss has GPU support and ``use_gpu``."""
    faiss = _faiss()
    index = faiss.IndexFlatIP(candidate_embeddings.shape[1])
    if use_gpu and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    for start in range(0, len(members), chunk):
        index.add(_normalised(candidate_embeddings[members[start : start + chunk]]))
    return index


def search_pool(
    index: Any,
    queries: np.ndarray,
    exclude: np.ndarray,
    delta: float,
    top_k: int,
) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Top ``top_k`` of the pool ``index`` holds per (normalised) query, without the row(s) ``exclude[q]`` (one, or a
    ``-1``-padded row of them) and ``cos >= delta``.

    Searches ``top_k + 1`` deep and doubles the depth for queries that lost too many hits to the filters, until
    they have ``top_k`` or the pool is exhausted. Since hits come sorted, every dropped near-duplicate ranks above
    every kept hit, so the near-duplicate count is exact.
    Returns per query: kept pool rows, their similarities, the number of near-duplicates dropped.
    """
    n_pool = index.ntotal
    rows: list[np.ndarray] = [np.empty(0, np.int64)] * len(queries)
    sims: list[np.ndarray] = [np.empty(0, np.float32)] * len(queries)
    dropped = [0] * len(queries)
    pending = np.arange(len(queries))
    depth = min(n_pool, top_k + 1)
    while pending.size:
        scores, hits = index.search(queries[pending], depth)
        retry = []
        for q, score, hit in zip(pending, scores, hits):
            valid = (hit >= 0) & ~np.isin(hit, exclude[q])
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
    query_rows: np.ndarray | None = None,
    chunk_size: int = QUERY_CHUNK,
    directory: str | Path | None = None,
) -> RetrievalResult:
    """Retrieve each query's ``top_k`` candidates from its pool (see the module docstring).

    Args:
        query_embeddings: ``(n_queries, d)``, one row per record (same order as the records the pools came from),
            or, with ``query_rows``, one row per distinct query. May be memory-mapped: it is read in chunks.
        candidate_embeddings: ``(len(pools.candidates), d)`` (may be memory-mapped).
        pools: from :func:`build_pools`.
        delta: similarity threshold; candidates with ``cos >= delta`` are dropped.
        top_k: candidates kept per query (50 in the paper).
        use_gpu: use a faiss GPU index when faiss has GPUs.
        query_rows: per record, its row of ``query_embeddings`` (duplicated queries share one).
        chunk_size: queries normalised and searched at once (and candidates added to the index at once).
        directory: when given, the result arrays are ``.npy`` files created there and filled memory-mapped (the
            layout :meth:`RetrievalResult.load` reads), so they are never all in memory.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    n_queries = query_embeddings.shape[0] if query_rows is None else len(query_rows)
    ids = _result_array(directory, "candidate_ids", (n_queries, top_k), np.int64, -1)
    sims = _result_array(directory, "similarities", (n_queries, top_k), np.float32, np.nan)
    counts = _result_array(directory, "counts", (n_queries,), np.int64, 0)
    near = _result_array(directory, "near_duplicates", (n_queries,), np.int64, 0)
    pool_of = np.asarray(pools.query_pool)
    for name, members in pools.pools.items():
        members_q = np.flatnonzero(pool_of == name)
        local = np.full(len(pools.candidates), -1, dtype=np.int64)
        local[members] = np.arange(len(members))
        index = pool_index(candidate_embeddings, members, use_gpu, chunk_size)
        for start in range(0, len(members_q), chunk_size):
            chunk = members_q[start : start + chunk_size]
            queries = _normalised(query_embeddings[chunk if query_rows is None else query_rows[chunk]])
            excluded = pools.excluded_of(chunk)
            exclude = np.where(excluded >= 0, local[excluded], -1)
            rows, scores, dropped = search_pool(index, queries, exclude, delta, top_k)
            for q, row, score, n_near in zip(chunk, rows, scores, dropped):
                counts[q] = len(row)
                ids[q, : len(row)] = members[row]
                sims[q, : len(row)] = score
                near[q] = n_near
        del index
    for array in (ids, sims, counts, near):
        if isinstance(array, np.memmap):
            array.flush()
    return RetrievalResult(ids, sims, counts, near)


def pair_similarities(
    query_embeddings: np.ndarray,
    query_rows: np.ndarray,
    candidate_embeddings: np.ndarray,
    candidate_ids: np.ndarray,
    chunk_size: int = QUERY_CHUNK,
) -> np.ndarray:
    """Per record ``r``, the cosine of its query (row ``query_rows[r]``) and candidate ``candidate_ids[r]`` (its
    positive), read a chunk at a time from the (memory-mapped) embeddings."""
    out = np.empty(len(query_rows), dtype=np.float32)
    for start in range(0, len(query_rows), chunk_size):
        stop = start + chunk_size
        queries = _normalised(query_embeddings[np.asarray(query_rows[start:stop])])
        candidates = _normalised(candidate_embeddings[np.asarray(candidate_ids[start:stop])])
        out[start:stop] = (queries * candidates).sum(axis=1)
    return out


def _result_array(
    directory: str | Path | None, name: str, shape: tuple[int, ...], dtype: Any, fill: float
) -> np.ndarray:
    """A ``shape`` array filled with ``fill``: in memory, or a memory-mapped ``directory/name.npy`` file."""
    if directory is None:
        return np.full(shape, fill, dtype=dtype)
    array = np.lib.format.open_memmap(Path(directory) / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
    for start in range(0, shape[0], QUERY_CHUNK):
        array[start : start + QUERY_CHUNK] = fill
    return array
