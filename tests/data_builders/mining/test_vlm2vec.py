"""VLM2Vec's published Qwen2-VL layout (base VLM + PEFT adapter saved on transformers 4.x) as the embedder of mining
and of evaluation: one loader, :func:`~unime_v2.data_builders.checkpoints.load_embedder`.

The reference below re-implements VLM2Vec's documented inference recipe with plain transformers + peft
(docs/mining.md, "VLM2Vec as the retrieval embedder"): adapter merged into the base, raw text with ``<|image_1|>``
replaced by the bare ``<|image_pad|>``, 1-D positions, last layer's hidden state at the last token, L2-normalised.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.utils import set_peft_model_state_dict
from PIL import Image
from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

from unime_v2.data_builders.checkpoints import load_embedder
from unime_v2.data_builders.mining import MiningConfig
from unime_v2.trainers.evaluation.run import EvaluationArguments, load_model


ITEMS = [
    {"text": "<|image_1|> Represent the given image with the following question: what is in the image?"},
    {"text": "A red square on a white table."},
    {"text": "<|image_1|> Represent the given image."},
    {"text": "Find a news image that matches the caption: two dogs playing in the snow"},
]
VLM2VEC_TARGETS = "qkv_proj,o_proj,gate_up_proj,down_proj,k_proj,q_proj,out_proj,v_proj".split(",")


def _images() -> list[Image.Image | None]:
    red = Image.new("RGB", (64, 48), (200, 30, 30))
    stripes = Image.new("RGB", (56, 84), (20, 20, 20))
    stripes.paste((240, 240, 0), (0, 0, 56, 28))
    return [red, None, stripes, None]


def _legacy_key(key: str) -> str:
    """transformers 5 Qwen2-VL names → the 4.x names VLM2Vec's adapter files use."""
    return key.replace("base_model.model.model.language_model.", "base_model.model.model.").replace(
        "base_model.model.model.visual.", "base_model.model.visual."
    )


def _write_vlm2vec_adapter(base: Path, folder: Path, use_dora: bool) -> Path:
    """A random-weight LoRA/DoRA adapter with VLM2Vec's target modules, saved as their repo ships it:
    adapter_config.json + adapter_model.bin (torch pickle) with transformers-4.x key names."""
    vlm = Qwen2VLForConditionalGeneration.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=VLM2VEC_TARGETS, use_dora=use_dora, lora_dropout=0.1)
    peft_model = get_peft_model(vlm, config)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.3)
    peft_model.save_pretrained(folder, safe_serialization=False)
    weights = torch.load(folder / "adapter_model.bin", weights_only=True)
    torch.save({_legacy_key(k): v for k, v in weights.items()}, folder / "adapter_model.bin")
    assert any(".model.layers." in k for k in torch.load(folder / "adapter_model.bin", weights_only=True))
    return folder


def _reference_embeddings(base: Path, adapter: Path | None) -> torch.Tensor:
    """VLM2Vec's recipe, written from their documentation with plain transformers + peft."""
    vlm = Qwen2VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32).eval()
    if adapter is not None:
        settings = json.loads((adapter / "adapter_config.json").read_text())
        config = LoraConfig(
            r=settings["r"],
            lora_alpha=settings["lora_alpha"],
            target_modules=settings["target_modules"],
            use_dora=settings["use_dora"],
        )
        peft_model = get_peft_model(vlm, config)
        weights = torch.load(adapter / "adapter_model.bin", weights_only=True)
        renamed = {
            k.replace("base_model.model.model.", "base_model.model.model.language_model.").replace(
                "base_model.model.visual.", "base_model.model.model.visual."
            ): v
            for k, v in weights.items()
        }
        assert not set_peft_model_state_dict(peft_model, renamed).unexpected_keys
        vlm = peft_model.merge_and_unload().eval()
    processor = AutoProcessor.from_pretrained(base)
    rows = []
    for item, image in zip(ITEMS, _images()):
        text = item["text"].replace("<|image_1|>", "<|image_pad|>")
        inputs = processor(text=[text], images=[image] if image is not None else None, return_tensors="pt")
        # VLM2Vec's Qwen2-VL code places images by <|vision_start|>, absent here: every token gets a 1-D position.
        length = inputs["input_ids"].shape[1]
        positions = torch.arange(length).expand(3, 1, length)
        with torch.no_grad():
            hidden = vlm(**inputs, position_ids=positions, output_hidden_states=True).hidden_states[-1]
        rows.append(torch.nn.functional.normalize(hidden[0, -1], dim=-1))
    return torch.stack(rows)


