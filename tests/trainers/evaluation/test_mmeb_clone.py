"""``--mmeb_eval`` on a local clone of TIGER-Lab/MMEB-eval in its published layout (docs/evaluation.md): a README
listing one config per subset, ``<subset>/test-00000-of-00001.parquet``, images under ``eval_images/``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from datasets import Dataset

from tests.trainers.evaluation.conftest import write_image
from unime_v2.trainers.evaluation import mmeb_eval_sources


REPO = Path(__file__).resolve().parents[3]
SUBSETS = ("ImageNet-1K", "MSCOCO_t2i", "OVEN")  # image→text, text→image, image+text→image+text
ROWS, CANDIDATES = 3, 4


def _rows(subset: str) -> dict[str, list]:
    """MMEB-eval's columns; image paths are relative to the image root (``eval_images``)."""

    def img(kind: str, i: int, j: int = 0) -> str:
        return f"{subset}/Test/{kind}_{i}_{j}.jpg"

    image_query = subset != "MSCOCO_t2i"
    image_targets = subset != "ImageNet-1K"
    return {
        "qry_text": [
            f"<|image_1|> Represent the given image for classification {i}" if image_query else f"a photo of thing {i}"
            for i in range(ROWS)
        ],
        "qry_img_path": [img("q", i) if image_query else "" for i in range(ROWS)],
        "tgt_text": [
            [f"<|image_1|> target {j}" if image_targets else f"label {i} {j}" for j in range(CANDIDATES)]
            for i in range(ROWS)
        ],
        "tgt_img_path": [[img("t", i, j) if image_targets else "" for j in range(CANDIDATES)] for i in range(ROWS)],
    }


def write_mmeb_eval_clone(root: Path) -> Path:
    """A small clone of the dataset repository, laid out as published."""
    clone = root / "MMEB-eval"
    front = ["---", "license: apache-2.0", "configs:"]
    for s, subset in enumerate(SUBSETS):
        rows = _rows(subset)
        (clone / subset).mkdir(parents=True)
        Dataset.from_dict(rows).to_parquet(str(clone / subset / "test-00000-of-00001.parquet"))
        paths = [p for p in rows["qry_img_path"] if p] + [p for ps in rows["tgt_img_path"] for p in ps if p]
        for k, path in enumerate(paths):
            write_image(clone / "eval_images" / path, ((37 * k + 90 * s) % 256, (11 * k) % 256, (200 - 23 * k) % 256))
        front += [f"- config_name: {subset}", "  data_files:", "  - split: test", f"    path: {subset}/test-*"]
    (clone / "README.md").write_text("\n".join([*front, "---", "", "# MMEB-eval", ""]), encoding="utf-8")
    return clone


def write_jsonl_copy(root: Path) -> Path:
    """The same rows as a folder of ``<task>.jsonl`` files (the other reader)."""
    folder = root / "jsonl"
    folder.mkdir()
    for subset in SUBSETS:
        rows = _rows(subset)
        lines = [json.dumps({k: v[i] for k, v in rows.items()}) for i in range(ROWS)]
        (folder / f"{subset}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    return write_mmeb_eval_clone(tmp_path)


def test_clone_lists_every_subset_with_images_under_eval_images(clone: Path) -> None:
    sources = mmeb_eval_sources(str(clone))
    assert [s.name for s in sources] == ["ImageNet-1K", "MSCOCO_t2i", "OVEN"]  # MMEB order
    imagenet = sources[0].load()
    assert imagenet.task.meta_task == "classification" and len(imagenet.queries) == ROWS
    assert imagenet.queries[1]["image"] == str(clone / "eval_images" / "ImageNet-1K/Test/q_1_0.jpg")
    assert [c["text"] for c in imagenet.candidates[2]] == [f"label 2 {j}" for j in range(CANDIDATES)]
    coco = sources[1].load()
    assert coco.queries[0] == {"text": "a photo of thing 0", "image": None}
    assert coco.candidates[0][3]["image"] == str(clone / "eval_images" / "MSCOCO_t2i/Test/t_0_3.jpg")
    assert [s.name for s in mmeb_eval_sources(str(clone), names=["OVEN"])] == ["OVEN"]
    (clone / "README.md").unlink()  # without its config list: the <subset>/test-*.parquet folders, same rows
    bare = mmeb_eval_sources(str(clone), str(clone / "eval_images"))
    assert [s.name for s in bare] == ["ImageNet-1K", "MSCOCO_t2i", "OVEN"] and bare[1].load() == coco


def test_clone_errors_name_the_folder_and_what_was_expected(clone: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"MMEB-eval: no MMEB-eval dataset\(s\) \['CIRR'\]; it has"):
        mmeb_eval_sources(str(clone), names=["CIRR"])
    with pytest.raises(FileNotFoundError, match=r"ImageNet-1K row 0 query: image file .*elsewhere/ImageNet-1K"):
        mmeb_eval_sources(str(clone), str(tmp_path / "elsewhere"))[0].load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no MMEB-eval datasets \(a README.md listing the subsets"):
        mmeb_eval_sources(str(tmp_path / "empty"))


def test_cli_scores_every_subset_of_a_clone_as_the_jsonl_route_does(clone, tiny_backbone_dirs, tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("evaluate_script", REPO / "examples" / "evaluate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    common = ["--model", str(tiny_backbone_dirs["qwen2_vl"]), "--suite", "mmeb", "--no_cache", "true",
              "--show_progress_bar", "false", "--batch_size", "4"]  # fmt: skip
    results = script.main([*common, "--mmeb_eval", str(clone), "--output_dir", str(tmp_path / "clone")])
    mmeb = results["suites"]["mmeb"]
    assert not mmeb["errors"] and set(mmeb["per_dataset"]) == set(SUBSETS)
    assert results["datasets"]["mmeb"] == "MMEB-eval"
    jsonl = ["--mmeb_eval", str(write_jsonl_copy(tmp_path)), "--image_root", str(clone / "eval_images")]
    reference = script.main([*common, *jsonl, "--output_dir", str(tmp_path / "jsonl")])
    expected = reference["suites"]["mmeb"]
    assert set(expected["per_dataset"]) == set(SUBSETS)
    for subset in SUBSETS:
        assert mmeb["metrics"][f"precision_at_1/{subset}"] == expected["metrics"][f"precision_at_1/{subset}"]
    assert mmeb["metrics"]["precision_at_1"] == expected["metrics"]["precision_at_1"]
    picked = script.main([*common, "--mmeb_eval", str(clone), "--mmeb_tasks", "OVEN, MSCOCO_t2i",
                          "--output_dir", str(tmp_path / "picked")])  # fmt: skip
    assert set(picked["suites"]["mmeb"]["per_dataset"]) == {"OVEN", "MSCOCO_t2i"}
