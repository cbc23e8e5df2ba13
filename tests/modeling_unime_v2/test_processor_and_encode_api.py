"""The standard transformers route (AutoProcessor + AutoModel + forward) and the sentence-transformers-style API
(encode_query / encode_document, numpy output, normalisation switch, progress bar, similarity)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unime_v2.data_builders.tiny_backbones import BACKBONE_KINDS
from unime_v2.modeling_unime_v2 import UniMEV2Model, UniMEV2Processor
from unime_v2.modeling_unime_v2.processing_unime_v2 import rename_item_error


ATOL = 1e-5
FORMATS = ("official", "chat")


def _mmeb_items(files: dict[str, Path]) -> list[dict]:
    """Text, image alone, MMEB image+instruction, and a WebQA-style marker without image (text_image_token_mask)."""
    return [
        {"text": "A small red square above a blue circle", "image": None},
        {"text": None, "image": str(files["red"])},
        {"text": "<|image_1|>\nRepresent the given image for classification\n", "image": str(files["blue"])},
        {
            "text": "<|image_1|>\nRepresent the given Wikipedia image with related text information: a fox",
            "image": None,
        },
    ]


CLEAN_PROCESS_SCRIPT = """
import json, sys
sys.modules["unime_v2"] = None  # the package is installed in this venv: shadow it, only the folder's code may run
import torch
from transformers import AutoModel, AutoProcessor
folders, items_file, out_file = sys.argv[1:]
items = json.load(open(items_file))
results = {}
for name, folder in json.load(open(folders)).items():
    model = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    inputs = processor(items)
    with torch.no_grad():
        forward = model(**inputs).embeddings
    results[name] = {
        "classes": [type(model).__module__, type(processor).__module__, type(processor).__name__],
        "keys": sorted(inputs.keys()),
        "forward": forward,
        "encode": model.encode(items),
        "encode_workers": model.encode(items, batch_size=1, num_workers=2),
    }
torch.save(results, out_file)
"""


@pytest.fixture(scope="module")
def clean_process_results(tiny_backbone_dirs, image_files, tmp_path_factory) -> dict[str, dict]:
    """Every backbone x prompt format saved, copied elsewhere and loaded by ONE fresh isolated process (``-I``,
    no PYTHONPATH, cwd outside the repository, ``unime_v2`` shadowed); the parent's own ``encode`` kept beside."""
    root = tmp_path_factory.mktemp("clean_process")
    items = _mmeb_items(image_files)
    folders, expected, processor_configs = {}, {}, {}
    for kind in BACKBONE_KINDS:
        for prompt_format in FORMATS:
            name = f"{kind}-{prompt_format}"
            model = UniMEV2Model.from_backbone(
                str(tiny_backbone_dirs[kind]), dtype=torch.float32, prompt_format=prompt_format
            )
            expected[name] = model.encode(items, batch_size=2)
            model.save_pretrained(root / "saved" / name)
            shutil.copytree(root / "saved" / name, root / "copied" / name)
            folders[name] = str(root / "copied" / name)
            processor_configs[name] = json.loads((root / "copied" / name / "processor_config.json").read_text())
    (root / "folders.json").write_text(json.dumps(folders))
    (root / "items.json").write_text(json.dumps(items))
    (root / "script.py").write_text(textwrap.dedent(CLEAN_PROCESS_SCRIPT))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(root / "modules"), HF_HUB_OFFLINE="1")
    command = [sys.executable, "-I", str(root / "script.py"), str(root / "folders.json"), str(root / "items.json")]
    subprocess.run([*command, str(root / "out.pt")], check=True, cwd=root, env=env)
    results = torch.load(root / "out.pt")
    return {
        name: {**results[name], "expected": expected[name], "processor_config": processor_configs[name]}
        for name in folders
    }


@pytest.mark.slow
@pytest.mark.parametrize("prompt_format", FORMATS)
@pytest.mark.parametrize("kind", BACKBONE_KINDS)
def test_auto_processor_then_forward_equals_encode_in_a_clean_process(kind, prompt_format, clean_process_results):
    result = clean_process_results[f"{kind}-{prompt_format}"]
    model_module, processor_module, processor_class = result["classes"]
    assert model_module.startswith("transformers_modules."), model_module
    assert processor_module.startswith("transformers_modules."), processor_module
    assert processor_class == "UniMEV2Processor"
    assert result["processor_config"]["auto_map"] == {"AutoProcessor": "processing_unime_v2.UniMEV2Processor"}
    assert result["processor_config"]["processor_class"] == "UniMEV2Processor"
    assert "text_image_token_mask" in result["keys"]  # the WebQA-style item went through the standard route too
    torch.testing.assert_close(result["forward"], result["encode"], atol=ATOL, rtol=0)
    torch.testing.assert_close(result["forward"], result["expected"], atol=ATOL, rtol=0)
    torch.testing.assert_close(result["encode_workers"], result["expected"], atol=ATOL, rtol=0)  # remote code, workers


