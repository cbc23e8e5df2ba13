"""The authors' published artifacts, offline, on fixtures in their layout (README: "The authors' artifacts").

* Their mined JSON (``TianchengGu/UniME-V2-Training-Datasets``): ``load_dataset("json", ...)`` → our mined rows,
  equal to the direct JSON reader's (training on them: tests/trainers/test_official_sample_training.py).
* Their released checkpoints are plain merged VLMs (Qwen2-VL / LLaVA-OneVision embedders, a Qwen2.5-VL
  reranker): ``from_backbone`` → ``save_pretrained`` → staged repository → ``AutoModel`` gives the same outputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from datasets import load_dataset
from PIL import Image
from transformers import AutoModel

from unime_v2.data_builders.formats import from_authors_dataset, from_authors_json
from unime_v2.hub_cards import stage_model
from unime_v2.modeling_unime_v2 import UniMEV2Model, UniMEV2Reranker


SAMPLE = Path(__file__).parents[1] / "fixtures" / "official-mined-negatives-example.json"


def test_load_dataset_on_their_json_gives_the_rows_of_the_direct_reader(tmp_path):
    """The route of the Hub copy (``load_dataset``) and the file reader agree (their training:
    tests/trainers/test_official_sample_training.py)."""
    loaded = load_dataset("json", data_files=str(SAMPLE), split="train", cache_dir=str(tmp_path / "hf"))
    mined = from_authors_dataset(loaded, tmp_path, name=SAMPLE.name, check_images=False, show_progress_bar=False)
    direct = from_authors_json(SAMPLE, tmp_path, check_images=False, show_progress_bar=False)
    assert len(mined) == 50 and mined.features == direct.features
    exact = ["query_id", "source", "query_text", "query_image_path", "pos_text", "neg_texts", "neg_image_paths"]
    assert mined.select_columns(exact).to_list() == direct.select_columns(exact).to_list()
    # pyarrow's JSON parser reads 2 of the 550 scores up to 4.4e-7 (relative) away from Python's json module
    for column in ("pos_score", "neg_scores"):
        torch.testing.assert_close(torch.tensor(mined[column]), torch.tensor(direct[column]), rtol=1e-6, atol=0)


def test_a_bad_record_in_their_json_is_named(tmp_path):
    records = json.loads(SAMPLE.read_text())[:3]
    del records[2]["hard_negatives_scores"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(records))
    loaded = load_dataset("json", data_files=str(broken), split="train", cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ValueError, match=r"broken.json.*record 2"):
        from_authors_dataset(loaded, tmp_path, name=broken.name, check_images=False, show_progress_bar=False)


ITEMS = [
    {"text": "a red square", "image": None},
    {"text": "<|image_1|>\nRepresent the given image.", "image": Image.new("RGB", (40, 32), (200, 30, 30))},
]


@pytest.mark.parametrize("kind", ["qwen2_vl", "llava_onevision"])
def test_their_embedder_checkpoint_wraps_publishes_and_loads(kind, tiny_backbone_dirs, tmp_path):
    wrapped = UniMEV2Model.from_backbone(str(tiny_backbone_dirs[kind]), prompt_format="official")
    wrapped.save_pretrained(tmp_path / "wrapped")
    staged = stage_model(tmp_path / "wrapped", tmp_path / "staged", "me/UniME-V2-tiny", "embedder")
    loaded = AutoModel.from_pretrained(shutil.copytree(staged.folder, tmp_path / "copy"), trust_remote_code=True)
    assert loaded.config.prompt_format == "official" and loaded.config.backbone_type == kind
    torch.testing.assert_close(loaded.encode(ITEMS), wrapped.encode(ITEMS), atol=1e-5, rtol=1e-4)


def test_their_reranker_checkpoint_wraps_publishes_and_loads(tiny_backbone_dirs, tmp_path):
    wrapped = UniMEV2Reranker.from_backbone(str(tiny_backbone_dirs["qwen2_5_vl"]), dtype=torch.float32)
    wrapped.save_pretrained(tmp_path / "wrapped")
    staged = stage_model(tmp_path / "wrapped", tmp_path / "staged", "me/UniME-V2-Reranker-tiny", "reranker")
    loaded = AutoModel.from_pretrained(staged.folder, trust_remote_code=True, dtype=torch.float32)
    query, candidates = ITEMS[0], [ITEMS[1], {"text": "a blue circle", "image": None}]
    torch.testing.assert_close(loaded.score(query, candidates), wrapped.score(query, candidates))
