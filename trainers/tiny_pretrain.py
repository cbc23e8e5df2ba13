"""Pre-train a tiny vision-language model on mini-MMEB text, so that the demo starts from a model that knows something.

Every real UniME-V2 run starts from a pretrained MLLM (Qwen2-VL, LLaVA-OneVision); the tiny offline backbones of
``data_builders/tiny_backbones.py`` are random, and from a random start the method learns almost nothing in CPU
minutes (``docs/tiny_pretrained_vlm.md``). This module makes the stand-in: a Qwen-VL of a chosen size, initialised
from scratch at fan-in scale (the init ``docs/judge_training.md`` found necessary), trained full-parameter (vision
tower included) with next-token prediction on the answers of a corpus derived from mini-MMEB TRAINING facts:

* image → caption ("Describe the image." → "a small red circle at the top left and ..."), for query images,
  target images (with MMEB's target prompt "Represent the given image.") and crops (the object's label);
* image + instruction → answer, the training records of the text-target tasks (classification, VQA, i2t);
* text → caption: a caption query ("Find me an everyday image that matches ... : <caption>") and a text target
  (a label, an answer, a caption) → its content again.

All in the backbone's chat format (user turn, then the assistant's answer; loss on the answer and ``<|im_end|>``).
Scenes whose query key is held out (:func:`~unime_v2.data_builders.mini_mmeb.splits.heldout_query_keys`) are
excluded, and the OOD colour×shape combinations never appear (mini-MMEB's training records never contain them).
Everything is deterministic by seed: the corpus, the init, the data order (``transformers.Trainer``, one process).
"""

from __future__ import annotations

import json
import math
import random
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer, TrainingArguments

from unime_v2.data_builders.mini_mmeb.builder import (
    MiniMMEBConfig,
    _ImageStore,
    build_train_rows,
    make_vocab,
    train_features,
)
from unime_v2.data_builders.mini_mmeb.scenes import describe
from unime_v2.data_builders.mini_mmeb.splits import build_split, heldout_query_keys
from unime_v2.data_builders.mini_mmeb.tasks import caption_text
from unime_v2.data_builders.tiny_backbones import build_tiny_backbone, scratch_init_
from unime_v2.modeling_unime_v2 import UniMEV2Model

from .evaluation import precision_at_1


DESCRIBE = "Describe the image."
IMAGE_MARKER = "<|image_1|>"


@dataclass
class TinyVLMSize:
    """Width and depth of the tiny Qwen-VL; head size is 16 so that M-RoPE's [2, 3, 3] sections fit."""

    hidden_size: int = 128
    num_layers: int = 4
    vision_embed_dim: int = 64
    vision_depth: int = 2
    image_side: int = 112

    def check(self) -> None:
        """Raise ``ValueError`` for a size the Qwen-VL configs cannot take."""
        if self.hidden_size % 16 or self.vision_embed_dim % 16:
            raise ValueError(f"hidden sizes must be multiples of 16 (head size), got {self}")
        if self.image_side % 28:
            raise ValueError(f"image_side must be a multiple of 28 (one merged Qwen-VL patch), got {self.image_side}")


@dataclass
class PretrainExample:
    """One corpus item: an optional image, the user's text (without the image marker) and the answer."""

    image: Any
    prompt: str
    answer: str
    kind: str


# ----------------------------------------------------------------------------------------------- model