@pytest.fixture(scope="module")
def qwen(tiny_qwen2_vl_dir) -> UniMEV2Model:
    return UniMEV2Model.from_backbone(str(tiny_qwen2_vl_dir), dtype=torch.float32, prompt_format="official")


def test_model_saved_with_a_plain_backbone_processor_still_loads(qwen, image_files, tmp_path):
    """Folders saved before the processor was a ProcessorMixin hold the backbone's processor: wrapped on load."""
    items = _mmeb_items(image_files)
    qwen.save_pretrained(tmp_path)
    qwen.processor.backbone_processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["processor_class"] == "Qwen2VLProcessor"
    reloaded = UniMEV2Model.from_pretrained(tmp_path, dtype=torch.float32)
    assert isinstance(reloaded.processor, UniMEV2Processor)
    torch.testing.assert_close(reloaded.encode(items), qwen.encode(items), atol=ATOL, rtol=0)


def test_processor_of_a_folder_without_unime_config_is_refused(tiny_qwen2_vl_dir):
    with pytest.raises(ValueError, match="model_type 'qwen2_vl', not a saved UniME-V2 embedder"):
        UniMEV2Processor.from_pretrained(str(tiny_qwen2_vl_dir))


def test_encode_query_and_document_apply_instructions_in_mmeb_layout(qwen, image_files):
    red = Image.open(image_files["red"]).convert("RGB")
    blue = image_files["blue"]
    inputs = ["a red square", red, blue, {"text": "What colour is it?", "image": str(blue)}]
    instruction = "Represent the given image with the following question:"
    by_hand = [
        {"text": f"{instruction} a red square\n", "image": None},
        {"text": f"<|image_1|>\n{instruction}\n", "image": red},
        {"text": f"<|image_1|>\n{instruction}\n", "image": blue},
        {"text": f"<|image_1|>\n{instruction} What colour is it?\n", "image": str(blue)},
    ]
    torch.testing.assert_close(qwen.encode_query(inputs, instruction=instruction), qwen.encode(by_hand))
    bare = [
        {"text": "a red square", "image": None},
        {"text": "<|image_1|>\nRepresent the given image.\n", "image": red},
        {"text": "<|image_1|>\nRepresent the given image.\n", "image": blue},
        {"text": "<|image_1|>\nWhat colour is it?\n", "image": str(blue)},
    ]
    torch.testing.assert_close(qwen.encode_document(inputs), qwen.encode(bare))
    qwen.config.query_instruction, qwen.config.candidate_instruction = instruction, "Find it:"
    try:
        torch.testing.assert_close(qwen.encode_query(inputs), qwen.encode(by_hand))
        torch.testing.assert_close(qwen.encode_query(inputs, instruction=""), qwen.encode(bare))
        document = qwen.encode_document("a red square")
        torch.testing.assert_close(document, qwen.encode([{"text": "Find it: a red square\n", "image": None}])[0])
    finally:
        qwen.config.query_instruction = qwen.config.candidate_instruction = ""
    assert document.shape == (qwen.config.hidden_size,)
    assert not torch.allclose(qwen.encode_query(["a red square"], instruction=instruction), qwen.encode(bare[:1]))


def test_numpy_output_normalisation_switch_and_similarity(qwen, image_files):
    inputs = ["a red square", image_files["red"], "a blue circle"]
    tensor = qwen.encode_document(inputs)
    array = qwen.encode_document(inputs, convert_to_numpy=True)
    assert isinstance(array, np.ndarray) and array.dtype == np.float32
    np.testing.assert_allclose(array, tensor.numpy(), atol=ATOL)
    assert isinstance(qwen.encode_document(inputs, convert_to_numpy=True, convert_to_tensor=True), torch.Tensor)
    raw = qwen.encode_document(inputs, normalize_embeddings=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(3), atol=1e-3)
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=-1), tensor, atol=ATOL, rtol=0)
    scores = qwen.similarity(tensor, tensor)
    assert isinstance(scores, torch.Tensor)
    torch.testing.assert_close(scores, tensor @ tensor.T, atol=ATOL, rtol=0)
    from_numpy = qwen.similarity(array, array)
    assert isinstance(from_numpy, np.ndarray)
    np.testing.assert_allclose(from_numpy, scores.numpy(), atol=ATOL)
    torch.testing.assert_close(qwen.similarity(array, raw), scores, atol=ATOL, rtol=0)


def test_progress_bar_counts_items_not_batches(qwen, capsys):
    qwen.encode_query([f"text number {i}" for i in range(5)], batch_size=2, show_progress_bar=True)
    bar = capsys.readouterr().err
    assert "5/5" in bar and "item" in bar, bar


def test_encode_with_worker_processes_gives_the_same_embeddings(qwen, image_files):
    items = _mmeb_items(image_files) * 3
    expected = qwen.encode(items, batch_size=5)
    for num_workers in (1, 3):
        torch.testing.assert_close(qwen.encode(items, batch_size=5, num_workers=num_workers), expected, atol=0, rtol=0)


