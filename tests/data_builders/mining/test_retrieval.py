"""Global retrieval: pools, the δ filter, the positive excluded, equality with brute-force NumPy, the cache."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from unime_v2.data_builders.mining.embedding_cache import EmbeddingCache
from unime_v2.data_builders.mining.pipeline import _hash
from unime_v2.data_builders.mining.records import ImageRef, Item, QueryRecord, RecordTable, distinct_rows
from unime_v2.data_builders.mining.retrieval import (
    RETRIEVAL_ARRAYS,
    RetrievalResult,
    build_pools,
    check_finite,
    retrieve,
)


def records_for(sources: list[str], positives: list[str]) -> list[QueryRecord]:
    return [
        QueryRecord(query_id=f"{s}-{i}", source=s, query=Item(f"query {i}", None), positive=Item(p, None))
        for i, (s, p) in enumerate(zip(sources, positives))
    ]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def brute_force(queries, candidates, pools, delta, top_k):
    """Reference: full cosine matrix, mask own positive, pool and cos >= delta, argsort descending."""
    sims = unit(queries) @ unit(candidates).T
    out = []
    for q in range(len(queries)):
        members = pools.pools[pools.query_pool[q]]
        keep = [c for c in members if c != pools.positive_ids[q] and sims[q, c] < delta]
        keep.sort(key=lambda c: -sims[q, c])
        out.append((keep[:top_k], sims[q, keep[:top_k]]))
    return out


def test_target_modality_pools_group_positives_by_modality():
    image = ImageRef(path="a.png")
    records = [
        QueryRecord(query_id="A-0", source="A", query=Item("q0", None), positive=Item("<|image_1|>", image)),
        QueryRecord(query_id="B-1", source="B", query=Item("q1", None), positive=Item("a caption", None)),
        QueryRecord(query_id="C-2", source="C", query=Item("q2", None), positive=Item("<|image_1|> text", image)),
        QueryRecord(query_id="C-3", source="C", query=Item("q3", None), positive=Item("other", None)),
    ]
    pools = build_pools(records, "target_modality")
    assert pools.query_pool == ["image", "text", "image+text", "text"]
    assert pools.pools["text"].tolist() == [1, 3]
    assert build_pools(records).query_pool == ["global"] * 4  # the default: the paper's global retrieval


def test_pools_hold_distinct_positives_per_source_and_count_duplicates():
    records = records_for(["A", "A", "A", "B", "B"], ["cat", "dog", "cat", "cat", "fox"])
    pools = build_pools(records, "dataset")
    assert [c.text for c in pools.candidates] == ["cat", "dog", "fox"]
    assert pools.pools["A"].tolist() == [0, 1] and pools.pools["B"].tolist() == [0, 2]
    assert pools.duplicates == {"A": 1, "B": 0}
    assert pools.positive_ids.tolist() == [0, 1, 0, 0, 2]
    merged = build_pools(records, "global")
    assert merged.pools["global"].tolist() == [0, 1, 2] and merged.duplicates == {"global": 2}
    with pytest.raises(ValueError, match="pool="):
        build_pools(records, "nearest")


def test_same_text_different_image_is_not_a_duplicate():
    a, b = ImageRef(bytes=b"png-a"), ImageRef(bytes=b"png-b")
    records = [
        QueryRecord("x-0", "x", Item("q", None), Item("<|image_1|>\nRepresent the given image.", a)),
        QueryRecord("x-1", "x", Item("q2", None), Item("<|image_1|>\nRepresent the given image.", b)),
        QueryRecord("x-2", "x", Item("q3", None), Item("<|image_1|>\nRepresent the given image.", a)),
    ]
    pools = build_pools(records, "dataset")
    assert len(pools.candidates) == 2 and pools.duplicates == {"x": 1}


@pytest.mark.parametrize("mode", ["dataset", "global"])
def test_retrieval_equals_brute_force_and_drops_near_duplicates_and_the_positive(mode):
    rng = np.random.default_rng(0)
    n_per_source, dim = 80, 16
    sources = ["A"] * n_per_source + ["B"] * n_per_source
    records = records_for(sources, [f"item {i}" for i in range(len(sources))])
    pools = build_pools(records, mode)
    candidates = rng.normal(size=(len(pools.candidates), dim)).astype(np.float32)
    queries = rng.normal(size=(len(records), dim)).astype(np.float32)
    # plant: query 3's positive is its twin (would rank first), and candidate 10 is a near-duplicate of query 3
    queries[3] = candidates[pools.positive_ids[3]]
    candidates[10] = queries[3] + 1e-3 * rng.normal(size=dim)
    delta, top_k = 0.9, 50
    result = retrieve(queries, candidates, pools, delta=delta, top_k=top_k, use_gpu=False)
    expected = brute_force(queries, candidates, pools, delta, top_k)
    for q, (ids, sims) in enumerate(expected):
        got_ids, got_sims = result.row(q)
        assert got_ids.tolist() == ids
        np.testing.assert_allclose(got_sims, sims, atol=1e-5)
        assert pools.positive_ids[q] not in got_ids
        assert (got_sims < delta).all()
    assert 10 not in result.row(3)[0].tolist()
    assert result.near_duplicates[3] >= 1
    assert (result.counts == top_k).all()


def test_deep_search_when_many_candidates_are_near_duplicates():
    """More near-duplicates than top_k + 1: the search deepens until top_k survivors are found."""
    rng = np.random.default_rng(1)
    dim = 8
    records = records_for(["A"] * 40, [f"p{i}" for i in range(40)])
    pools = build_pools(records, "dataset")
    query_direction = unit(rng.normal(size=dim))
    candidates = rng.normal(size=(40, dim))
    candidates[:25] = query_direction + 1e-4 * rng.normal(size=(25, dim))  # 25 near-duplicates of query 39
    queries = rng.normal(size=(40, dim))
    queries[39] = query_direction
    result = retrieve(queries, candidates, pools, delta=0.99, top_k=10, use_gpu=False)
    ids, sims = result.row(39)
    expected_ids, _ = brute_force(queries, candidates, pools, 0.99, 10)[39]
    assert ids.tolist() == expected_ids and len(ids) == 10
    assert result.near_duplicates[39] == 25


def test_small_pools_return_all_they_have():
    records = records_for(["A"] * 5 + ["B"], ["a", "b", "c", "d", "e", "lonely"])
    pools = build_pools(records, "dataset")
    rng = np.random.default_rng(2)
    result = retrieve(rng.normal(size=(6, 4)), rng.normal(size=(6, 4)), pools, delta=1.0, top_k=50, use_gpu=False)
    assert result.counts.tolist() == [4, 4, 4, 4, 4, 0]  # pool B holds only the query's own positive: empty
    assert sorted(result.row(0)[0].tolist()) == [1, 2, 3, 4]


def test_nan_embeddings_raise_naming_the_items():
    embeddings = np.ones((3, 4), dtype=np.float32)
    embeddings[1, 2] = np.nan
    with pytest.raises(ValueError, match="record A-1"):
        check_finite(embeddings, ["record A-0", "record A-1", "record A-2"], "query")


def test_embedding_cache_reuses_chunks_and_keys_by_embedder_and_data(tmp_path):
    calls: list[range] = []

    def encode(rows: range) -> np.ndarray:
        calls.append(rows)
        return np.arange(rows.start, rows.stop, dtype=np.float32)[:, None].repeat(3, axis=1)

    keys = [f"k{i}" for i in range(10)]
    cache = EmbeddingCache(tmp_path, fingerprint="embedder-1", chunk_size=4)
    first = cache.embed(keys, encode)
    assert [(r.start, r.stop) for r in calls] == [(0, 4), (4, 8), (8, 10)]
    np.testing.assert_array_equal(first[:, 0], np.arange(10))
    calls.clear()
    again = EmbeddingCache(tmp_path, fingerprint="embedder-1", chunk_size=4).embed(keys, encode)
    assert calls == [] and np.array_equal(first, again)
    changed = keys[:4] + ["new"] + keys[5:]
    EmbeddingCache(tmp_path, fingerprint="embedder-1", chunk_size=4).embed(changed, encode)
    assert [(r.start, r.stop) for r in calls] == [(4, 8)]  # only the chunk whose items changed
    calls.clear()
    EmbeddingCache(tmp_path, fingerprint="embedder-2", chunk_size=4).embed(keys, encode)
    assert len(calls) == 3  # another embedder never reuses these
    assert not list(tmp_path.glob(".*tmp"))
    calls.clear()
    mapped = EmbeddingCache(tmp_path, fingerprint="embedder-1", chunk_size=4).embed(keys, encode, memmap=True)
    assert calls == [] and isinstance(mapped, np.memmap) and np.array_equal(mapped, first)


def test_chunked_retrieval_of_memory_mapped_distinct_queries_equals_the_whole_search(tmp_path):
    """Queries searched 7 at a time from a memory-mapped file of distinct queries (records map to rows of it), and
    candidates added to the index 7 at a time, give the one-shot result."""
    rng = np.random.default_rng(5)
    records = records_for(["A"] * 30 + ["B"] * 30, [f"item {i}" for i in range(60)])
    pools = build_pools(records, "dataset")
    distinct = rng.normal(size=(20, 8)).astype(np.float32)
    query_rows = rng.integers(0, 20, size=60)
    candidates = rng.normal(size=(len(pools.candidates), 8)).astype(np.float32)
    np.save(tmp_path / "q.npy", distinct)
    np.save(tmp_path / "c.npy", candidates)
    whole = retrieve(distinct[query_rows], candidates, pools, delta=0.9, top_k=5, use_gpu=False)
    mapped_q, mapped_c = np.load(tmp_path / "q.npy", mmap_mode="r"), np.load(tmp_path / "c.npy", mmap_mode="r")
    chunked = retrieve(mapped_q, mapped_c, pools, 0.9, 5, use_gpu=False, query_rows=query_rows, chunk_size=7)
    np.testing.assert_array_equal(chunked.candidate_ids, whole.candidate_ids)
    np.testing.assert_allclose(chunked.similarities, whole.similarities, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(chunked.counts, whole.counts)
    np.testing.assert_array_equal(chunked.near_duplicates, whole.near_duplicates)


def test_positive_never_retrieved_even_without_the_delta_filter():
    rng = np.random.default_rng(3)
    records = records_for(["A"] * 30, [f"p{i}" for i in range(30)])
    pools = build_pools(records, "dataset")
    candidates = rng.normal(size=(30, 6))
    queries = candidates.copy()  # every query is identical to its own positive: it would rank first
    result = retrieve(queries, candidates, pools, delta=2.0, top_k=5, use_gpu=False)
    for q in range(30):
        ids, _ = result.row(q)
        assert q not in ids.tolist() and len(ids) == 5
        assert ids.tolist() == brute_force(queries, candidates, pools, 2.0, 5)[q][0]


def test_retrieval_written_memory_mapped_to_npy_files_equals_the_in_memory_result(tmp_path):
    """``retrieve(directory=...)`` fills ``.npy`` files in place; :meth:`RetrievalResult.load` maps them read-only
    and gives the in-memory result; ``save`` writes the same layout."""
    rng = np.random.default_rng(7)
    records = records_for(["A"] * 25 + ["B"] * 15, [f"item {i % 30}" for i in range(40)])
    pools = build_pools(records, "dataset")
    queries = rng.normal(size=(40, 8)).astype(np.float32)
    candidates = rng.normal(size=(len(pools.candidates), 8)).astype(np.float32)
    memory = retrieve(queries, candidates, pools, delta=0.8, top_k=30, use_gpu=False)
    (tmp_path / "mapped").mkdir()
    retrieve(queries, candidates, pools, 0.8, 30, use_gpu=False, chunk_size=6, directory=tmp_path / "mapped")
    memory.save(tmp_path / "saved")
    for folder in ("mapped", "saved"):
        loaded = RetrievalResult.load(tmp_path / folder)
        for name in RETRIEVAL_ARRAYS:
            assert isinstance(getattr(loaded, name), np.memmap), name
            np.testing.assert_array_equal(getattr(loaded, name), getattr(memory, name), err_msg=name)
    assert (memory.counts < 30).any() and (memory.candidate_ids == -1).any()  # padding reached the files too


def test_record_table_keeps_keys_as_digests_and_builds_the_pools_of_the_records(tmp_path):
    """A source read as a :class:`RecordTable` (keys as 32-byte digests, sources as labels, ids made on access)
    gives the same keys, ids and pools as the same records held as objects."""
    rows = {
        "qry": [f"query {i % 7}" for i in range(40)],
        "pos_text": [f"positive {i % 11}" for i in range(40)],
        "dataset": [f"S{i % 3}" for i in range(40)],
    }
    table = RecordTable(Dataset.from_dict(rows))
    objects = [table[i] for i in range(len(table))]
    assert list(table.query_keys) == [r.query.key for r in objects]
    assert table.positive_keys[5] == objects[5].positive.key and table.query_keys.digests.shape == (40, 32)
    assert list(table.query_ids) == [f"S{i % 3}-{i}" for i in range(40)] and table.query_ids[-1] == "S0-39"
    assert list(table.sources) == rows["dataset"] and table.sources.names == ["S0", "S1", "S2"]
    first, mapping = distinct_rows(table.query_keys)
    assert (first.tolist(), mapping.tolist()) == tuple(x.tolist() for x in distinct_rows(list(table.query_keys)))
    assert first.tolist() == list(range(7)) and mapping.tolist() == [i % 7 for i in range(40)]
    for mode in ("global", "dataset", "target_modality"):
        compact, reference = build_pools(table, mode), build_pools(objects, mode)
        assert {k: v.tolist() for k, v in compact.pools.items()} == {k: v.tolist() for k, v in reference.pools.items()}
        assert compact.duplicates == reference.duplicates and compact.query_pool == reference.query_pool
        assert compact.positive_ids.tolist() == reference.positive_ids.tolist()
        assert list(compact.candidate_keys) == list(reference.candidate_keys)
    # fingerprints (cache names) hash digests and streamed ids as the lists of strings they stand for
    assert _hash(table.query_keys, iter(table.query_ids)) == _hash(list(table.query_keys), list(table.query_ids))


def test_pair_similarities_are_the_cosines_of_each_record_and_its_candidate():
    from unime_v2.data_builders.mining.retrieval import pair_similarities

    rng = np.random.default_rng(0)
    queries, candidates = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))
    rows, ids = np.array([2, 0, 1, 2]), np.array([4, 4, 0, 3])
    expected = [
        queries[r] @ candidates[c] / np.linalg.norm(queries[r]) / np.linalg.norm(candidates[c])
        for r, c in zip(rows, ids)
    ]
    np.testing.assert_allclose(pair_similarities(queries, rows, candidates, ids, chunk_size=3), expected, rtol=1e-5)
