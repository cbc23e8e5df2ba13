"""The mined-dataset schema and its lossless conversion to and from the authors' JSON."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from unime_v2.data_builders.formats.mined import (
    MINED_FEATURES,
    from_authors_json,
    make_mined_row,
    to_authors_json,
    validate_mined_record,
)


SAMPLE = Path(__file__).parents[2] / "fixtures" / "official-mined-negatives-example.json"


def image_paths(records: list[dict]) -> set[str]:
    """Every non-empty relative image path of authors' records."""
    paths = set()
    for record in records:
        paths.update([record["query_image"], record["pos_image"], *(image for _, image in record["hard_negatives"])])
    return paths - {""}


def make_image_root(records: list[dict], root: Path) -> Path:
    """Placeholder images at the records' relative paths, each a colour derived from its path."""
    for relative in sorted(image_paths(records)):
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        colour = tuple(int(x) for x in np.frombuffer(relative.encode()[-3:].rjust(3, b"a"), dtype=np.uint8))
        Image.new("RGB", (8, 8), colour).save(target)
    return root


@pytest.fixture(scope="module")
def sample_records() -> list[dict]:
    return json.loads(SAMPLE.read_text())


@pytest.fixture
def sample_root(tmp_path: Path, sample_records: list[dict]) -> Path:
    return make_image_root(sample_records, tmp_path / "mmeb_train")


def write_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records))
    return path


def test_authors_sample_parses_with_its_images_and_paths(sample_records: list[dict], sample_root: Path) -> None:
    mined = from_authors_json(SAMPLE, sample_root, show_progress_bar=False)
    assert len(mined) == len(sample_records) == 50
    assert mined.features == MINED_FEATURES
    first, record = mined[0], sample_records[0]
    assert first["query_text"] == record["query_text"]
    assert first["query_image_path"] == record["query_image"]
    assert first["query_image"].size == (8, 8)  # decoded from the image root
    assert first["pos_image"] is None and record["pos_image"] == ""
    assert first["neg_texts"] == [text for text, _ in record["hard_negatives"]]
    np.testing.assert_array_equal(np.float32(first["neg_scores"]), np.float32(record["hard_negatives_scores"]))
    assert all(math.isnan(s) for s in first["neg_similarities"])
    assert first["source"] == "A-OKVQA"  # from images/A-OKVQA/...
    assert first["query_id"] == "official-mined-negatives-example-0"


def test_round_trip_json_dataset_json_loses_nothing(
    sample_records: list[dict], sample_root: Path, tmp_path: Path
) -> None:
    mined = from_authors_json(SAMPLE, sample_root, show_progress_bar=False)
    stored = tmp_path / "stored"
    mined.save_to_disk(str(stored))  # the relative paths must survive storage, not only the in-memory dataset
    out = to_authors_json(
        datasets.load_from_disk(str(stored)), tmp_path / "out.json", sample_root, show_progress_bar=False
    )
    written = json.loads(out.read_text())
    assert len(written) == len(sample_records)
    for original, copy_ in zip(sample_records, written):
        assert list(copy_) == list(original)
        for key in ("query_text", "query_image", "pos_text", "pos_image", "hard_negatives"):
            assert copy_[key] == original[key]
        assert np.float32(copy_["query_pos_scores"]) == np.float32(original["query_pos_scores"])
        np.testing.assert_array_equal(
            np.float32(copy_["hard_negatives_scores"]), np.float32(original["hard_negatives_scores"])
        )


def test_export_to_a_new_root_writes_the_same_images(sample_root: Path, tmp_path: Path) -> None:
    mined = from_authors_json(SAMPLE, sample_root, show_progress_bar=False)
    new_root = tmp_path / "new_root"
    to_authors_json(mined, tmp_path / "out.json", new_root, show_progress_bar=False)
    for relative in image_paths(json.loads(SAMPLE.read_text())):
        assert (new_root / relative).read_bytes() == (sample_root / relative).read_bytes()


def _row(**overrides) -> dict:
    fields = dict(
        query_text="<|image_1|>\nRepresent the given image.\n",
        query_image=Image.new("RGB", (8, 8), (200, 10, 10)),
        pos_text="a red square",
        pos_score=0.9,
        neg_texts=[f"negative {j}" for j in range(10)],
        neg_scores=[0.1 * j for j in range(10)],
        source="Toy",
        query_id="toy-0",
    )
    fields.update(overrides)
    return make_mined_row(**fields)


def test_rows_with_in_memory_images_export_to_generated_paths(tmp_path: Path) -> None:
    mined = datasets.Dataset.from_list([_row()], features=MINED_FEATURES)
    out = to_authors_json(mined, tmp_path / "toy.json", tmp_path / "root", show_progress_bar=False)
    record = json.loads(out.read_text())[0]
    assert record["query_image"] == "images/Toy/toy-0_query.png"
    assert Image.open(tmp_path / "root" / record["query_image"]).getpixel((0, 0)) == (200, 10, 10)
    back = from_authors_json(out, tmp_path / "root", show_progress_bar=False)[0]
    assert back["query_image"].getpixel((3, 3)) == (200, 10, 10)
    assert back["neg_texts"] == [f"negative {j}" for j in range(10)]