def test_worker_errors_name_the_item_in_the_callers_list(qwen, tmp_path):
    items = [{"text": f"text {i}", "image": None} for i in range(9)]
    items[7] = {"text": "<|image_1|> a", "image": str(tmp_path / "missing.png")}
    with pytest.raises(FileNotFoundError, match="item 7: image file"):
        qwen.encode(items, batch_size=2, num_workers=2)
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        qwen.encode(items, num_workers=-1)


def test_rename_item_error_rewrites_only_the_item_head():
    original = FileNotFoundError("item 3: image file 'x.png' does not exist: item 9 stays")
    renamed = rename_item_error(original, lambda i: f"record {i * 10}, positive")
    assert type(renamed) is FileNotFoundError and renamed.__cause__ is original
    assert str(renamed) == "record 30, positive: image file 'x.png' does not exist: item 9 stays"
    assert str(rename_item_error(original, lambda i: None)) == str(original)
    for message in ("image file 'x.png' does not exist", "item x: bad", "items 3: bad", "item 3 bad"):
        assert str(rename_item_error(ValueError(message), lambda i: "renamed")) == message


def test_bad_inputs_name_the_item(qwen, tmp_path):
    with pytest.raises(TypeError, match="item 1: expected a text"):
        qwen.encode_query(["fine", 42])
    with pytest.raises(FileNotFoundError, match="item 2: image file"):
        qwen.encode_document(["a", "b", tmp_path / "missing.png"], batch_size=2)
    with pytest.raises(ValueError, match="item 1: has neither text nor image"):
        qwen.encode_document(["a", {"text": "", "image": None}])


def test_an_unknown_item_key_is_named_with_the_accepted_ones(qwen):
    with pytest.raises(
        ValueError, match=r"item 0: has neither text nor image \(unknown key\(s\) 'txt'; accepted: 'text', 'image'\)"
    ):
        qwen.encode_document([{"txt": "a red square"}])


def test_truncate_dim_slices_then_normalises(qwen, image_files):
    """``truncate_dim`` keeps the first dimensions of the raw last-token state, then L2-normalises (as
    sentence-transformers does); the reference is computed from the full unnormalised embedding."""
    items = _mmeb_items(image_files)
    raw = qwen.encode(items, normalize_embeddings=False)
    for dim in (1, 5, qwen.config.hidden_size):
        expected = torch.nn.functional.normalize(raw[:, :dim], dim=-1)
        truncated = qwen.encode(items, truncate_dim=dim)
        assert truncated.shape == (len(items), dim)
        torch.testing.assert_close(truncated, expected, atol=ATOL, rtol=0)
        torch.testing.assert_close(truncated.norm(dim=-1), torch.ones(len(items)), atol=ATOL, rtol=0)
    torch.testing.assert_close(qwen.encode(items, truncate_dim=5, normalize_embeddings=False), raw[:, :5])
    texts = ["a red square", "a blue circle"]
    full_query = qwen.encode_query(texts, instruction="Find it:", normalize_embeddings=False)
    query = qwen.encode_query(texts, instruction="Find it:", truncate_dim=4, convert_to_numpy=True)
    np.testing.assert_allclose(query, torch.nn.functional.normalize(full_query[:, :4], dim=-1).numpy(), atol=ATOL)
    document = qwen.encode_document("a red square", truncate_dim=4)
    full_document = qwen.encode_document("a red square", normalize_embeddings=False)
    torch.testing.assert_close(document, torch.nn.functional.normalize(full_document[:4], dim=0), atol=ATOL, rtol=0)
    assert qwen.encode([], truncate_dim=4).shape == (0, 4)
    for bad in (0, -1, qwen.config.hidden_size + 1):
        with pytest.raises(ValueError, match="truncate_dim"):
            qwen.encode(items[:1], truncate_dim=bad)
    with pytest.raises(TypeError, match="truncate_dim"):
        qwen.encode(items[:1], truncate_dim=2.5)


def test_truncate_dim_config_default_is_saved_and_loaded(qwen, image_files, tmp_path):
    items = _mmeb_items(image_files)[:2]
    expected = qwen.encode(items, truncate_dim=6)
    qwen.config.truncate_dim = 6
    try:
        torch.testing.assert_close(qwen.encode(items), expected, atol=0, rtol=0)
        assert qwen.encode(items, truncate_dim=3).shape == (2, 3)
        qwen.save_pretrained(tmp_path / "saved")
    finally:
        qwen.config.truncate_dim = None
    loaded = UniMEV2Model.from_pretrained(tmp_path / "saved", dtype=torch.float32)
    assert loaded.config.truncate_dim == 6
    torch.testing.assert_close(loaded.encode(items), expected, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="truncate_dim"):
        type(qwen.config)(backbone_config=qwen.config.backbone_config.to_dict(), truncate_dim=0)
