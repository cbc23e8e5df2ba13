"""Several positives per query (docs/mining.md, "Several positives"): none is retrieved as a negative or counted
as a false negative, every one is scored by the judge, the least one is the sampling rule's reference, and the
mined dataset keeps them all with their scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unime_v2.data_builders.mining.config import MiningConfig
from unime_v2.data_builders.mining.pipeline import mine
from unime_v2.data_builders.mining.records import Item, QueryRecord
from unime_v2.data_builders.mining.retrieval import build_pools, retrieve
from unime_v2.modeling_unime_v2.scoring_unime_v2 import JudgeScorer


NAMES = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]


def record(i: int, more: tuple[str, ...] = ()) -> QueryRecord:
    return QueryRecord(
        f"q{i}", "A", Item(f"query {i}", None), Item(NAMES[i], None), tuple(Item(t, None) for t in more)
    )


def test_retrieval_never_returns_any_positive_nor_counts_it_as_near_duplicate():
    records = [record(0, ("green", "blue")), record(1), record(2), record(3)]
    pools = build_pools(records)
    assert pools.excluded is not None and pools.excluded[0].tolist() == [0, 1, 2]
    candidates = np.eye(4, dtype=np.float32) + 0.01
    queries = candidates[[1, 1, 2, 3]].copy()  # query 0 is closest to green, its further positive
    result = retrieve(queries, candidates, pools, delta=0.999, top_k=4, use_gpu=False)
    ids, _ = result.row(0)
    assert ids.tolist() == [3]  # red, green and blue are all its positives
    assert result.near_duplicates[0] == 0
    assert 0 in result.row(1)[0]  # another query still retrieves red


@pytest.fixture(scope="module")
def mined(tmp_path_factory, tiny_backbone_dirs):
    root = tmp_path_factory.mktemp("several_positives")
    rows = [
        {"qry": f"a thing coloured {name}", "pos_text": name, "more": [NAMES[(i + 1) % 8], {"text": f"{name} paint"}]}
        for i, name in enumerate(NAMES)
    ]
    (root / "pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = MiningConfig(
        data=str(root / "pairs.jsonl"),
        columns={"positives": "more"},
        embedder=str(tiny_backbone_dirs["qwen2_vl"]),
        judge=str(tiny_backbone_dirs["qwen2_5_vl"]),
        delta=0.999,
        beta=0.0,
        num_negatives=3,
        top_k=6,
        progress=False,
        faiss_gpu=False,
        output_dir=str(root / "out"),
    )
    return rows, mine(config)


def test_no_positive_is_mined_as_a_negative(mined):
    rows, result = mined
    for row, out in zip(rows, result.dataset):
        positives = {row["pos_text"], row["more"][0], row["more"][1]["text"]}
        assert not positives & set(out["neg_texts"]), out["query_id"]


def test_the_mined_dataset_keeps_every_positive_and_its_judge_score(mined):
    rows, result = mined
    for row, out in zip(rows, result.dataset):
        assert out["more_pos_texts"] == [row["more"][0], row["more"][1]["text"]]
        assert len(out["more_pos_scores"]) == 2 and all(0.0 <= s <= 1.0 for s in out["more_pos_scores"])
        assert out["more_pos_images"] == [None, None]


def test_the_least_positive_score_is_the_rules_reference(mined):
    _, result = mined
    for out in result.dataset:
        least = min([out["pos_score"], *out["more_pos_scores"]])
        if not all(s == 1.0 for s in out["neg_scores"]):  # not a fallback row
            assert max(out["neg_scores"]) <= least + 1e-6


def test_every_positive_is_judged(mined, tiny_backbone_dirs):
    rows, result = mined
    counts = result.report["counts"]
    assert counts["pairs_judged"] == 3 * counts["queries"] + sum(6 for _ in rows)  # 3 positives + top_k candidates
    judge = JudgeScorer.from_pretrained(str(tiny_backbone_dirs["qwen2_5_vl"]), device="cpu")
    out = result.dataset[0]
    positives = [{"text": t, "image": None} for t in [out["pos_text"], *out["more_pos_texts"]]]
    expected = judge.score_full_pairs({"text": out["query_text"], "image": None}, positives)
    np.testing.assert_allclose([out["pos_score"], *out["more_pos_scores"]], expected, atol=1e-6, rtol=0)


def test_a_bad_positives_entry_is_named(tmp_path):
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"qry": "q", "pos_text": "p", "more": [{"txt": "x"}]}) + "\n")
    config = MiningConfig(data=str(tmp_path / "pairs.jsonl"), columns={"positives": "more"}, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"record pairs-0 \(row 0\): more\[0\]: unknown key\(s\) \['txt'\]"):
        mine(config)


def test_positives_are_texts_or_items_with_images_and_repeats_are_dropped(tmp_path):
    from datasets import Dataset
    from PIL import Image

    from unime_v2.data_builders.mining.records import RecordColumns, load_query_records

    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    rows = {
        "qry": ["q"],
        "pos_text": ["p"],
        "dataset": ["A"],
        "more": [[{"text": "p", "image": None}, {"text": "", "image": "a.png"}, {"text": "p", "image": None}]],
    }
    table = load_query_records(Dataset.from_dict(rows), RecordColumns(positives="more"), str(tmp_path))
    (record,) = list(table)
    assert [(item.text, item.modality) for item in record.positives] == [("p", "text"), ("", "image")]
    assert table.more_positive_keys == [(record.positives[1].key,)]