def _embed(model: torch.nn.Module) -> torch.Tensor:
    items = [dict(item, image=image) for item, image in zip(ITEMS, _images())]
    with torch.no_grad():
        return model.encode(items, batch_size=4).float()


@pytest.fixture(scope="module", params=[False, True], ids=["lora", "dora"])
def vlm2vec_folder(request, tiny_backbone_dirs, tmp_path_factory) -> tuple[Path, Path]:
    base = tiny_backbone_dirs["qwen2_vl"]
    folder = tmp_path_factory.mktemp("vlm2vec")
    return base, _write_vlm2vec_adapter(base, folder, use_dora=request.param)


def test_adapter_folder_embeds_like_vlm2vec_recipe(vlm2vec_folder):
    base, adapter = vlm2vec_folder
    config = MiningConfig(embedder=str(adapter), embedder_base=str(base))
    model = load_embedder(
        config.embedder,
        config.embedder_prompt_format,
        config.embedder_dtype,
        torch.device("cpu"),
        base=config.embedder_base,
    )
    ours = _embed(model)
    reference = _reference_embeddings(base, adapter)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(ITEMS)), atol=1e-5)
    without_adapter = _reference_embeddings(base, None)
    assert (ours - without_adapter).abs().max() > 1e-2, "the adapter changed nothing: the test could not fail"


def test_evaluation_loads_the_adapter(vlm2vec_folder, tmp_path):
    base, adapter = vlm2vec_folder
    model = load_model(EvaluationArguments(model=str(adapter), output_dir=str(tmp_path)))
    torch.testing.assert_close(_embed(model), _reference_embeddings(base, adapter), atol=1e-5, rtol=0)
    named = load_model(EvaluationArguments(model=str(adapter), model_base=str(base), output_dir=str(tmp_path)))
    torch.testing.assert_close(_embed(named), _reference_embeddings(base, adapter), atol=1e-5, rtol=0)


def test_base_from_adapter_config(vlm2vec_folder):
    base, adapter = vlm2vec_folder
    config_file = adapter / "adapter_config.json"
    settings = json.loads(config_file.read_text())
    assert settings["base_model_name_or_path"] == str(base)
    model = load_embedder(str(adapter), "official", "float32", torch.device("cpu"))
    torch.testing.assert_close(_embed(model), _reference_embeddings(base, adapter), atol=1e-5, rtol=0)


def test_plain_base_differs_from_adapter(vlm2vec_folder):
    base, adapter = vlm2vec_folder
    plain = _embed(load_embedder(str(base), "official", "float32", torch.device("cpu")))
    torch.testing.assert_close(plain, _reference_embeddings(base, None), atol=1e-5, rtol=0)
    assert (plain - _reference_embeddings(base, adapter)).abs().max() > 1e-2


def test_adapter_that_does_not_fit_is_refused(tiny_backbone_dirs, tmp_path):
    base = tiny_backbone_dirs["qwen2_vl"]
    adapter = _write_vlm2vec_adapter(base, tmp_path / "adapter", use_dora=False)
    weights = torch.load(adapter / "adapter_model.bin", weights_only=True)
    torch.save(
        {k.replace(".layers.", ".blocks_elsewhere."): v for k, v in weights.items()}, adapter / "adapter_model.bin"
    )
    with pytest.raises(ValueError, match="does not fit the base"):
        load_embedder(str(adapter), "official", "float32", torch.device("cpu"), base=str(base))


def test_missing_base_names_the_field(tiny_backbone_dirs, tmp_path):
    adapter = _write_vlm2vec_adapter(tiny_backbone_dirs["qwen2_vl"], tmp_path / "adapter", use_dora=False)
    settings = json.loads((adapter / "adapter_config.json").read_text())
    settings["base_model_name_or_path"] = "/fsx/cluster/only/Qwen2-VL-7B-Instruct"
    (adapter / "adapter_config.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="embedder_base"):
        load_embedder(str(adapter), "official", "float32", torch.device("cpu"))
