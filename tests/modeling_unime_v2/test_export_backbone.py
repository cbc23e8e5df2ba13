"""``export_backbone``: a plain backbone checkpoint that the upstream transformers class loads without remote code,
whose last-token, L2-normalised hidden states over the processor's chat-template inputs are our embeddings."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from unime_v2.data_builders.tiny_backbones import BACKBONE_KINDS
from unime_v2.modeling_unime_v2 import UniMEV2Model
from unime_v2.modeling_unime_v2.modeling_unime_v2 import export_backbone


ATOL = 1e-5
PLAIN_CLASSES = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
}


def _items(image_files) -> list[dict]:
    return [
        {"text": "A small red square above a blue circle", "image": None},
        {"text": None, "image": str(image_files["red"])},
        {"text": "<|image_1|>\nRepresent the given image for classification", "image": str(image_files["blue"])},
    ]


def _plain_embeddings(folder, items) -> tuple[torch.nn.Module, torch.Tensor]:
    """What a runtime that knows the architecture computes: the upstream class, the saved processor and chat
    template (user turn ``[image, text]``, generation prompt), last-token pooling, L2 norm. No UniME-V2 code."""
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder)
    texts, images = [], []
    for item in items:
        content = [{"type": "image"}] if item["image"] else []
        text = (item["text"] or "").replace("<|image_1|>", "").strip()
        if text:
            content.append({"type": "text", "text": text})
        texts.append(processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True))
        if item["image"]:
            images.append(Image.open(item["image"]).convert("RGB"))
    inputs = processor(text=texts, images=images, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.model(**inputs).last_hidden_state
    mask = inputs["attention_mask"]
    last = torch.where(mask[:, -1] == 1, mask.shape[1] - 1, mask.sum(-1) - 1)  # left or right padding
    pooled = hidden[torch.arange(hidden.shape[0]), last].float()
    return model, torch.nn.functional.normalize(pooled, dim=-1)


@pytest.mark.parametrize("kind", BACKBONE_KINDS)
def test_plain_class_reproduces_chat_format_embeddings(kind, tiny_backbone_dirs, image_files, tmp_path):
    embedder = UniMEV2Model.from_backbone(str(tiny_backbone_dirs[kind]), dtype=torch.float32, prompt_format="chat")
    items = _items(image_files)
    expected = embedder.encode(items)
    folder = embedder.export_backbone(str(tmp_path / "export"))
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["architectures"] == [PLAIN_CLASSES[kind]] and "auto_map" not in config
    assert not list((tmp_path / "export").glob("*.py"))
    model, plain = _plain_embeddings(folder, items)
    assert type(model).__name__ == PLAIN_CLASSES[kind]
    torch.testing.assert_close(plain, expected, atol=ATOL, rtol=0)
    modules = json.loads((tmp_path / "export" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    pooling = json.loads((tmp_path / "export" / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_lasttoken"] is True and pooling["word_embedding_dimension"] == expected.shape[1]
    assert sum(bool(v) for k, v in pooling.items() if k.startswith("pooling_mode_")) == 1
    assert (tmp_path / "export" / "2_Normalize").is_dir()


def test_lora_model_is_merged_on_export(tiny_qwen2_vl_dir, image_files, tmp_path):
    peft = pytest.importorskip("peft")
    embedder = UniMEV2Model.from_backbone(str(tiny_qwen2_vl_dir), dtype=torch.float32, prompt_format="chat")
    lora = peft.get_peft_model(
        embedder, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    items = _items(image_files)
    expected = lora.get_base_model().encode(items)  # adapters active: the LoRA model's own embeddings
    with lora.disable_adapter():
        assert not torch.allclose(lora.get_base_model().encode(items), expected, atol=1e-3)
    export_backbone(lora, str(tmp_path / "export"))
    _, plain = _plain_embeddings(str(tmp_path / "export"), items)
    torch.testing.assert_close(plain, expected, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="LoRA"):
        lora.export_backbone(str(tmp_path / "unmerged"))  # the unwrapped model, adapters still injected


def test_official_qwen_export_warns_about_positions(tiny_qwen2_vl_dir, tmp_path, caplog):
    embedder = UniMEV2Model.from_backbone(str(tiny_qwen2_vl_dir), dtype=torch.float32, prompt_format="official")
    with caplog.at_level(logging.WARNING):
        embedder.export_backbone(str(tmp_path / "export"))
    assert "1-D positions" in caplog.text


def test_sentence_transformers_reads_the_pooling_files(tiny_qwen2_vl_dir, tmp_path):
    """sentence-transformers builds Transformer → last-token Pooling → Normalize from the export; given the chat
    template's text (it does not apply the template itself), it gives our embedding of a text."""
    st = pytest.importorskip("sentence_transformers")
    embedder = UniMEV2Model.from_backbone(str(tiny_qwen2_vl_dir), dtype=torch.float32, prompt_format="chat")
    folder = embedder.export_backbone(str(tmp_path / "export"))
    model = st.SentenceTransformer(folder, device="cpu")
    assert [type(module).__name__ for module in model] == ["Transformer", "Pooling", "Normalize"]
    prompt = embedder.processor.format_text("a red square", has_image=False)
    expected = embedder.encode([{"text": "a red square", "image": None}])
    torch.testing.assert_close(model.encode([prompt], convert_to_tensor=True), expected, atol=ATOL, rtol=0)
