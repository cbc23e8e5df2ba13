"""Training records: the same from the authors' JSON and from our mined dataset; selection; bad input policy."""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from unime_v2.data_builders.formats.mined import MINED_FEATURES, from_authors_json, make_mined_row
from unime_v2.data_builders.formats.training_records import (
    TrainingRecords,
    load_mined_dataset,
    oracle_mined_dataset,
    select_negatives,
)


SAMPLE = Path(__file__).parents[2] / "fixtures" / "official-mined-negatives-example.json"


def make_image_root(records: list[dict], root: Path) -> Path:
    """Placeholder images at the records' relative paths, coloured by a hash of the path (so they differ)."""
    for record in records:
        for relative in [record["query_image"], record["pos_image"], *(i for _, i in record["hard_negatives"])]:
            if relative and not (root / relative).exists():
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                colour = tuple(int(b) for b in np.frombuffer(relative.encode()[-3:].rjust(3, b"a"), np.uint8))
                Image.new("RGB", (8, 8), colour).save(root / relative)
    return root


@pytest.fixture(scope="module")
def sample_records() -> list[dict]:
    return json.loads(SAMPLE.read_text())


@pytest.fixture
def sample_root(tmp_path: Path, sample_records: list[dict]) -> Path:
    return make_image_root(sample_records, tmp_path / "root")


def write_records(tmp_path: Path, records: list[dict], name: str = "mined.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def pixels(image) -> bytes | None:
    return None if image is None else image.convert("RGB").tobytes()


def same_item(a: dict, b: dict) -> bool:
    return a["text"] == b["text"] and pixels(a["image"]) == pixels(b["image"])


@pytest.mark.parametrize("selection", ["first", "random"])
def test_authors_json_and_mined_dataset_give_the_same_records(
    selection: str, sample_root: Path, tmp_path: Path
) -> None:
    from_json = TrainingRecords.from_authors_json(SAMPLE, sample_root, negative_selection=selection, seed=3)
    stored = tmp_path / "hub_copy"
    from_authors_json(SAMPLE, sample_root, show_progress_bar=False).save_to_disk(str(stored))
    from_disk = TrainingRecords(load_mined_dataset(str(stored)), negative_selection=selection, seed=3)
    assert len(from_json) == len(from_disk) == 50
    for index in (0, 17, 49):
        a, b = from_json[index], from_disk[index]
        assert same_item(a["query"], b["query"]) and same_item(a["positive"], b["positive"])
        assert len(a["negatives"]) == 8 and all(map(same_item, a["negatives"], b["negatives"]))
        assert a["scores"] == b["scores"]


def test_first_selection_is_the_authors_first_eight(sample_root: Path, sample_records: list[dict]) -> None:
    records = TrainingRecords.from_authors_json(SAMPLE, sample_root)
    record, source = records[0], sample_records[0]
    assert [n["text"] for n in record["negatives"]] == [t for t, _ in source["hard_negatives"][:8]]
    expected = [source["query_pos_scores"], *source["hard_negatives_scores"][:8]]
    np.testing.assert_array_equal(np.float32(record["scores"]), np.float32(expected))
    assert record["query"]["text"] == source["query_text"]
    assert record["query"]["image"].size == (8, 8) and record["positive"]["image"] is None


def test_random_selection_is_seeded_per_record_and_stable() -> None:
    picks = [select_negatives(10, 8, "random", seed=0, record_index=i) for i in range(20)]
    assert all(len(set(p)) == 8 and p == sorted(p) and max(p) < 10 for p in picks)
    assert len({tuple(p) for p in picks}) > 5  # records differ
    assert picks == [select_negatives(10, 8, "random", seed=0, record_index=i) for i in range(20)]
    assert picks != [select_negatives(10, 8, "random", seed=1, record_index=i) for i in range(20)]


def _short_records(sample_records: list[dict]) -> list[dict]:
    records = copy.deepcopy(sample_records[:6])
    for index, keep in ((2, 3), (4, 5)):
        records[index]["hard_negatives"] = records[index]["hard_negatives"][:keep]
        records[index]["hard_negatives_scores"] = records[index]["hard_negatives_scores"][:keep]
    return records


def test_fewer_than_k_negatives_is_an_error_naming_the_record(
    sample_records: list[dict], sample_root: Path, tmp_path: Path
) -> None:
    path = write_records(tmp_path, _short_records(sample_records))
    with pytest.raises(
        ValueError, match=r"record 2 has 3 hard negatives, fewer than num_hard_negatives=8 \(and 1 more"
    ):
        TrainingRecords.from_authors_json(path, sample_root)


def test_repeat_policy_pads_in_order_logs_and_counts(
    sample_records: list[dict], sample_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_records(tmp_path, _short_records(sample_records))
    with caplog.at_level(logging.WARNING):
        records = TrainingRecords.from_authors_json(path, sample_root, pad_policy="repeat")
    assert records.num_padded == 2 and records.padded_records == [2, 4]
    assert "2 record(s) have fewer than 8 hard negatives" in caplog.text
    stored = [t for t, _ in sample_records[2]["hard_negatives"][:3]]
    assert [n["text"] for n in records[2]["negatives"]] == [stored[j % 3] for j in range(8)]
    assert len(records[2]["scores"]) == 9 and len(records) == 6  # nothing skipped


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda r: r[3]["hard_negatives_scores"].__setitem__(0, float("nan")),
            r"record 3: hard_negatives_scores\[0\]",
        ),
        (lambda r: r[1].update(query_pos_scores=-0.5), "record 1: query_pos_scores = -0.5"),
        (lambda r: r[0].pop("hard_negatives"), "record 0: missing key"),
    ],
)
def test_bad_scores_and_schema_name_the_record(
    change, message: str, sample_records: list[dict], sample_root: Path, tmp_path: Path
) -> None:
    records = copy.deepcopy(sample_records[:5])
    change(records)
    with pytest.raises(ValueError, match=message):
        TrainingRecords.from_authors_json(write_records(tmp_path, records), sample_root)


