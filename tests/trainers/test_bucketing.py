"""Length buckets: the same embeddings, loss and gradients as the one padded batch, from fewer padded tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from unime_v2.modeling_unime_v2 import UniMEV2Model
from unime_v2.trainers import (
    LengthBucketProcessor,
    UniMEV2Collator,
    UniMEV2ModelArguments,
    UniMEV2Trainer,
    UniMEV2TrainingArguments,
    base_embedder,
    build_embedder,
    embed_inputs,
)
from unime_v2.trainers.bucketing import pack_text_batch


WORDS = "red green blue small large circle square star on the left of a picture".split()


def colour_image(seed: int, size: int = 64) -> Image.Image:
    return Image.new("RGB", (size, size), ((seed * 53) % 256, (seed * 97) % 256, (seed * 31) % 256))


def records(num_records: int = 3, k: int = 4) -> list[dict]:
    """Image queries; candidates are texts of 1–14 words, and one image candidate per record."""
    out = []
    for r in range(num_records):
        texts = [" ".join(WORDS[: 1 + (3 * r + 5 * j) % 14]) for j in range(k + 1)]
        candidates = [{"text": text, "image": None} for text in texts]
        candidates[2] = {"text": "<|image_1|>\nRepresent the given image.", "image": colour_image(10 + r)}
        out.append(
            {
                "query": {"text": f"<|image_1|>\nRepresent the given image {r}", "image": colour_image(r)},
                "positive": candidates[0],
                "negatives": candidates[1:],
                "scores": [0.9] + [0.1 * (j + 1) for j in range(k)],
                "record_index": 100 + r,
            }
        )
    return out


@pytest.mark.parametrize("text_buckets", [1, 2, 3])
def test_buckets_hold_every_item_once_with_less_padding(tiny_qwen2_vl_dir: Path, text_buckets: int) -> None:
    model = UniMEV2Model.from_backbone(str(tiny_qwen2_vl_dir), dtype=torch.float32)
    batch = UniMEV2Collator(LengthBucketProcessor(model.processor, text_buckets))(records())
    padded = UniMEV2Collator(model.processor)(records())
    rows = torch.cat(batch["bucket_rows"])
    assert sorted(rows.tolist()) == list(range(3 * 6))
    assert len(batch["buckets"]) == 1 + text_buckets
    assert "pixel_values" in batch["buckets"][0] and all("pixel_values" not in b for b in batch["buckets"][1:])
    for bucket in batch["buckets"][1:]:
        mask = bucket["attention_mask"]
        assert mask.shape[1] == mask.sum(-1).max()  # trimmed to its longest row
        assert bucket["input_ids"].shape == mask.shape == bucket["mm_token_type_ids"].shape
    bucketed_tokens = sum(b["attention_mask"].numel() for b in batch["buckets"])
    assert bucketed_tokens < padded["attention_mask"].numel()
    assert torch.equal(batch["judge_scores"], padded["judge_scores"])


@pytest.mark.parametrize("kind", ["qwen2_vl", "llava_onevision"])
def test_bucketed_embeddings_equal_the_padded_batch(kind: str, tiny_backbone_dirs: dict[str, Path]) -> None:
    model = UniMEV2Model.from_backbone(str(tiny_backbone_dirs[kind]), dtype=torch.float32)
    padded = UniMEV2Collator(model.processor)(records())
    bucketed = UniMEV2Collator(LengthBucketProcessor(model.processor, 2))(records())
    with torch.no_grad():
        expected = model(**{k: v for k, v in padded.items() if k != "judge_scores"}).embeddings
        got = embed_inputs(model, bucketed)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("layout", [{"length_buckets": 2}, {"pack_text_tokens": 32}], ids=["buckets", "packed"])
def test_trainer_loss_and_gradients_equal_the_padded_batch(
    layout: dict, tiny_qwen2_vl_dir: Path, tmp_path: Path
) -> None:
    args = UniMEV2TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", save_strategy="no")
    torch.manual_seed(0)
    model_args = UniMEV2ModelArguments(backbone=str(tiny_qwen2_vl_dir), lora_dropout=0.0)
    model = build_embedder(str(tiny_qwen2_vl_dir), model_args, args)
    with torch.no_grad():  # LoRA B starts at zero, which zeroes A's gradient: give B seeded values
        generator = torch.Generator().manual_seed(1)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    processor = base_embedder(model).processor
    trainer = UniMEV2Trainer(model=model, args=args, data_collator=UniMEV2Collator(processor))
    trainer.current_gradient_accumulation_steps = 1
    results = []
    for collator in (UniMEV2Collator(processor), UniMEV2Collator(processor, **layout)):
        model.zero_grad(set_to_none=True)
        loss = trainer.training_step(model, collator(records()))
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((float(loss), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    assert all(grads_a[n].abs().max() > 0 for n in grads_a if "lora_A" in n)
    for name, gradient in grads_a.items():
        assert (gradient - grads_b[name]).abs().max() <= 1e-5 * max(1.0, gradient.abs().max().item()), name


def test_errors_name_the_record_and_role(tiny_qwen2_vl_dir: Path) -> None:
    model = UniMEV2Model.from_backbone(str(tiny_qwen2_vl_dir), dtype=torch.float32)
    bad = records()
    bad[1]["negatives"][3] = {"text": "<|image_1|> a", "image": "/no/such/file.png"}
    with pytest.raises(FileNotFoundError, match=r"record 101, negative 3: image file '/no/such/file.png'"):
        UniMEV2Collator(LengthBucketProcessor(model.processor))(bad)


def test_text_buckets_must_be_positive(tiny_qwen2_vl_dir: Path) -> None:
    model = UniMEV2Model.from_backbone(str(tiny_qwen2_vl_dir), dtype=torch.float32)
    with pytest.raises(ValueError, match="text_buckets must be >= 1"):
        LengthBucketProcessor(model.processor, 0)
    with pytest.raises(ValueError, match="length_buckets must be >= 0"):
        UniMEV2TrainingArguments(output_dir="unused", length_buckets=-1)


def test_collator_length_buckets_setting_wraps_the_processor(tiny_qwen2_vl_dir: Path) -> None:
    """``UniMEV2Collator(processor, length_buckets=n)`` (what ``examples/train.py`` builds from the training
    argument) gives the batch of the explicit wrapper; 0 keeps the one padded batch."""
    model = UniMEV2Model.from_backbone(str(tiny_qwen2_vl_dir), dtype=torch.float32)
    wrapped = UniMEV2Collator(LengthBucketProcessor(model.processor, 2))(records())
    setting = UniMEV2Collator(model.processor, length_buckets=2)(records())
    assert [b["input_ids"].tolist() for b in setting["buckets"]] == [
        b["input_ids"].tolist() for b in wrapped["buckets"]
    ]
    assert [r.tolist() for r in setting["bucket_rows"]] == [r.tolist() for r in wrapped["bucket_rows"]]
    assert "buckets" not in UniMEV2Collator(model.processor, length_buckets=0)(records())


# ------------------------------------------------------------------------------------ padding-free packing
@pytest.mark.parametrize(
    ("kind", "prompt_format", "padding_side"),
    [
        ("qwen2_vl", "official", "left"),
        ("qwen2_vl", "chat", "right"),
        ("qwen2_5_vl", "official", "right"),
        ("qwen2_5_vl", "chat", "left"),
        ("llava_onevision", "chat", "left"),
    ],
)
@pytest.mark.parametrize("pack_text_tokens", [1, 24, 4096])
def test_packed_embeddings_equal_the_padded_batch(
    kind: str, prompt_format: str, padding_side: str, pack_text_tokens: int, tiny_backbone_dirs: dict[str, Path]
) -> None:
    """Each text item packed padding-free (one per row, several per row, all in one row) embeds as it does padded."""
    model = UniMEV2Model.from_backbone(
        str(tiny_backbone_dirs[kind]), dtype=torch.float32, prompt_format=prompt_format, padding_side=padding_side
    )
    padded = UniMEV2Collator(model.processor)(records())
    packed = UniMEV2Collator(model.processor, pack_text_tokens=pack_text_tokens)(records())
    text = packed["buckets"][-1]
    assert "attention_mask" not in text and text["position_ids"].shape[-2:] == text["input_ids"].shape
    with torch.no_grad():
        expected = model(**{k: v for k, v in padded.items() if k != "judge_scores"}).embeddings
        got = embed_inputs(model, packed)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


def test_packing_lays_every_token_once_in_bounded_rows(tiny_qwen2_vl_dir: Path) -> None:
    model = UniMEV2Model.from_backbone(str(tiny_qwen2_vl_dir), dtype=torch.float32)
    items = [{"text": " ".join(WORDS[: 1 + (7 * i) % 14]), "image": None} for i in range(20)]
    padded = model.processor(items)
    packed, rows = pack_text_batch(padded, torch.arange(20), 40, pad_token_id=-1, mrope=True)
    lengths = padded["attention_mask"].sum(-1)
    assert sorted(rows.tolist()) == list(range(20))
    assert packed["input_ids"].shape[1] == 40 and int((packed["input_ids"] != -1).sum()) == int(lengths.sum())
    assert packed["position_ids"].shape == (4, *packed["input_ids"].shape)
    flat_ids = packed["input_ids"].flatten()
    for end, item in zip(packed["sequence_ends"].tolist(), rows.tolist(), strict=True):
        n = int(lengths[item])
        real = padded["input_ids"][item][padded["attention_mask"][item].bool()]
        assert torch.equal(flat_ids[end - n + 1 : end + 1], real)  # the item's tokens, contiguous, ending there
        assert packed["position_ids"][0].flatten()[end] == n - 1
    assert packed["input_ids"].numel() < padded["input_ids"].numel()


def test_packed_batch_needs_restarting_positions(tiny_qwen2_vl_dir: Path) -> None:
    """The boundaries come from the position ids: with one running position per row the items would attend to
    each other (different embeddings), and a packed batch without positions or with a mask is refused."""
    model = UniMEV2Model.from_backbone(str(tiny_qwen2_vl_dir), dtype=torch.float32)
    items = [{"text": " ".join(WORDS[: 3 + i]), "image": None} for i in range(4)]
    packed, rows = pack_text_batch(model.processor(items), torch.arange(4), 4096, mrope=True)
    running = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1]).expand(4, 1, -1))
    with torch.no_grad():
        expected = model.encode(items)[rows]
        torch.testing.assert_close(model(**packed).embeddings, expected, atol=2e-5, rtol=1e-4)
        assert (model(**running).embeddings - expected).abs().max() > 1e-3
    with pytest.raises(ValueError, match="position_ids that restart at 0"):
        model(**{k: v for k, v in packed.items() if k != "position_ids"})
    with pytest.raises(ValueError, match="no attention_mask"):
        model(**packed, attention_mask=torch.ones_like(packed["input_ids"]))


def test_pack_text_tokens_must_not_be_negative(tiny_qwen2_vl_dir: Path) -> None:
    model = UniMEV2Model.from_backbone(str(tiny_qwen2_vl_dir), dtype=torch.float32)
    with pytest.raises(ValueError, match="pack_text_tokens must be >= 0"):
        LengthBucketProcessor(model.processor, pack_text_tokens=-1)
    with pytest.raises(ValueError, match="pack_text_tokens must be >= 0"):
        UniMEV2TrainingArguments(output_dir="unused", pack_text_tokens=-2)
    with pytest.raises(ValueError, match="text-only batches"):
        pack_text_batch(model.processor([{"text": "<|image_1|> a", "image": colour_image(0)}]), torch.arange(1), 8)
