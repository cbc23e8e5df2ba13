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
    UniMEV2Trainer,
    UniMEV2TrainingArguments,
    base_embedder,
    build_embedder,
    embed_inputs,
)


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


def test_trainer_loss_and_gradients_equal_the_padded_batch(tiny_qwen2_vl_dir: Path, tmp_path: Path) -> None:
    args = UniMEV2TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", save_strategy="no", lora_dropout=0.0
    )
    torch.manual_seed(0)
    model = build_embedder(str(tiny_qwen2_vl_dir), args)
    with torch.no_grad():  # LoRA B starts at zero, which zeroes A's gradient: give B seeded values
        generator = torch.Generator().manual_seed(1)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    processor = base_embedder(model).processor
    trainer = UniMEV2Trainer(model=model, args=args, data_collator=UniMEV2Collator(processor))
    trainer.current_gradient_accumulation_steps = 1
    results = []
    for collator in (UniMEV2Collator(processor), UniMEV2Collator(LengthBucketProcessor(processor, 2))):
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
