"""A saved embedder / reranker loads in sentence-transformers and gives our embeddings and scores
(README, "Use with sentence-transformers")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from unime_v2.modeling_unime_v2 import UniMEV2Model, UniMEV2Reranker


st = pytest.importorskip("sentence_transformers")

QUERY_INSTRUCTION = "Find an image that matches the given text."
DOCUMENT_INSTRUCTION = "Represent the given image."


def _image(color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (64, 64), color)


def _inputs() -> tuple[list[str], list[Image.Image], list[dict]]:
    texts = ["a red square", "a blue circle on a much longer line of text"]
    images = [_image((200, 30, 30)), _image((30, 30, 200))]
    items = [
        {"text": "<|image_1|>\nWhat colour is this?\n", "image": images[0]},
        {"text": "A picture", "image": images[1]},
    ]
    return texts, images, items


@pytest.fixture(scope="module")
def saved_embedders(tiny_backbone_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``{name: (model, folder)}``: ours (with instructions) and an official-format wrapped LLaVA-OneVision."""
    root = tmp_path_factory.mktemp("st_embedders")
    ours = UniMEV2Model.from_backbone(
        str(tiny_backbone_dirs["qwen2_vl"]),
        dtype=torch.float32,
        query_instruction=QUERY_INSTRUCTION,
        candidate_instruction=DOCUMENT_INSTRUCTION,
    )
    official = UniMEV2Model.from_backbone(
        str(tiny_backbone_dirs["llava_onevision"]), prompt_format="official", dtype=torch.float32
    )
    models = {}
    for name, model in (("ours", ours), ("official", official)):
        model.save_pretrained(root / name)
        models[name] = (model, root / name)
    return models


@pytest.mark.parametrize("name", ["ours", "official"])
def test_saved_folder_has_sentence_transformers_files(saved_embedders: dict, name: str) -> None:
    model, folder = saved_embedders[name]
    modules = json.loads((folder / "modules.json").read_text())
    assert modules[0]["type"] == "sentence_transformers_unime_v2.UniMEV2STEmbedder"
    assert (folder / "sentence_transformers_unime_v2.py").is_file()
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == {
        "query": model.config.query_instruction,
        "document": model.config.candidate_instruction,
    }


@pytest.mark.parametrize("name", ["ours", "official"])
def test_sentence_transformer_encode_equals_ours(saved_embedders: dict, name: str) -> None:
    model, folder = saved_embedders[name]
    st_model = st.SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    texts, images, items = _inputs()
    for inputs in (texts, images, items):
        if inputs is texts:
            ours = model.encode([{"text": text, "image": None} for text in texts])
        elif inputs is images:
            ours = model.encode([{"text": None, "image": image} for image in images])
        else:
            ours = model.encode(items)
        theirs = st_model.encode(inputs, convert_to_tensor=True)
        torch.testing.assert_close(theirs.cpu().float(), ours, atol=1e-5, rtol=0)
    for method in ("encode_query", "encode_document"):
        for inputs in (texts, images, items):
            ours = getattr(model, method)(inputs)
            theirs = getattr(st_model, method)(inputs, convert_to_tensor=True)
            torch.testing.assert_close(theirs.cpu().float(), ours, atol=1e-5, rtol=0)
    if name == "ours":
        assert st_model.prompts["query"] == QUERY_INSTRUCTION
        plain = st_model.encode(texts, convert_to_tensor=True)
        assert not torch.allclose(st_model.encode_query(texts, convert_to_tensor=True), plain, atol=1e-3)
        theirs = st_model.encode(texts, prompt="Retrieve it.", convert_to_tensor=True)
        torch.testing.assert_close(theirs.cpu().float(), model.encode_query(texts, instruction="Retrieve it."))


def test_cross_encoder_predict_and_rank_equal_score(tiny_backbone_dirs: dict[str, Path], tmp_path: Path) -> None:
    reranker = UniMEV2Reranker.from_backbone(str(tiny_backbone_dirs["qwen2_vl"]), dtype=torch.float32)
    reranker.save_pretrained(tmp_path / "reranker")
    cross_encoder = st.CrossEncoder(str(tmp_path / "reranker"), trust_remote_code=True, device="cpu")
    query = {"text": "a red square", "image": None}
    candidates = [
        {"text": None, "image": _image((200, 30, 30))},
        {"text": "a blue circle", "image": None},
        {"text": "a green triangle", "image": _image((30, 200, 30))},
    ]
    expected = reranker.score(query, candidates)
    predicted = cross_encoder.predict([(query, candidate) for candidate in candidates], convert_to_tensor=True)
    torch.testing.assert_close(predicted.cpu().float(), expected, atol=1e-6, rtol=0)
    ranked = cross_encoder.rank(query, candidates)
    assert [hit["corpus_id"] for hit in ranked] == torch.argsort(expected, descending=True, stable=True).tolist()
    torch.testing.assert_close(torch.tensor([hit["score"] for hit in ranked]), expected.sort(descending=True).values)


def test_resaved_remote_code_model_keeps_sentence_transformers_files(saved_embedders: dict, tmp_path: Path) -> None:
    from transformers import AutoModel

    model, folder = saved_embedders["ours"]
    loaded = AutoModel.from_pretrained(str(folder), trust_remote_code=True, dtype=torch.float32)
    loaded.save_pretrained(tmp_path / "again")
    st_model = st.SentenceTransformer(str(tmp_path / "again"), trust_remote_code=True, device="cpu")
    texts, _, items = _inputs()
    torch.testing.assert_close(
        st_model.encode(items, convert_to_tensor=True).cpu(), model.encode(items), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(st_model.encode_query(texts, convert_to_tensor=True).cpu(), model.encode_query(texts))
