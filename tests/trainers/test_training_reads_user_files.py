"""Training and evaluation read the files people have (data_builders/sources.py): mined rows as JSONL or Parquet
files or a folder holding train.jsonl; MMEB-eval datasets as Parquet or CSV files beside JSONL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from datasets import Dataset
from PIL import Image

from unime_v2.data_builders.formats.training_records import TrainingRecords
from unime_v2.data_builders.sources import ACCEPTED_FORMS, UnreadableSourceError
from unime_v2.trainers.data import _read_mined
from unime_v2.trainers.evaluation.readers import mmeb_eval_sources


def mined_rows(image: str | None) -> list[dict]:
    return [
        {
            "query_id": f"q{i}",
            "source": "A",
            "query_text": f"<|image_1|> query {i}" if image else f"query {i}",
            "query_image": image,
            "query_image_path": "",
            "pos_text": f"positive {i}",
            "pos_image": None,
            "pos_image_path": "",
            "pos_score": 0.9,
            "neg_texts": [f"negative {i}"],
            "neg_images": [None],
            "neg_image_paths": [""],
            "neg_scores": [0.2],
            "neg_similarities": [0.5],
        }
        for i in range(3)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_training_reads_mined_rows_from_jsonl_with_image_paths(tmp_path):
    image = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(image)
    records = TrainingRecords(_read_mined(write_jsonl(tmp_path / "mined.jsonl", mined_rows(str(image))), "train"), 1)
    assert records[0]["query"]["image"].size == (8, 8)
    assert records[2]["negatives"] == [{"text": "negative 2", "image": None}]


def test_training_resolves_relative_image_paths_under_the_image_root(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (4, 4), (0, 0, 255)).save(tmp_path / "images" / "blue.png")
    source = write_jsonl(tmp_path / "data" / "train.jsonl", mined_rows("images/blue.png"))
    records = TrainingRecords(_read_mined(str(tmp_path / "data"), "train", str(tmp_path)), 1)
    assert records[1]["query"]["image"].size == (4, 4) and source.endswith("train.jsonl")


@pytest.mark.parametrize("form", ["folder", "parquet"])
def test_training_reads_a_folder_with_train_jsonl_and_parquet(tmp_path, form):
    if form == "folder":
        write_jsonl(tmp_path / "data" / "train.jsonl", mined_rows(None))
        source = str(tmp_path / "data")
    else:
        source = str(tmp_path / "mined.parquet")
        Dataset.from_list(mined_rows(None)).to_parquet(source)
    records = TrainingRecords(_read_mined(source, "train"), 1)
    assert [records[i]["positive"]["text"] for i in range(3)] == ["positive 0", "positive 1", "positive 2"]


def test_training_names_an_unreadable_path(tmp_path):
    with pytest.raises(UnreadableSourceError, match=re.escape(ACCEPTED_FORMS)):
        _read_mined(str(tmp_path / "mined.jsonl"), "train")


@pytest.mark.parametrize("suffix", [".parquet", ".json"])
def test_evaluation_reads_mmeb_datasets_as_parquet_or_json_beside_jsonl(tmp_path, suffix):
    rows = [{"qry_text": "a cat", "qry_img_path": "", "tgt_text": ["cat", "dog"], "tgt_img_path": ["", ""]}]
    write_jsonl(tmp_path / "eval" / "First.jsonl", rows)
    other = tmp_path / "eval" / f"Second{suffix}"
    if suffix == ".json":
        other.write_text(json.dumps(rows * 2))
    else:
        Dataset.from_list(rows * 2).to_parquet(str(other))
    sources = {source.name: source for source in mmeb_eval_sources(str(tmp_path / "eval"))}
    assert sorted(sources) == ["First", "Second"]
    assert len(sources["First"].load().queries) == 1
    assert len(sources["Second"].load().queries) == 2


def test_evaluation_names_a_missing_local_folder(tmp_path):
    with pytest.raises(UnreadableSourceError, match=r"no_eval: no such folder; MMEB-eval is a folder of"):
        mmeb_eval_sources(str(tmp_path / "no_eval"))
