"""The tiny VLM pretraining (``trainers/tiny_pretrain.py``) and the fact-disjoint mini-MMEB split
(``data_builders/mini_mmeb/splits.py``); see ``docs/tiny_pretrained_vlm.md``. Small sizes: 6 s of test time on one thread."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from unime_v2.data_builders.mini_mmeb import MiniMMEBConfig
from unime_v2.data_builders.mini_mmeb.splits import build_split, heldout_query_keys
from unime_v2.data_builders.tiny_backbones import shipped_tiny_vlm
from unime_v2.trainers import tiny_pretrain as tp


TASKS = ["MiniImageNet-cls", "MiniCOCO-i2t", "MiniCOCO-t2i", "MiniObjectNet-cls"]
SMALL = tp.TinyVLMSize(hidden_size=32, num_layers=1, vision_embed_dim=16, vision_depth=1, image_side=56)


def _config() -> MiniMMEBConfig:
    return MiniMMEBConfig(seed=3, tasks=TASKS, caption_images=0, long_caption_images=0, compositional_per_subset=0)


def _keys(rows) -> set[str]:
    return {
        json.dumps([d, t, json.loads(s)["scene"] and _no_jitter(json.loads(s)["scene"])], sort_keys=True)
        for d, t, s in zip(rows["dataset"], rows["qry_text"], rows["qry_scene"])
    }


def _no_jitter(scene: dict) -> dict:
    return {**scene, "objects": [{k: v for k, v in o.items() if k != "jitter"} for o in scene["objects"]]}


def test_split_is_fact_disjoint_and_candidates_do_not_change_queries():
    small, large = (
        build_split(_config(), 60, 12, eval_candidates=8),
        build_split(_config(), 60, 12, eval_candidates=40),
    )
    assert small.heldout["qry_text"] == large.heldout["qry_text"]
    assert small.heldout["qry_scene"] == large.heldout["qry_scene"]
    assert small.train["qry_scene"] == large.train["qry_scene"]
    assert {len(t) for t in small.heldout["tgt_text"]} == {8} and {len(t) for t in large.heldout["tgt_text"]} == {40}
    for short, long in zip(small.heldout["tgt_scene"], large.heldout["tgt_scene"]):
        assert short[0] == long[0] and set(short) <= set(long)
    assert not _keys(small.train) & _keys(small.heldout)  # an independent key: text + image facts, jitter dropped
    assert small.heldout_keys == heldout_query_keys(_config(), 12)
    assert set(small.train["dataset"]) == {"MiniImageNet-cls", "MiniCOCO-i2t", "MiniCOCO-t2i"}  # IND only
    assert len(small.heldout) == 4 * 12 and len(small.train) == 3 * 60


def test_split_raises_instead_of_leaking():
    tiny_vocab = MiniMMEBConfig(
        seed=0,
        tasks=["MiniImageNet-cls"],
        colors=["red", "green", "blue"],
        shapes=["circle", "square", "triangle"],
        sizes=["small", "large"],
        backgrounds=["white"],
        caption_images=0,
        long_caption_images=0,
        compositional_per_subset=0,
    )
    with pytest.raises(ValueError, match="outside the held-out facts"):
        build_split(tiny_vocab, 50, 1500, eval_candidates=2)


def test_collator_labels_only_the_answer():
    corpus = tp.build_corpus(seed=0, records=18)
    assert {e.kind for e in corpus} >= {"caption", "answer", "echo", "image", "crop", "text"}
    _, processor = tp.build_tiny_vlm("qwen2_vl", SMALL, seed=0)
    batch = tp.PretrainCollator(processor)(corpus[:6])
    for row, example in enumerate(corpus[:6]):
        labelled = batch["labels"][row][batch["labels"][row] != -100]
        assert processor.tokenizer.decode(labelled) == example.answer + "<|im_end|>"
    assert batch["pixel_values"].shape[0] > 0


def _pretrain_small(tmp_path, name: str) -> tuple[dict, dict, torch.nn.Module]:
    corpus = tp.build_corpus(seed=0, records=90)
    train, heldout = tp.split_corpus(corpus, 48, seed=0)
    model, processor = tp.build_tiny_vlm("qwen2_vl", SMALL, seed=0)
    before = tp.lm_loss(model, processor, heldout)
    settings = tp.PretrainSettings(max_steps=40, batch_size=16, learning_rate=3e-3, warmup_steps=5, logging_steps=10)
    tp.pretrain(model, processor, train, settings, tmp_path / f"{name}-work")
    tp.save_pretrained_vlm(model, processor, tmp_path / name, tp.size_info(SMALL, model))
    return before, {"heldout": heldout}, model


def test_pretraining_is_deterministic_loads_and_beats_the_random_start(tmp_path):
    before, data, model = _pretrain_small(tmp_path, "a")
    _, _, again = _pretrain_small(tmp_path, "b")
    for (name, p), q in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(p, q), name
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "a")
    processor = AutoProcessor.from_pretrained(tmp_path / "a")
    assert processor.image_processor.size["longest_edge"] == 56 * 56
    after = tp.lm_loss(loaded, processor, data["heldout"])
    assert after["all"] < before["all"] - 1.0, (before, after)
    assert (tmp_path / "a" / "model.safetensors").exists()
    assert json.loads((tmp_path / "a" / "TINY_PRETRAIN.json").read_text())["hidden_size"] == 32


def test_shipped_checkpoint_loads_and_knows_the_corpus():
    path = shipped_tiny_vlm("qwen2_vl")
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    info = json.loads((path / "TINY_PRETRAIN.json").read_text())
    assert info["size"]["parameters"] == sum(p.numel() for p in model.parameters())
    examples = tp.build_corpus(seed=0, records=30)  # the first records of its own corpus
    random_model, _ = tp.build_tiny_vlm(
        "qwen2_vl",
        tp.TinyVLMSize(
            **{
                k: info["size"][k]
                for k in ("hidden_size", "num_layers", "vision_embed_dim", "vision_depth", "image_side")
            }
        ),
        seed=0,
    )
    assert (
        tp.lm_loss(model, processor, examples)["all"]
        < 1.0
        < 5.0
        < tp.lm_loss(random_model, processor, examples)["all"]
    )


def test_the_pretrained_spec_resolves_to_the_shipped_checkpoint() -> None:
    from unime_v2.data_builders.recipes import resolve_backbone

    assert resolve_backbone("tiny:pretrained") == str(shipped_tiny_vlm())
