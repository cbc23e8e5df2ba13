"""The UniME-V2 embedder: remote-code round trip, the authors' official recipe, pooling, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

from unime_v2.data_builders.tiny_backbones import BACKBONE_KINDS
from unime_v2.modeling_unime_v2 import UniMEV2Config, UniMEV2Model


ATOL = 1e-5


def _items(files: dict[str, Path]) -> list[dict]:
    """Text only, image only, image+text (MMEB style), and a second image of another size."""
    return [
        {"text": "A small red square above a blue circle", "image": None},
        {"text": None, "image": str(files["red"])},
        {"text": "<|image_1|>\nRepresent the given image for classification\n", "image": str(files["red"])},
        {"text": "<|image_1|>\nFind an image caption describing the given image.", "image": str(files["blue"])},
        {"text": "What colour is the circle?", "image": None},
    ]


@pytest.fixture(scope="module")
def embedders(tiny_backbone_dirs: dict[str, Path]) -> dict[str, UniMEV2Model]:
    return {
        kind: UniMEV2Model.from_backbone(str(path), dtype=torch.float32, prompt_format="official")
        for kind, path in tiny_backbone_dirs.items()
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", BACKBONE_KINDS)
def test_autoclass_round_trip_in_new_process(kind, embedders, image_files, tmp_path):
    model = embedders[kind]
    items = _items(image_files)
    expected = model.encode(items, batch_size=2)
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "items.json").write_text(json.dumps(items))
    script = textwrap.dedent(
        f"""
        import json, torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True, dtype=torch.float32)
        items = json.load(open({str(tmp_path / "items.json")!r}))
        torch.save({{"module": type(model).__module__, "emb": model.encode(items, batch_size=3)}},
                   {str(tmp_path / "out.pt")!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    result = torch.load(tmp_path / "out.pt")
    assert result["module"].startswith("transformers_modules."), result["module"]
    assert "unime_v2" not in result["module"].split(".")[0]
    torch.testing.assert_close(result["emb"], expected, atol=ATOL, rtol=0)


def _official_reference(backbone_dir: Path, text: str, image: Image.Image, one_d_positions: bool) -> torch.Tensor:
    """The authors' recipe, written out: raw text, processor, last layer, last token, L2 norm."""
    vlm = Qwen2VLForConditionalGeneration.from_pretrained(backbone_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(backbone_dir)
    inputs = processor(text=[text.replace("<|image_1|>", "<|image_pad|>")], images=[image], return_tensors="pt")
    kwargs = {}
    if one_d_positions:
        length = inputs["input_ids"].shape[1]
        kwargs["position_ids"] = torch.arange(length).view(1, 1, -1).expand(3, 1, -1)
    with torch.no_grad():
        hidden = vlm(**inputs, **kwargs, output_hidden_states=True).hidden_states[-1]
    return F.normalize(hidden[:, -1, :], dim=-1)[0]


def test_from_backbone_matches_official_recipe_with_1d_positions(embedders, tiny_qwen2_vl_dir, image_files):
    text = "<|image_1|>\nRepresent the given image for classification\n"
    image = Image.open(image_files["red"]).convert("RGB")
    ours = embedders["qwen2_vl"].encode([{"text": text, "image": image}])[0]
    official = _official_reference(tiny_qwen2_vl_dir, text, image, one_d_positions=True)
    stock = _official_reference(tiny_qwen2_vl_dir, text, image, one_d_positions=False)
    torch.testing.assert_close(ours, official, atol=ATOL, rtol=0)
    # 20x the tolerance: the test fails if the 1-D positions are ever lost (the tiny model's gap is ~5e-4).
    assert (ours - stock).abs().max() > 20 * ATOL, "3-D M-RoPE positions must give a different embedding"


def test_official_qwen_text_is_raw_with_bare_image_pad(embedders):
    processor = embedders["qwen2_vl"].processor
    assert processor.format_text("<|image_1|>\nRepresent it", has_image=True) == "<|image_pad|>\nRepresent it"
    assert processor.format_text("plain caption", has_image=False) == "plain caption"


@pytest.mark.parametrize("kind", BACKBONE_KINDS)
def test_pooling_is_independent_of_batching_and_padding_side(kind, embedders, image_files):
    model = embedders[kind]
    items = _items(image_files)
    alone = torch.cat([model.encode([item]) for item in items])
    for side in ("left", "right"):
        model.config.padding_side = side
        try:
            batched = model.encode(items, batch_size=len(items))
        finally:
            model.config.padding_side = "left"
        torch.testing.assert_close(batched, alone, atol=ATOL, rtol=0)
    norms = alone.norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-5, rtol=0)


def test_no_lm_head_and_sdpa_load(embedders, tmp_path):
    model = embedders["qwen2_vl"]
    assert not any("lm_head" in name for name, _ in model.named_parameters())
    model.save_pretrained(tmp_path)
    reloaded = UniMEV2Model.from_pretrained(tmp_path, attn_implementation="sdpa")
    assert reloaded.config._attn_implementation == "sdpa"
    assert reloaded.processor is not None


def test_old_qwen2_vl_key_layout_is_converted(tiny_qwen2_vl_dir, embedders, image_files, tmp_path):
    """Released checkpoints predate transformers 5 (``model.layers.*``, ``visual.*``): they must load the same."""
    for file in tiny_qwen2_vl_dir.iterdir():
        if file.name != "model.safetensors":
            (tmp_path / file.name).write_bytes(file.read_bytes())
    state = load_file(tiny_qwen2_vl_dir / "model.safetensors")
    old = {}
    for key, value in state.items():
        key = key.replace("model.language_model.", "model.").replace("model.visual.", "visual.")
        old[key] = value
    assert any(key.startswith("visual.") for key in old)
    save_file(old, tmp_path / "model.safetensors", metadata={"format": "pt"})
    legacy = UniMEV2Model.from_backbone(str(tmp_path), dtype=torch.float32)
    items = _items(image_files)
    torch.testing.assert_close(legacy.encode(items), embedders["qwen2_vl"].encode(items), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------------ bad input
def test_missing_image_file_names_item(embedders, tmp_path, image_files):
    items = _items(image_files) + [{"text": "<|image_1|>\nx", "image": str(tmp_path / "nope.jpg")}]
    with pytest.raises(FileNotFoundError, match=r"item 5: image file .*nope\.jpg.* does not exist"):
        embedders["qwen2_vl"].encode(items, batch_size=2)


def test_unreadable_image_file_names_item(embedders, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"item 0: cannot read image file .*broken\.png"):
        embedders["qwen2_vl"].encode([{"text": "hi", "image": str(broken)}])


def test_item_with_neither_text_nor_image(embedders):
    with pytest.raises(ValueError, match="item 1: has neither text nor image"):
        embedders["llava_onevision"].encode([{"text": "ok", "image": None}, {"text": "  ", "image": None}])


def test_more_markers_than_images(embedders, image_files):
    bad = {"text": "<|image_1|> and <|image_2|>", "image": str(image_files["red"])}
    with pytest.raises(ValueError, match=r"item 0: text has 2 image marker\(s\).*but 1 image"):
        embedders["qwen2_vl"].encode([bad])
    strict = embedders["qwen2_5_vl"]
    strict.config.marker_without_image = "error"
    try:
        with pytest.raises(ValueError, match=r"item 0: text has 1 image marker\(s\).*but 0 image"):
            strict.encode([{"text": "<|image_1|>\nno image given", "image": None}])
    finally:
        strict.config.marker_without_image = "image_token"


def _stock_text_embedding(model: UniMEV2Model, text: str) -> torch.Tensor:
    """Reference: the backbone's own forward on the text with its image token written literally, no pixels (no
    UniME-V2 processor or mask involved); last token, L2-normalised."""
    processor = model.processor
    formatted = text.replace("<|image_1|>", processor.image_token)
    if not (model.config.uses_mrope and model.config.prompt_format == "official"):
        content = [{"type": "text", "text": formatted.strip()}]
        formatted = processor.backbone_processor.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    ids = processor.tokenizer(formatted, return_tensors="pt")["input_ids"]
    assert int((ids == processor.tokenizer.convert_tokens_to_ids(processor.image_token)).sum()) == 1
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if model.config.uses_mrope:
        inputs["position_ids"] = torch.arange(ids.shape[1])[None]
    with torch.no_grad():
        hidden = model.backbone(**inputs, use_cache=False).last_hidden_state
    return F.normalize(hidden[0, -1].float(), dim=-1)


@pytest.mark.parametrize("kind", BACKBONE_KINDS)
def test_marker_without_image_is_the_image_token_as_text(kind, embedders, image_files):
    """MMEB-train's WebQA queries: ``<|image_1|>`` with no image. Default: the backbone's image token as a text
    token, no pixels (what the authors' code fed), also in a batch whose other items carry images."""
    model = embedders[kind]
    orphan = {
        "text": "<|image_1|>\nRepresent the given Wikipedia image with related text information: Paris",
        "image": None,
    }
    items = [*_items(image_files)[1:4], orphan]
    mixed = model.encode(items, batch_size=len(items))
    alone = model.encode(items, batch_size=1)
    assert torch.allclose(mixed, alone, atol=ATOL)
    assert torch.allclose(mixed[-1], _stock_text_embedding(model, orphan["text"]), atol=ATOL)
    dropped = model.encode([{"text": orphan["text"].replace("<|image_1|>", ""), "image": None}])
    assert not torch.allclose(mixed[-1], dropped[0], atol=1e-3)


def test_unknown_backbone_type(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported backbone model_type 'bert'"):
        UniMEV2Config(backbone_config={"model_type": "bert"})
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4})
    )
    with pytest.raises(ValueError, match=r"unsupported backbone model_type 'llama'"):
        UniMEV2Model.from_backbone(str(tmp_path))