def test_mining_rows_build_with_from_list_and_keep_similarities() -> None:
    row = _row(neg_similarities=[0.5] * 10, neg_images=[None] * 9 + [Image.new("RGB", (4, 4))])
    mined = datasets.Dataset.from_list([row, row], features=MINED_FEATURES)
    assert mined[1]["neg_similarities"] == [0.5] * 10
    assert mined[1]["neg_images"][9].size == (4, 4) and mined[1]["neg_images"][0] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(neg_texts=r["neg_texts"][:9]), "expected 10"),
        (lambda r: r.update(pos_score=float("nan")), r"pos_score = nan is not a judge score"),
        (lambda r: r["neg_scores"].__setitem__(3, 1.5), r"neg_scores\[3\] = 1.5"),
        (lambda r: r["neg_scores"].__setitem__(0, -0.1), r"neg_scores\[0\] = -0.1"),
        (lambda r: r["neg_similarities"].__setitem__(2, 3.0), r"neg_similarities\[2\]"),
        (lambda r: r.update(neg_image_paths=[""] * 4), "neg_image_paths has 4 entries"),
        (lambda r: r.update(query_text="", query_image=None), "query has neither text nor image"),
        (lambda r: r.update(pos_image_path="images/x.png"), "has image path 'images/x.png' but no image"),
        (lambda r: r.pop("source"), r"missing column\(s\) \['source'\]"),
    ],
)
def test_validate_names_the_record_and_the_problem(change, message: str) -> None:
    record = copy.deepcopy(_row())
    change(record)
    with pytest.raises(ValueError, match=rf"^file.json: record 7: .*{message}"):
        validate_mined_record(record, 7, where="file.json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda rs: (rs[3]["hard_negatives"].pop(), rs[3]["hard_negatives_scores"].pop()),
            "record 3: has 9 hard negatives, expected 10",
        ),
        (
            lambda rs: rs[4]["hard_negatives_scores"].__setitem__(1, float("nan")),
            r"record 4: hard_negatives_scores\[1\]",
        ),
        (lambda rs: rs[5].update(query_pos_scores=2.0), "record 5: query_pos_scores = 2.0"),
        (lambda rs: rs[6].pop("pos_text"), r"record 6: missing key\(s\) \['pos_text'\]"),
        (lambda rs: rs[7].update(extra=1), r"record 7: unexpected key\(s\) \['extra'\]"),
        (lambda rs: rs[8].update(hard_negatives="text"), "record 8: hard_negatives must be a list"),
        (lambda rs: rs[9]["hard_negatives_scores"].pop(), "record 9: hard_negatives_scores has 9 entries"),
        (lambda rs: rs[2].update(query_text=None), "record 2: query_text must be a string"),
    ],
)
def test_malformed_authors_records_raise_naming_file_and_record(
    change, message: str, sample_records: list[dict], sample_root: Path, tmp_path: Path
) -> None:
    records = copy.deepcopy(sample_records)
    change(records)
    path = write_json(tmp_path / "bad.json", records)
    with pytest.raises(ValueError, match=message) as error:
        from_authors_json(path, sample_root, show_progress_bar=False)
    assert str(path) in str(error.value)


def test_missing_image_file_names_record_role_and_file(sample_records: list[dict], sample_root: Path) -> None:
    (sample_root / sample_records[0]["query_image"]).unlink()
    with pytest.raises(
        FileNotFoundError, match=r"record 0: query image 'images/A-OKVQA/Train/A-OKVQA_image_3179.jpg'"
    ):
        from_authors_json(SAMPLE, sample_root, show_progress_bar=False)


def test_files_that_are_not_the_schema_are_rejected(tmp_path: Path, sample_root: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('[{"query_text": ')
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        from_authors_json(broken, sample_root)
    with pytest.raises(ValueError, match="expected a JSON list of records"):
        from_authors_json(write_json(tmp_path / "dict.json", {"query_text": "x"}), sample_root)
    with pytest.raises(ValueError, match="record 0: expected an object"):
        from_authors_json(write_json(tmp_path / "list.json", [["x", "y"]]), sample_root)
    with pytest.raises(ValueError, match="contains no records"):
        from_authors_json(write_json(tmp_path / "empty.json", []), sample_root)
    with pytest.raises(FileNotFoundError, match="not found"):
        from_authors_json(tmp_path / "absent.json", sample_root)


def test_export_refuses_invalid_rows(tmp_path: Path) -> None:
    bad = _row()
    bad["neg_scores"][0] = float("nan")  # bypasses make_mined_row's validation, as a hand-built dataset could
    mined = datasets.Dataset.from_list([_row(), bad], features=MINED_FEATURES)
    with pytest.raises(ValueError, match=r"record 1: neg_scores\[0\] = nan"):
        to_authors_json(mined, tmp_path / "x.json", tmp_path / "root", show_progress_bar=False)
