"""The embedder's model card renders with the recipe and loads back as a valid card."""

from __future__ import annotations

from huggingface_hub import ModelCard

from unime_v2.hub_cards.model_card import build_embedder_card
from unime_v2.modeling_unime_v2 import UniMEV2Model


def test_embedder_card_renders_and_parses(tiny_qwen2_vl_dir, tmp_path):
    config = UniMEV2Model.from_backbone(str(tiny_qwen2_vl_dir), query_instruction="Find the caption:").config
    card = build_embedder_card(
        config, "me/unime-v2-tiny", {"loss": "symmetric_kl", "lr": 1e-4}, {"precision@1": 0.4321}, ["me/mined"]
    )
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.library_name == "transformers"
    assert "unime-v2" in loaded.data.tags and loaded.data.datasets == ["me/mined"]
    assert 'AutoModel.from_pretrained("me/unime-v2-tiny", trust_remote_code=True)' in loaded.text
    assert "| precision@1 | 0.4321 |" in loaded.text and "| loss | symmetric_kl |" in loaded.text
    assert "| prompt format | official |" in loaded.text
    assert "| default query instruction (`encode_query`) | Find the caption: |" in loaded.text
    assert "| default document instruction (`encode_document`) | (none) |" in loaded.text
