"""``labels:mini_mmeb``: mini-MMEB training rows scored by their labels only (positive 1, every negative 0), one-edit
hard distractors interleaved two to one with the other candidates, facts clear of the held-out queries."""

from __future__ import annotations

import json
import random

import datasets
import pytest

from unime_v2.data_builders.formats.mined import iter_undecoded_rows
from unime_v2.data_builders.formats.training_records import (
    LABELS_MINI_MMEB_NAME,
    labelled_mined_dataset,
    labelled_mini_mmeb,
    labelled_negative_order,
)
from unime_v2.data_builders.mini_mmeb import ONE_EDIT_KINDS, MiniMMEBConfig
from unime_v2.data_builders.mini_mmeb.scenes import spec_key
from unime_v2.data_builders.mini_mmeb.splits import heldout_query_keys, mini_mmeb_splits


TASKS = ["MiniImageNet-cls", "MiniCOCO-i2t", "MiniCOCO-t2i"]
EXTRA = {"tasks": TASKS}


@pytest.fixture(scope="module")
def train_rows() -> datasets.Dataset:
    """Mini-MMEB training rows (ground truth + 10 candidates each) of three small IND tasks."""
    train, _ = mini_mmeb_splits(0, 4, 8, 2, EXTRA)
    return train


def item_key(text: str | None, image: dict | None) -> tuple[str, bytes | None]:
    return text or "", image["bytes"] if image else None


def interleaved(hard: int, other: int) -> str:
    """The kind pattern of a list with ``hard`` one-edit and ``other`` other negatives: 'HHO' while both remain,
    then the rest of whichever is left."""
    pattern = ""
    while hard or other:
        pattern += "H" * min(2, hard) + "O" * min(1, other)
        hard, other = max(0, hard - 2), max(0, other - 1)
    return pattern


KINDS = ["gt", "random", "replace_attribute", "random", "swap_attributes", "add_object", "random", "remove_object",
         "replace_attribute"]  # fmt: skip


def test_negative_order_interleaves_one_edit_kinds_two_to_one() -> None:
    order = labelled_negative_order(KINDS, random.Random(0))
    assert sorted(order) == list(range(1, len(KINDS)))  # every negative once, never the ground truth
    assert "".join("H" if KINDS[j] in ONE_EDIT_KINDS else "O" for j in order) == "HHOHHOHO"
    few_hard = ["gt", "random", "add_object", "random", "random", "random"]
    order = labelled_negative_order(few_hard, random.Random(0))
    assert "".join("H" if few_hard[j] in ONE_EDIT_KINDS else "O" for j in order) == "HOOOO"


def test_negative_order_with_one_kind_only_or_no_negative() -> None:
    assert sorted(labelled_negative_order(["gt", "random", "random", "random"], random.Random(0))) == [1, 2, 3]
    assert sorted(labelled_negative_order(["gt", "swap_attributes", "add_object"], random.Random(0))) == [1, 2]
    assert labelled_negative_order(["gt"], random.Random(0)) == []


def test_negative_order_is_seeded() -> None:
    first = labelled_negative_order(KINDS, random.Random(0))
    assert labelled_negative_order(KINDS, random.Random(0)) == first
    assert labelled_negative_order(KINDS, random.Random(1)) != first


def test_records_are_scored_by_labels_and_ordered_hard_first(train_rows) -> None:
    mined = labelled_mined_dataset(train_rows, seed=0)
    assert len(mined) == len(train_rows)
    mixed = 0
    for index, (record, row) in enumerate(zip(iter_undecoded_rows(mined), iter_undecoded_rows(train_rows))):
        assert record["pos_score"] == 1.0 and record["neg_scores"] == [0.0] * 10, index
        assert item_key(record["pos_text"], record["pos_image"]) == item_key(row["tgt_text"][0], row["tgt_image"][0])
        assert record["source"] == row["dataset"] and record["query_text"] == row["qry_text"]
        positions = {item_key(t, i): j for j, (t, i) in enumerate(zip(row["tgt_text"], row["tgt_image"])) if j}
        assert len(positions) == len(row["tgt_text"]) - 1  # candidates tell apart by text and image
        order = [positions[item_key(t, i)] for t, i in zip(record["neg_texts"], record["neg_images"])]
        assert sorted(order) == list(range(1, 11)), index
        kinds = [row["tgt_kind"][j] for j in order]
        hard = sum(kind in ONE_EDIT_KINDS for kind in kinds)
        mixed += 0 < hard < len(kinds)
        assert "".join("H" if kind in ONE_EDIT_KINDS else "O" for kind in kinds) == interleaved(hard, 10 - hard)
    assert mixed >= len(train_rows) // 2  # the interleaving was exercised, not only one-kind lists


def test_records_are_seeded(train_rows) -> None:
    def negatives(mined: datasets.Dataset) -> list:
        return [[item_key(t, i) for t, i in zip(r["neg_texts"], r["neg_images"])] for r in iter_undecoded_rows(mined)]

    first = negatives(labelled_mined_dataset(train_rows, seed=0))
    assert negatives(labelled_mined_dataset(train_rows, seed=0)) == first
    assert negatives(labelled_mined_dataset(train_rows, seed=1)) != first