def test_missing_image_names_the_record(sample_records: list[dict], sample_root: Path) -> None:
    (sample_root / sample_records[5]["query_image"]).unlink()
    with pytest.raises(FileNotFoundError, match="record 5: query image"):
        TrainingRecords.from_authors_json(SAMPLE, sample_root)


def test_mined_dataset_with_a_vanished_image_file_names_the_record(tmp_path: Path) -> None:
    image = tmp_path / "img.png"
    Image.new("RGB", (4, 4)).save(image)
    rows = [
        make_mined_row(
            query_text="q",
            pos_text="p",
            pos_score=1.0,
            neg_texts=["n"] * 10,
            neg_scores=[0.0] * 10,
            query_image=str(image) if i == 1 else None,
            query_image_path="img.png" if i == 1 else "",
        )
        for i in range(3)
    ]
    mined = datasets.Dataset.from_list(rows, features=MINED_FEATURES)
    image.unlink()
    with pytest.raises(FileNotFoundError, match=r"toy: record 1: query image file .*img.png"):
        TrainingRecords(mined, name="toy")


def test_a_dataset_without_the_mined_columns_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"not a mined dataset, missing column\(s\)"):
        TrainingRecords(datasets.Dataset.from_dict({"query_text": ["q"]}))


def test_bad_scores_inside_a_mined_dataset_name_the_record() -> None:
    good = make_mined_row(query_text="q", pos_text="p", pos_score=1.0, neg_texts=["n"] * 10, neg_scores=[0.0] * 10)
    bad = copy.deepcopy(good)
    bad["pos_score"] = math.inf
    mined = datasets.Dataset.from_list([good, good, bad], features=MINED_FEATURES)
    with pytest.raises(ValueError, match="hub/x: record 2: pos_score = inf"):
        TrainingRecords(mined, name="hub/x")


def test_oracle_demo_data_has_the_mined_schema_and_orders_negatives_hardest_first() -> None:
    from unime_v2.data_builders.mini_mmeb import MiniMMEBConfig, build_mini_mmeb, eval_candidates, oracle_score

    config = MiniMMEBConfig(
        seed=1,
        train_pairs=0,
        eval_queries=2,
        num_candidates=16,
        caption_images=0,
        long_caption_images=0,
        compositional_per_subset=0,
    )
    rows = build_mini_mmeb(config)["mmeb"]["test"]
    mined = oracle_mined_dataset(rows)
    assert mined.features == MINED_FEATURES and len(mined) == len(rows)
    row, record = rows[0], mined[0]
    scores = sorted((oracle_score(row, c) for c in eval_candidates(row)[1:]), reverse=True)
    assert record["pos_score"] == 1.0
    np.testing.assert_allclose(record["neg_scores"], scores[:10], rtol=1e-6)
    assert TrainingRecords(mined)[0]["scores"][0] == 1.0


def test_records_are_read_memory_mapped_and_decoded_in_dataloader_workers(sample_root: Path, tmp_path: Path) -> None:
    """What a training run at MMEB-train scale relies on: the mined dataset stays on disk (memory-mapped, images
    embedded or as Parquet references) and dataloader workers read and decode the records they are given."""
    import torch

    mined = from_authors_json(SAMPLE, sample_root, show_progress_bar=False)
    mined.save_to_disk(str(tmp_path / "embedded"))
    (tmp_path / "reference").mkdir()
    mined.to_parquet(str(tmp_path / "reference" / "data-00000-of-00001.parquet"))  # images as file references
    for folder in ("embedded", "reference"):
        records = TrainingRecords(load_mined_dataset(str(tmp_path / folder), cache_dir=str(tmp_path / "hf")))
        assert records.mined.cache_files, f"{folder}: the dataset was loaded into memory"
        loader = torch.utils.data.DataLoader(records, batch_size=4, num_workers=2, collate_fn=list)
        streamed = [record for batch in loader for record in batch]
        assert [r["query_id"] for r in streamed] == [records[i]["query_id"] for i in range(len(records))]
        for index in (0, 17, 49):
            expected = records[index]
            assert same_item(streamed[index]["query"], expected["query"])
            assert all(map(same_item, streamed[index]["negatives"], expected["negatives"]))
            assert streamed[index]["scores"] == expected["scores"]
