"""The one reader of user data (data_builders/sources.py): every accepted form loads, an unreadable path is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from unime_v2.data_builders.sources import ACCEPTED_FORMS, UnreadableSourceError, read_dataset


ROWS = [{"qry": f"query {i}", "pos_text": f"positive {i}", "dataset": "A"} for i in range(3)]


def write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = Dataset.from_list(rows)
    if path.suffix == ".jsonl":
        dataset.to_json(str(path), lines=True)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        dataset.to_csv(str(path), index=False)
    else:
        dataset.to_parquet(str(path))
    return path


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_each_file_format_loads(tmp_path, suffix):
    path = write(tmp_path / f"pairs{suffix}", ROWS)
    assert read_dataset(str(path)).to_list() == ROWS


def test_a_folder_reads_the_files_of_the_split(tmp_path):
    write(tmp_path / "data" / "train.jsonl", ROWS)
    write(tmp_path / "data" / "test.jsonl", ROWS[:1])
    assert read_dataset(str(tmp_path / "data")).to_list() == ROWS
    assert read_dataset(str(tmp_path / "data"), split="test").to_list() == ROWS[:1]


def test_a_folder_of_per_dataset_files_names_the_source_after_each_file(tmp_path):
    rows = [{k: v for k, v in row.items() if k != "dataset"} for row in ROWS]
    write(tmp_path / "data" / "A.jsonl", rows[:2])
    write(tmp_path / "data" / "B.jsonl", rows[2:])
    read = read_dataset(str(tmp_path / "data"), source_column="dataset")
    assert read["dataset"] == ["A", "A", "B"]


def test_save_to_disk_folders_load(tmp_path):
    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "one"))
    DatasetDict({"train": Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dict"))
    assert read_dataset(str(tmp_path / "one")).to_list() == ROWS
    assert read_dataset(str(tmp_path / "dict")).to_list() == ROWS
    with pytest.raises(ValueError, match=r"dict: no split 'test'"):
        read_dataset(str(tmp_path / "dict"), split="test")


@pytest.mark.parametrize("name", ["missing.jsonl", "missing/folder"])
def test_a_missing_path_names_it_and_the_accepted_forms(tmp_path, name):
    path = str(tmp_path / name)
    with pytest.raises(UnreadableSourceError) as error:
        read_dataset(path)
    assert path in str(error.value) and ACCEPTED_FORMS in str(error.value)


def test_an_unknown_file_type_or_empty_folder_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnreadableSourceError, match=r"notes.txt: unknown file type '.txt'"):
        read_dataset(str(tmp_path / "notes.txt"))
    with pytest.raises(UnreadableSourceError, match=r"empty: a folder with no data files"):
        read_dataset(str(tmp_path / "empty"))


def test_a_malformed_file_is_named(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"qry": "a"}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: cannot read it as json"):
        read_dataset(str(tmp_path / "bad.jsonl"))