def test_fewer_or_more_negatives_than_stored(train_rows) -> None:
    full = list(iter_undecoded_rows(labelled_mined_dataset(train_rows, seed=0)))
    four = list(iter_undecoded_rows(labelled_mined_dataset(train_rows, num_negatives=4, seed=0)))
    assert [r["neg_texts"] for r in four] == [r["neg_texts"][:4] for r in full]
    assert all(r["neg_scores"] == [0.0] * 4 for r in four)
    short = train_rows.select(range(2)).to_list()
    for row in short:
        for column in ("tgt_text", "tgt_image", "tgt_kind", "tgt_scene"):
            row[column] = row[column][:4]
    padded = list(iter_undecoded_rows(labelled_mined_dataset(datasets.Dataset.from_list(short, train_rows.features))))
    for record in padded:
        keys = [item_key(t, i) for t, i in zip(record["neg_texts"], record["neg_images"])]
        assert len(keys) == 10 and len(set(keys)) == 3
        assert keys == [keys[j % 3] for j in range(10)]  # the three negatives repeated in order


def test_a_row_without_negative_names_the_row(train_rows) -> None:
    rows = train_rows.select(range(3)).to_list()
    for column in ("tgt_text", "tgt_image", "tgt_kind", "tgt_scene"):
        rows[2][column] = rows[2][column][:1]
    broken = datasets.Dataset.from_list(rows, train_rows.features)
    with pytest.raises(ValueError, match=rf"row 2 \({rows[2]['dataset']}\).*no negative"):
        labelled_mined_dataset(broken)


def query_facts(row: dict) -> str:
    """A row's query key as ``splits.query_key`` forms it: task, query text, image facts (jitter ignored)."""
    scene = json.loads(row["qry_scene"]).get("scene")
    return "\x00".join((row["dataset"], row["qry_text"], spec_key(scene) if scene else ""))


def test_training_queries_keep_clear_of_the_heldout_queries() -> None:
    mined = labelled_mini_mmeb(0, 20, EXTRA)
    assert len(mined) == 20 * len(TASKS)
    assert set(mined["pos_score"]) == {1.0} and {s for r in mined["neg_scores"] for s in r} == {0.0}
    # the records are the training rows of the split that reserves the first 200 held-out queries
    train, heldout = mini_mmeb_splits(0, 20, 200, 2, EXTRA)
    columns = ["dataset", "qry_text", "qry_scene", "qry_image", "tgt_text", "tgt_image"]
    rows = list(iter_undecoded_rows(train.select_columns(columns)))
    for record, row in zip(iter_undecoded_rows(mined), rows):
        assert record["query_text"] == row["qry_text"] and record["source"] == row["dataset"]
        assert item_key("", record["query_image"]) == item_key("", row["qry_image"])
        assert item_key(record["pos_text"], record["pos_image"]) == item_key(row["tgt_text"][0], row["tgt_image"][0])
    config = MiniMMEBConfig(seed=0, train_pairs=0, caption_images=0, long_caption_images=0,
                            compositional_per_subset=0, tasks=TASKS)  # fmt: skip
    reserved = heldout_query_keys(config, 200)
    assert {query_facts(r) for r in heldout.select_columns(["dataset", "qry_text", "qry_scene"])} == reserved
    assert not {query_facts(r) for r in rows} & reserved
    # without the reserve the same draws do hit held-out facts: the check above is not vacuous
    unreserved, _ = mini_mmeb_splits(0, 20, 0, 2, EXTRA)
    assert {query_facts(r) for r in unreserved.select_columns(["dataset", "qry_text", "qry_scene"])} & reserved


def test_labelled_mini_mmeb_is_seeded() -> None:
    def content(mined: datasets.Dataset) -> list:
        return [(r["query_text"], r["pos_text"], r["neg_texts"], item_key("", r["query_image"]))
                for r in iter_undecoded_rows(mined)]  # fmt: skip

    first = content(labelled_mini_mmeb(0, 3, EXTRA, heldout_reserve=10))
    assert content(labelled_mini_mmeb(0, 3, EXTRA, heldout_reserve=10)) == first
    assert content(labelled_mini_mmeb(1, 3, EXTRA, heldout_reserve=10)) != first


def test_reranker_records_read_labels_mini_mmeb() -> None:
    from unime_v2.trainers.reranker import UniMEV2RerankerDataArguments, reranker_records

    data_args = UniMEV2RerankerDataArguments(
        train_data="labels:mini_mmeb", mini_mmeb_train_per_task=2, mini_mmeb_config=json.dumps(EXTRA)
    )
    records = reranker_records(data_args)
    assert len(records) == 2 * len(TASKS) and records.name == LABELS_MINI_MMEB_NAME
    for index in range(len(records)):
        assert records[index]["scores"] == [1.0] + [0.0] * 10
        assert len(records[index]["negatives"]) == 10
    first = next(iter_undecoded_rows(labelled_mini_mmeb(0, 2, EXTRA)))
    assert records[0]["positive"]["text"] == first["pos_text"] and records[0]["query"]["text"] == first["query_text"]
