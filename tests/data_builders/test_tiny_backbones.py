"""Tiny offline backbones load like Hub checkpoints and are reproducible."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from unime_v2.data_builders.tiny_backbones import BACKBONE_KINDS, build_tiny_backbone, load_tiny_backbone


@pytest.mark.parametrize("kind", BACKBONE_KINDS)
def test_tiny_backbone_loads_with_auto_classes(kind, tiny_backbone_dirs):
    model, processor = load_tiny_backbone(tiny_backbone_dirs[kind])
    assert AutoConfig.from_pretrained(tiny_backbone_dirs[kind]).model_type == kind
    tokenizer = processor.tokenizer
    for word in ("Yes", "No"):
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1, word
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert prompt.endswith("<|im_start|>assistant\n") and processor.image_token in prompt
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, tiny_qwen2_vl_dir):
    again = load_file(build_tiny_backbone("qwen2_vl", tmp_path / "a", seed=0) / "model.safetensors")
    other = load_file(build_tiny_backbone("qwen2_vl", tmp_path / "b", seed=1) / "model.safetensors")
    reference = load_file(tiny_qwen2_vl_dir / "model.safetensors")
    assert all(torch.equal(again[k], reference[k]) for k in reference)
    assert any(not torch.equal(other[k], reference[k]) for k in reference)


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny backbone kind 'gpt2'"):
        build_tiny_backbone("gpt2", tmp_path)
