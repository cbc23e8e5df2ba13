"""Readers parse small fixture folders in each public layout; bad input gives errors naming the dataset and row."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict
from PIL import Image as PILImage

from tests.trainers.evaluation.conftest import write_image
from unime_v2.trainers.evaluation import (
    mmeb_dataset,
    mmeb_eval_sources,
    read_caption_folder,
    read_sharegpt4v,
    read_sugarcrepe,
    read_urban1k,
    retrieval_sources,
    sugarcrepe_sources,
)


def mmeb_rows(task: str, n: int = 2) -> dict[str, list]:
    return {
        "qry_text": [f"<|image_1|>\nWhat is in the image? {i}" for i in range(n)],
        "qry_img_path": [f"{task}/q{i}.png" for i in range(n)],
        "tgt_text": [["a cat", "a dog", "a car"] for _ in range(n)],
        "tgt_img_path": [["", "", ""] for _ in range(n)],
    }


@pytest.fixture
def mmeb_eval_copy(tmp_path: Path) -> tuple[Path, Path]:
    """MMEB-eval as published: one datasets subset per task (split test) and an image folder."""
    data, images = tmp_path / "MMEB-eval", tmp_path / "eval_images"
    for task in ("VOC2007", "ImageNet-A"):
        DatasetDict({"test": Dataset.from_dict(mmeb_rows(task))}).save_to_disk(str(data / task))
        for i in range(2):
            write_image(images / task / f"q{i}.png")
    return data, images


def test_mmeb_eval_subsets_read_with_tasks_and_image_paths(mmeb_eval_copy) -> None:
    data, images = mmeb_eval_copy
    sources = mmeb_eval_sources(str(data), str(images))
    assert [s.name for s in sources] == ["VOC2007", "ImageNet-A"]  # MMEB order
    voc = sources[0].load()
    assert voc.task.meta_task == "classification" and not voc.task.ood
    assert sources[1].load().task.ood
    assert voc.queries[1] == {"text": "<|image_1|>\nWhat is in the image? 1", "image": str(images / "VOC2007/q1.png")}
    assert [c["text"] for c in voc.candidates[0]] == ["a cat", "a dog", "a car"]
    assert all(c["image"] is None for c in voc.candidates[0])


def test_mini_mmeb_export_reads_through_the_same_reader(tmp_path: Path) -> None:
    from unime_v2.data_builders.mini_mmeb import MiniMMEBConfig, build_mini_mmeb, export_mmeb_files

    config = MiniMMEBConfig(train_pairs=0, eval_queries=2, num_candidates=4, caption_images=0,
                            long_caption_images=0, compositional_per_subset=0, tasks=["MiniCOCO-i2t", "MiniVOC-cls"])  # fmt: skip
    built = build_mini_mmeb(config)
    export_mmeb_files(built, str(tmp_path))
    sources = mmeb_eval_sources(str(tmp_path))
    assert sorted(s.name for s in sources) == ["MiniCOCO-i2t", "MiniVOC-cls"]
    rows = built["mmeb"]["test"]
    for source in sources:
        data = source.load()
        original = [r for r in rows if r["dataset"] == source.name]
        assert [q["text"] for q in data.queries] == [r["qry_text"] for r in original]
        assert [[c["text"] for c in cands] for cands in data.candidates] == [r["tgt_text"] for r in original]
        first = data.queries[0]["image"]
        assert PILImage.open(first).tobytes() == original[0]["qry_image"].convert("RGB").tobytes()


def test_retrieval_layouts_read(authors_data: Path) -> None:
    flickr, coco, share, urban = [s.load() for s in retrieval_sources(authors_data)]
    assert len(flickr.images) == 3 and len(flickr.captions) == 15
    assert flickr.caption_image == [i for i in range(3) for _ in range(5)]
    assert len(coco.captions) == 15  # COCO keeps the first five of six
    assert coco.captions[5] == "coco_test image 1 caption 0"
    assert share.captions == ["long caption 0", "long caption 1", "long caption 2"]
    assert share.images[2].endswith("coco/img2.png") and share.caption_image == [0, 1, 2]
    assert urban.captions == ["an urban scene 0", "an urban scene 1"] and urban.images[1].endswith("1.jpg")


def test_sugarcrepe_layout_reads_seven_subsets(authors_data: Path) -> None:
    sources = sugarcrepe_sources(authors_data)
    assert [s.name for s in sources] == ["replace-obj", "replace-att", "replace-rel", "swap-obj", "swap-att",
                                         "add-obj", "add-att"]  # fmt: skip
    subset = sources[3].load()
    assert subset.positives == ["pos 0", "pos 1"] and subset.negatives == ["neg 0", "neg 1"]
    assert subset.images[1].endswith("val2017/000000000001.jpg")


# ----------------------------------------------------------------------------------------------- bad input


def test_missing_files_name_the_dataset_and_row(authors_data: Path, mmeb_eval_copy) -> None:
    (authors_data / "coco2017" / "val2017" / "000000000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"swap-att row 1: image file .*000000000001.jpg"):
        read_sugarcrepe(authors_data / "sugar-crepe" / "data", authors_data / "coco2017" / "val2017", "swap-att")
    (authors_data / "Urban1k" / "Urban1k" / "image" / "1.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"Urban1K: image of row 1 \(1.txt\)"):
        read_urban1k(authors_data / "Urban1k" / "Urban1k")
    with pytest.raises(FileNotFoundError, match="Flickr30K: folder"):
        read_caption_folder(authors_data / "nowhere", "Flickr30K")
    with pytest.raises(FileNotFoundError, match="ShareGPT4V: JSON file"):
        read_sharegpt4v(authors_data / "none.json", authors_data)
    data, images = mmeb_eval_copy
    (images / "VOC2007" / "q1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"VOC2007 row 1 query: image file .*q1.png"):
        mmeb_eval_sources(str(data), str(images))[0].load()


def test_candidate_lists_of_different_lengths_and_empty_datasets_are_errors() -> None:
    row = {"qry_text": "q", "qry_img_path": "", "tgt_text": ["a", "b", "c"], "tgt_img_path": ["", ""]}
    with pytest.raises(ValueError, match="OVEN row 1: tgt_text has 3 candidates but the candidate images list has 2"):
        mmeb_dataset("OVEN", [{**row, "tgt_img_path": ["", "", ""]}, row])
    with pytest.raises(ValueError, match="OVEN: the dataset is empty"):
        mmeb_dataset("OVEN", [])
    with pytest.raises(ValueError, match="OVEN row 0: no candidates"):
        mmeb_dataset("OVEN", [{**row, "tgt_text": []}])
