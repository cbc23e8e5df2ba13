"""Fixture folders in the public evaluation layouts (docs/evaluation.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset, Features, Image, List, Value
from PIL import Image as PILImage


def write_image(path: Path, color: tuple[int, int, int] = (200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", (16, 16), color).save(path)
    return path


def write_authors_data(tmp_path: Path) -> Path:
    """The authors' data/ folder: flickr30k_test, coco_test, shareGPT4v, Urban1k, sugar-crepe, coco2017."""
    root = tmp_path / "data"
    features = Features({"image": Image(), "text": List(Value("string"))})
    for name, captions in (("flickr30k_test", 5), ("coco_test", 6)):
        rows = {
            "image": [str(write_image(tmp_path / "src" / f"{name}{i}.png", (i * 60, 0, 0))) for i in range(3)],
            "text": [[f"{name} image {i} caption {j}" for j in range(captions)] for i in range(3)],
        }
        Dataset.from_dict(rows, features=features).to_parquet(
            str(root / name / "data" / "test-00000-of-00001.parquet")
        )
    share = root / "shareGPT4v" / "data"
    records = [
        {"image": f"coco/img{i}.png", "conversations": [{"value": "describe"}, {"value": f"long\ncaption {i}"}]}
        for i in range(3)
    ]
    for i in range(3):
        write_image(share / "coco" / f"img{i}.png")
    (share / "shareGPT4v").mkdir(parents=True)
    (share / "shareGPT4v" / "share-captioner_coco_lcs_sam_1246k_1107.json").write_text(json.dumps(records))
    urban = root / "Urban1k" / "Urban1k"
    for i in range(2):
        write_image(urban / "image" / f"{i}.jpg")
        (urban / "caption").mkdir(parents=True, exist_ok=True)
        (urban / "caption" / f"{i}.txt").write_text(f"an urban scene {i}\nsecond line\n")
    for subset in ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att"):
        items = {
            str(i): {"filename": f"{i:012d}.jpg", "caption": f"pos {i}", "negative_caption": f"neg {i}"}
            for i in range(2)
        }
        (root / "sugar-crepe" / "data").mkdir(parents=True, exist_ok=True)
        (root / "sugar-crepe" / "data" / f"{subset}.json").write_text(json.dumps(items))
    for i in range(2):
        write_image(root / "coco2017" / "val2017" / f"{i:012d}.jpg")
    return root


@pytest.fixture
def authors_data(tmp_path: Path) -> Path:
    return write_authors_data(tmp_path)
