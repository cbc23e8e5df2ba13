"""A corpus of candidates (docs/mining.md, "A corpus of candidates"): ``corpus`` becomes the retrieval pool (with
the positives: ``corpus+positives``), mined negatives name corpus ids, a query's positives are never its negatives."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import Dataset
from PIL import Image

from unime_v2.data_builders.mining.config import MiningConfig
from unime_v2.data_builders.mining.pipeline import load_corpus, mine
from unime_v2.data_builders.mining.records import CorpusTable, Item, QueryRecord
from unime_v2.data_builders.mining.retrieval import build_pools, retrieve


NAMES = ["red", "green", "blue", "yellow", "purple", "orange"]


def records() -> list[QueryRecord]:
    return [QueryRecord(f"q{i}", "A", Item(f"query {i}", None), Item(NAMES[i], None)) for i in range(3)]


def corpus(texts: list[str]) -> CorpusTable:
    return CorpusTable(Dataset.from_dict({"id": [f"d{i}" for i in range(len(texts))], "text": texts}))


def test_corpus_pool_holds_the_corpus_and_excludes_each_querys_positive():
    pools = build_pools(records(), "corpus", corpus(["red", "stone", "sky", "stone"]))
    assert pools.pools["corpus"].tolist() == [3, 4, 5]  # 3 positives first, then the distinct corpus items
    assert pools.duplicates["corpus"] == 1
    assert pools.excluded[0].tolist() == [0, 3]  # query 0's positive "red" is corpus item d0
    assert pools.candidates.corpus_id(4) == "d1" and pools.candidates.corpus_id(0) == ""
    embeddings = np.eye(7, dtype=np.float32)[[0, 1, 2, 0, 4, 5, 4]] + 0.01
    result = retrieve(embeddings[[0, 1, 2]], embeddings, pools, delta=0.999, top_k=3, use_gpu=False)
    assert 3 not in result.row(0)[0].tolist() and 3 in result.row(1)[0].tolist()


def test_corpus_plus_positives_adds_the_positives_once():
    pools = build_pools(records(), "corpus+positives", corpus(["red", "stone"]))
    assert pools.pools["corpus"].tolist() == [0, 1, 2, 4]  # corpus "red" is the positive "red"
    assert pools.duplicates["corpus"] == 1


def test_corpus_modes_and_the_corpus_go_together(tmp_path):
    with pytest.raises(ValueError, match="needs a corpus"):
        MiningConfig(pool="corpus")
    with pytest.raises(ValueError, match="choose pool from"):
        MiningConfig(corpus="c.jsonl")


@pytest.mark.parametrize(
    "rows, message",
    [
        ({"name": ["a"], "text": ["x"]}, r"corpus .*: corpus lacks its id column 'id'"),
        ({"id": ["a", "a"], "text": ["x", "y"]}, r"corpus ids are not unique: 'a'"),
        ({"id": ["a"], "caption": ["x"]}, r"neither a text column 'text' nor an image column 'image'"),
        ({"id": ["a"], "text": [""]}, r"corpus item a \(row 0\): has neither text nor image"),
    ],
)
def test_a_bad_corpus_is_named(tmp_path, rows, message):
    Dataset.from_dict(rows).to_json(str(tmp_path / "c.jsonl"))
    config = MiningConfig(corpus=str(tmp_path / "c.jsonl"), pool="corpus", output_dir=str(tmp_path / "out"))
    with pytest.raises((KeyError, ValueError), match=message):
        load_corpus(config)


@pytest.fixture(scope="module")
def mined(tmp_path_factory, tiny_backbone_dirs):
    root = tmp_path_factory.mktemp("corpus")
    rows = [{"qry": f"a thing coloured {name}", "pos_text": name} for name in NAMES]
    (root / "pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    Image.new("RGB", (16, 16), (200, 30, 30)).save(root / "swatch.png")
    items = [
        {"doc": f"doc-{i}", "body": f"{name} paint, shade {j}", "picture": None}
        for i, (name, j) in enumerate((n, j) for n in NAMES for j in range(2))
    ]
    items.append({"doc": "doc-copy", "body": "red", "picture": None})  # a copy of query 0's positive
    items.append({"doc": "doc-image", "body": "", "picture": "swatch.png"})
    Dataset.from_list(items).to_parquet(str(root / "corpus.parquet"))
    settings = dict(
        data=str(root / "pairs.jsonl"),
        corpus=str(root / "corpus.parquet"),
        corpus_id_column="doc",
        corpus_text_column="body",
        corpus_image_column="picture",
        corpus_image_root=str(root),
        embedder=str(tiny_backbone_dirs["qwen2_vl"]),
        judge=str(tiny_backbone_dirs["qwen2_5_vl"]),
        delta=0.999,
        beta=0.0,
        num_negatives=3,
        top_k=5,
        progress=False,
        faiss_gpu=False,
    )
    only = mine(MiningConfig(**settings, pool="corpus", output_dir=str(root / "only")))
    both = mine(MiningConfig(**settings, pool="corpus+positives", output_dir=str(root / "both")))
    return items, only, both


def test_mined_negatives_name_corpus_ids(mined):
    items, only, _ = mined
    text_of = {item["doc"]: item["body"] for item in items}
    for row in only.dataset:
        assert len(row["neg_corpus_ids"]) == 3 and all(i in text_of for i in row["neg_corpus_ids"])
        assert row["neg_texts"] == [text_of[i] for i in row["neg_corpus_ids"]]


def test_a_corpus_copy_of_the_positive_is_never_its_negative(mined):
    _, only, both = mined
    for result in (only, both):
        for row in result.dataset:
            assert row["pos_text"] not in row["neg_texts"]
            if row["pos_text"] == "red":
                assert "doc-copy" not in row["neg_corpus_ids"]


def test_corpus_plus_positives_may_take_other_queries_positives(mined):
    _, _, both = mined
    from_positives = [t for row in both.dataset for t, i in zip(row["neg_texts"], row["neg_corpus_ids"]) if not i]
    assert set(from_positives) <= set(NAMES)
    assert both.report["counts"]["duplicate_candidates"] == 1  # doc-copy is the positive "red"