def build_tiny_vlm(kind: str = "qwen2_vl", size: TinyVLMSize | None = None, seed: int = 0) -> tuple[Any, Any]:
    """A freshly initialised tiny Qwen-VL of ``size`` and its processor (images resized to ``image_side``²).

    Starts from :func:`build_tiny_backbone` (tokenizer, processors, token ids) and re-sizes its config.
    """
    size = size or TinyVLMSize()
    size.check()
    if kind not in ("qwen2_vl", "qwen2_5_vl"):
        raise ValueError(f"tiny pretraining supports qwen2_vl and qwen2_5_vl, got {kind!r}")
    with tempfile.TemporaryDirectory() as scratch:
        path = build_tiny_backbone(kind, Path(scratch) / "base", seed=seed)
        config = AutoModelForImageTextToText.from_pretrained(path).config
        processor = AutoProcessor.from_pretrained(path)
    text = config.text_config
    text.hidden_size, text.intermediate_size = size.hidden_size, 2 * size.hidden_size
    text.num_hidden_layers, text.num_attention_heads = size.num_layers, size.hidden_size // 16
    text.num_key_value_heads = max(1, size.hidden_size // 32)
    text.layer_types = ["full_attention"] * size.num_layers if hasattr(text, "layer_types") else None
    vision = config.vision_config
    vision.depth, vision.num_heads = size.vision_depth, size.vision_embed_dim // 16
    if kind == "qwen2_vl":
        vision.embed_dim, vision.hidden_size = size.vision_embed_dim, size.hidden_size
    else:
        vision.hidden_size, vision.intermediate_size = size.vision_embed_dim, 2 * size.vision_embed_dim
        vision.out_hidden_size = size.hidden_size
        vision.fullatt_block_indexes = [size.vision_depth - 1]
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    scratch_init_(model, seed)
    side = size.image_side * size.image_side
    processor.image_processor.size = {"shortest_edge": side, "longest_edge": side}
    return model, processor


# ----------------------------------------------------------------------------------------------- corpus


def _bare(text: str) -> str:
    return text.replace(IMAGE_MARKER, "").strip()


def _caption_after_colon(text: str) -> str:
    return text.split(":", 1)[1].strip() if ":" in text else text.strip()


def corpus_from_records(records: Sequence[dict]) -> list[PretrainExample]:
    """Pretraining examples from mini-MMEB TRAIN records (``build_mini_mmeb(...)["mmeb"]["train"]`` rows)."""
    out: list[PretrainExample] = []
    for record in records:
        query, positive = json.loads(record["qry_scene"]), json.loads(record["pos_scene"])
        if query.get("scene"):
            out.append(PretrainExample(record["qry_image"], DESCRIBE, caption_text(query["scene"]), "caption"))
        if positive["modality"] == "text":
            if record["qry_image"] is not None:
                out.append(PretrainExample(record["qry_image"], _bare(record["qry"]), record["pos_text"], "answer"))
            out.append(PretrainExample(None, record["pos_text"], record["pos_text"], "echo"))
        else:
            caption = caption_text(positive["spec"]) if positive["modality"] == "image" else _article_label(positive)
            out.append(PretrainExample(record["pos_image"], _bare(record["pos_text"]), caption, positive["modality"]))
        if query.get("query_modality") == "text":
            out.append(PretrainExample(None, record["qry"].strip(), _caption_after_colon(record["qry"]), "text"))
    return out


def _article_label(positive: dict) -> str:
    phrase = describe(positive["spec"]["objects"][0])
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def build_corpus(
    seed: int = 0, records: int = 6000, tasks: Sequence[str] | None = None, exclude_test_per_task: int = 200
) -> list[PretrainExample]:
    """The pretraining corpus of mini-MMEB seed ``seed``: ``records`` training records over the IND tasks.

    Training queries whose key is among the first ``exclude_test_per_task`` held-out queries of
    :func:`~unime_v2.data_builders.mini_mmeb.splits.build_split` (same seed, all tasks) are redrawn by the builder.
    """
    config = MiniMMEBConfig(
        seed=seed,
        train_pairs=records,
        eval_queries=1,
        num_candidates=2,
        caption_images=0,
        long_caption_images=0,
        compositional_per_subset=0,
        tasks=tasks,
    )
    train = _train_records_excluding(config, heldout_query_keys(MiniMMEBConfig(seed=seed), exclude_test_per_task))
    return corpus_from_records(train)


def _train_records_excluding(config: MiniMMEBConfig, exclude: set[str]) -> list[dict]:
    """mini-MMEB training records (images decoded to PIL) whose query keys avoid ``exclude``."""
    rows = build_train_rows(config, make_vocab(config), _ImageStore(config.image_size), exclude=frozenset(exclude))
    return list(Dataset.from_list(rows, features=train_features()))


# ----------------------------------------------------------------------------------------------- collation


class PretrainCollator:
    """Chat-format sequences (user: [image] text; assistant: answer) with labels on the answer and ``<|im_end|>``."""

    def __init__(self, processor: Any, max_length: int = 160) -> None:
        self.processor = processor
        self.max_length = max_length
        self.tokenizer = processor.tokenizer
        self.end = "<|im_end|>"

    def prompt(self, example: PretrainExample) -> str:
        content = ([{"type": "image"}] if example.image is not None else []) + [
            {"type": "text", "text": example.prompt}
        ]
        messages = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def __call__(self, examples: Sequence[PretrainExample]) -> dict[str, torch.Tensor]:
        texts = [self.prompt(e) + e.answer + self.end for e in examples]
        images = [e.image.convert("RGB") for e in examples if e.image is not None]
        self.tokenizer.padding_side = "right"
        batch = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        labels = torch.full_like(batch["input_ids"], -100)
        lengths = batch["attention_mask"].sum(1)
        for row, example in enumerate(examples):
            answer = len(self.tokenizer(example.answer + self.end, add_special_tokens=False)["input_ids"])
            end = int(lengths[row])
            labels[row, end - answer : end] = batch["input_ids"][row, end - answer : end]
        batch["labels"] = labels
        return dict(batch)


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


# ----------------------------------------------------------------------------------------------- train / measure


@dataclass
class PretrainSettings:
    """Optimisation settings of :func:`pretrain` (Trainer, one process, full-parameter incl. the vision tower)."""

    max_steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    lr_scheduler_type: str = "cosine"
    seed: int = 0
    logging_steps: int = 50


def tiny_training_arguments(output_dir: str | Path, settings: Any, **extra: Any) -> TrainingArguments:
    """``TrainingArguments`` of the tiny demos' in-process runs (this pretraining): the optimisation
    fields of ``settings`` (``max_steps``, ``batch_size``, ``learning_rate``, ``warmup_steps``, ``weight_decay``,
    ``lr_scheduler_type``, ``logging_steps``, ``seed``), no checkpoints, reports or progress bar, a seeded data order, the GPU when there is one; ``extra`` adds fields."""
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_steps,
        weight_decay=settings.weight_decay,
        lr_scheduler_type=settings.lr_scheduler_type,
        logging_steps=settings.logging_steps,
        save_strategy="no",
        report_to=[],
        seed=settings.seed,
        data_seed=settings.seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=False,
        disable_tqdm=True,
        **extra,
    )


def pretrain(
    model: Any, processor: Any, corpus: Sequence[PretrainExample], settings: PretrainSettings, work_dir: str | Path
) -> list[dict]:
    """Train ``model`` in place on ``corpus``; returns the Trainer's log history (loss per ``logging_steps``)."""
    args = tiny_training_arguments(work_dir, settings, remove_unused_columns=False, max_grad_norm=1.0)
    model.train()
    trainer = Trainer(
        model=model, args=args, train_dataset=_ListDataset(corpus), data_collator=PretrainCollator(processor)
    )
    trainer.train()
    return trainer.state.log_history


@torch.no_grad()
def lm_loss(model: Any, processor: Any, corpus: Sequence[PretrainExample], batch_size: int = 64) -> dict[str, float]:
    """Mean answer-token cross-entropy over ``corpus``, overall and per example kind (token-weighted)."""
    model.eval()
    collator = PretrainCollator(processor)
    device = next(model.parameters()).device
    totals: dict[str, list[float]] = {}
    for start in range(0, len(corpus), batch_size):
        chunk = list(corpus[start : start + batch_size])
        batch = {k: v.to(device) for k, v in collator(chunk).items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits[:, :-1].float()
        target = labels[:, 1:]
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none", ignore_index=-100)
        for row, example in enumerate(chunk):
            mask = target[row] != -100
            for key in ("all", example.kind):
                entry = totals.setdefault(key, [0.0, 0.0])
                entry[0] += float(losses[row][mask].sum())
                entry[1] += float(mask.sum())
    return {key: total / max(count, 1.0) for key, (total, count) in totals.items()}


def save_pretrained_vlm(model: Any, processor: Any, out_dir: str | Path, info: dict) -> Path:
    """Save the model (safetensors) and processor as an ordinary checkpoint, plus ``TINY_PRETRAIN.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "TINY_PRETRAIN.json").write_text(json.dumps(info, indent=2, default=str))
    return out


def size_info(size: TinyVLMSize, model: Any) -> dict:
    """The size settings and the parameter count (for the checkpoint's provenance file)."""
    return {**asdict(size), "parameters": sum(p.numel() for p in model.parameters())}


def split_corpus(corpus: Sequence[PretrainExample], heldout: int, seed: int) -> tuple[list, list]:
    """A seeded (train, held-out) split of the corpus for measuring the LM loss on unseen examples."""
    order = list(range(len(corpus)))
    random.Random(seed).shuffle(order)
    keep = math.ceil(min(heldout, len(corpus) // 2))
    return [corpus[i] for i in order[keep:]], [corpus[i] for i in order[:keep]]


@dataclass
class PretrainArguments:
    """Settings of ``examples/pretrain_tiny_vlm.py`` (the shipped checkpoint's recipe: the defaults)."""

    output_dir: str = field(
        metadata={"help": "The pretrained checkpoint folder (model + processor + TINY_PRETRAIN.json)."}
    )
    kind: str = field(default="qwen2_vl", metadata={"help": "qwen2_vl | qwen2_5_vl."})
    seed: int = field(default=0, metadata={"help": "Seeds the corpus, the init and the data order."})
    hidden_size: int = field(default=128, metadata={"help": "LM width."})
    num_layers: int = field(default=4, metadata={"help": "LM depth."})
    vision_embed_dim: int = field(default=64, metadata={"help": "Vision tower width."})
    vision_depth: int = field(default=2, metadata={"help": "Vision tower depth."})
    image_side: int = field(default=112, metadata={"help": "Images resized to this side (a multiple of 28)."})
    records: int = field(default=6000, metadata={"help": "mini-MMEB training records the corpus is made of."})
    heldout_examples: int = field(default=256, metadata={"help": "Corpus examples kept out to measure the LM loss."})
    max_steps: int = field(default=2000, metadata={"help": "Training steps (0: save the random start)."})
    batch_size: int = field(default=32, metadata={"help": "Examples per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    warmup_steps: int = field(default=50, metadata={"help": "Linear warm-up steps."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    eval_rows: int = field(default=10, metadata={"help": "Held-out mini-MMEB rows per task for zero-shot p@1."})
    eval_candidates: int = field(default=100, metadata={"help": "Candidates per held-out row."})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (1 is fastest for tiny models)."})


def zero_shot_precision(path: str, rows_per_task: int, candidates: int, seed: int) -> dict[str, float]:
    """Precision@1 of the checkpoint's last-token embeddings (chat format) on held-out mini-MMEB rows."""
    config = MiniMMEBConfig(seed=seed, caption_images=0, long_caption_images=0, compositional_per_subset=0)
    rows = build_split(config, train_per_task=0, test_per_task=rows_per_task, eval_candidates=candidates).heldout
    model = UniMEV2Model.from_backbone(path, prompt_format="chat", dtype=torch.float32).eval()
    with torch.no_grad():
        return precision_at_1(model, list(rows), batch_size=64)
