"""GPU performance at the real model shapes (BENCHMARKS.md), with the card's own measured matrix rate as the yardstick.

    python benchmarks/gpu_scale.py --out gpu_scale.json          # one H100/H200, < 8 min, bf16, sdpa
    python benchmarks/gpu_scale.py --tiny --out tiny.json        # CPU smoke test (CI): tiny shapes, fp32, < 1 min

Random weights in the published shapes, built from config (no download): the embedder is Qwen2-VL-2B (LM 1536 wide,
28 layers, 12/2 heads, MLP 8960, vocab 151936; vision 32 blocks of 1280, MLP ratio 4, patch 14, merge 2), the judge
Qwen2.5-VL-7B (LM 3584, 28 layers, 28/4 heads, MLP 18944, vocab 152064; vision 32 blocks of 1280, MLP 3420, window
attention with full blocks 7/15/23/31). Token ids come from the tests' tiny byte-level tokenizer and processors
(vocabulary content does not matter for timing; shapes do): a 336² image is 144 LM tokens (576 vision patches).

Sections (each in its own try/except; results go to the JSON after every section; a wall-clock guard skips what
would not fit):

0. ``matmul``: the card's bf16 matrix rate (8192³, mean of 10 after warm-up): the MFU denominator.
1. ``encode``: items/s of the 2B embedder for image items and text items (model only, pre-processed batches), and
   ``UniMEV2Model.encode`` end to end (processor on the CPU included).
2. ``train``: the embedder step through ``UniMEV2Trainer.training_step`` (its ``compute_loss``: the symmetric-KL
   loss), LoRA r = 16 on the LM, bf16, sdpa, AdamW step included; queries/s, LM tokens/s (real tokens), peak memory,
   MFU. Variants: one batch padded to the longest row (the collator's layout) vs length buckets
   (``LengthBucketProcessor``), with and without gradient checkpointing, micro-batches 16 and 64.
3. ``judge``: pairs/s of a 7B judge for one image query and 50 text candidates: (a) one ``generate()`` per pair,
   (b) batched full pairs, (c) prefix-shared (``JudgeScorer.score``), (d) several queries per forward
   (``JudgeScorer.score_many``), model only and end to end; and (d) with ``torch.compile`` of the judge's decoder layers
   (not with ``--tiny``/``--no_compile``; its scores checked against eager).
4. ``retrieval``: exact top-50 over 662k candidates × 1536 dims: torch matmul + top-k on the GPU (fp32 exact;
   bf16 with its recall against fp32), and faiss ``IndexFlatIP`` (CPU) where faiss is installed.
5. ``extras`` (only if time is left): the authors' GradCache two-pass step (chunks of 8 and 2), variable-length text
   candidates (5–30 tokens), 672² query images, the recipe's DoRA + dropout 0.1, and ``torch.compile`` of the LM
   decoder layers.

FLOP conventions (MFU = model FLOPs / step time / measured matrix rate). Forward: 2 FLOPs per weight per token for
every linear layer (LM and vision; embedding lookups excluded), attention 4·L²·d per layer (causal LM: half of
that). Training, two columns: ``mfu_lora`` counts what a LoRA step must execute: the frozen LM forward and its
activation gradients (2 × forward), the LoRA matmuls 3 ×, attention 3 ×, the frozen vision tower forward only (no
gradient flows into it) — the reference's 11.6 % uses this convention; ``mfu_6nt`` is the standard 6·N·T for the LM
(as if its weights trained) + the vision forward. Padding and recomputation (gradient checkpointing) are never
counted: they are overhead, not model FLOPs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from peft import LoraConfig, get_peft_model
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, PreTrainedModel

from unime_v2.data_builders.tiny_backbones import build_tiny_backbone
from unime_v2.modeling_unime_v2 import JudgeScorer, UniMEV2Config, UniMEV2Model, UniMEV2Processor, set_pixel_budget
from unime_v2.trainers import (
    LengthBucketProcessor,
    UniMEV2Collator,
    UniMEV2ModelArguments,
    UniMEV2Trainer,
    UniMEV2TrainingArguments,
    candidate_cosines,
    embed_inputs,
    lora_target_regex,
    symmetric_kl_loss,
)


# ------------------------------------------------------------------------------------------------ shapes
QWEN2_VL_2B = {  # Qwen/Qwen2-VL-2B-Instruct config.json
    "text": {
        "hidden_size": 1536,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "intermediate_size": 8960,
        "vocab_size": 151936,
        "rms_norm_eps": 1e-6,
    },
    "vision": {
        "depth": 32,
        "embed_dim": 1280,
        "hidden_size": 1536,
        "mlp_ratio": 4,
        "num_heads": 16,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
}
QWEN25_VL_7B = {  # Qwen/Qwen2.5-VL-7B-Instruct config.json
    "text": {
        "hidden_size": 3584,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "intermediate_size": 18944,
        "vocab_size": 152064,
        "rms_norm_eps": 1e-6,
    },
    "vision": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 3584,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "tokens_per_second": 2,
    },
}
ROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}


@dataclass
class Settings:
    """Every size the benchmark uses; ``--tiny`` swaps in the tests' tiny backbones and small inputs."""

    tiny: bool = False
    device: str = "cuda"
    dtype: str = "bfloat16"
    image_size: int = 336
    batch: int = 16
    big_batch: int = 64
    negatives: int = 8
    query_tokens: int = 30
    candidate_tokens: int = 16
    warmup: int = 2
    steps: int = 5
    encode_image_batch: int = 64
    encode_text_batch: int = 256
    encode_workers: int = 8
    judge_candidates: int = 50
    judge_queries: int = 16
    queries_per_forward: list[int] = field(default_factory=lambda: [1, 4, 16])
    generate_pairs: int = 10
    pool: int = 662_000
    dims: int = 1536
    top_k: int = 50
    retrieval_chunk: int = 4096
    retrieval_queries: int = 16384
    faiss_queries: int = 512
    matmul_size: int = 8192
    budget_s: float = 420.0
    gradcache_chunks: list[int] = field(default_factory=lambda: [8, 2])
    pack_tokens: tuple[int, int] = (512, 4096)
    depth_divisor: int = 1  # > 1: the real widths at 1/N of the depth (a CPU check of ratios, not of the card)
    variants: str = ""  # comma-separated name parts: time only the training variants that contain one


def tiny_settings(device: str) -> Settings:
    return Settings(
        tiny=True,
        device=device,
        dtype="float32",
        image_size=56,
        batch=2,
        big_batch=4,
        negatives=2,
        query_tokens=6,
        candidate_tokens=4,
        warmup=1,
        steps=2,
        encode_image_batch=4,
        encode_text_batch=8,
        encode_workers=2,
        judge_candidates=4,
        judge_queries=3,
        queries_per_forward=[1, 2],
        generate_pairs=2,
        pool=3000,
        dims=32,
        top_k=10,
        retrieval_chunk=64,
        retrieval_queries=128,
        faiss_queries=64,
        matmul_size=256,
        budget_s=600.0,
        gradcache_chunks=[2],
        pack_tokens=(16, 256),
    )


# ------------------------------------------------------------------------------------------------ bookkeeping
class Report:
    """Results written to JSON after every section; each section guarded (errors recorded) and time-boxed."""

    def __init__(self, path: Path | None, budget_s: float):
        self.path, self.start, self.budget = path, time.perf_counter(), budget_s
        self.data: dict[str, Any] = {"errors": {}, "skipped": []}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()

    @contextlib.contextmanager
    def section(self, name: str, needs_s: float = 0.0) -> Iterator[dict | None]:
        """Yields the section's dict, or ``None`` (skipped) when fewer than ``needs_s`` seconds are left."""
        if self.left() < needs_s:
            self.data["skipped"].append(name)
            print(f"[{self.elapsed():6.1f}s] skip {name}: {self.left():.0f}s left, needs {needs_s:.0f}s", flush=True)
            yield None
            self.save()
            return
        print(f"[{self.elapsed():6.1f}s] {name} ...", flush=True)
        result = self.data.setdefault(name, {})
        started = time.perf_counter()
        try:
            yield result
        except Exception as error:  # noqa: BLE001 — a failed section must not lose the others
            self.data["errors"][name] = f"{type(error).__name__}: {error}\n{traceback.format_exc()[-3000:]}"
            print(f"[{self.elapsed():6.1f}s] {name} FAILED: {type(error).__name__}: {error}", flush=True)
        result["section_seconds"] = round(time.perf_counter() - started, 2)
        self.save()

    def save(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        if self.path:
            self.path.write_text(json.dumps(self.data, indent=1, default=float))


def sig(value: float, digits: int = 4) -> float:
    """``value`` rounded to ``digits`` significant digits (small numbers stay non-zero)."""
    return float(f"{value:.{digits}g}")


def mfu(flops: float, seconds: float, peak: float) -> float | None:
    """Model FLOPs utilisation: ``flops`` done in ``seconds`` over the measured matrix rate; ``None`` without one."""
    return sig(flops / seconds / peak) if peak else None


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(function: Callable[[], Any], device: str, warmup: int, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls after ``warmup`` calls, synchronising the device around each."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        function()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def reset_peak(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb(device: str) -> float:
    """Peak device memory allocated since the last reset (GPU), or the process's peak RSS (CPU)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def to_device(value: Any, device: str) -> Any:
    """Tensors of a (nested) batch to ``device``; lists and mappings (length buckets) recursively."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    if hasattr(value, "items"):
        return type(value)({k: to_device(v, device) for k, v in value.items()})
    return value


# ------------------------------------------------------------------------------------------------ inputs
def noise_image(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def one_token_words(tokenizer: Any) -> list[str]:
    """Words that are one token alone and one token after a space, so ``n`` of them are exactly ``n`` tokens."""
    words = sorted({w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii()})
    return [
        w
        for w in words
        if len(tokenizer.encode(w, add_special_tokens=False)) == 1
        and len(tokenizer.encode(" " + w, add_special_tokens=False)) == 1
    ]


def text_of(words: list[str], tokens: int, rng: np.random.Generator) -> str:
    return " ".join(rng.choice(words, size=max(1, tokens)).tolist())


def make_records(
    s: Settings,
    words: list[str],
    batch: int,
    seed: int,
    lengths: tuple[int, int] | None = None,
    image_size: int | None = None,
) -> list[dict]:
    """Training records: an image query (+ ``query_tokens`` words), 1 + k text candidates, random judge scores.

    Candidates have ``candidate_tokens`` tokens, or a uniform draw from ``lengths`` (inclusive) when given.
    """
    rng = np.random.default_rng(seed)
    size = image_size or s.image_size

    def candidate() -> dict:
        n = s.candidate_tokens if lengths is None else int(rng.integers(lengths[0], lengths[1] + 1))
        return {"text": text_of(words, n, rng), "image": None}

    return [
        {
            "query": {
                "text": "<|image_1|>\n" + text_of(words, s.query_tokens, rng),
                "image": noise_image(size, seed + i),
            },
            "positive": candidate(),
            "negatives": [candidate() for _ in range(s.negatives)],
            "scores": rng.uniform(0, 1, s.negatives + 1).round(3).tolist(),
        }
        for i in range(batch)
    ]


# ------------------------------------------------------------------------------------------------ models
def shallow(shape: dict, divisor: int) -> dict:
    """The published shape with 1/``divisor`` of its LM layers and vision blocks (widths unchanged)."""
    if divisor == 1:
        return shape
    text, vision = dict(shape["text"]), dict(shape["vision"])
    text["num_hidden_layers"] = max(1, round(text["num_hidden_layers"] / divisor))
    vision["depth"] = max(1, round(vision["depth"] / divisor))
    if "fullatt_block_indexes" in vision:
        vision["fullatt_block_indexes"] = sorted(
            {min(vision["depth"] - 1, i // divisor) for i in vision["fullatt_block_indexes"]}
        )
    return {"text": text, "vision": vision}


def real_config(folder: Path, shape: dict, kind: str) -> Any:
    """The tiny backbone's config (its token ids) with the published model's widths, depths and vision tower."""
    config = AutoConfig.from_pretrained(folder)
    text = config.get_text_config()
    for key, value in shape["text"].items():
        setattr(text, key, value)
    text.head_dim = text.hidden_size // text.num_attention_heads
    text.layer_types = ["full_attention"] * text.num_hidden_layers
    text.rope_parameters = dict(ROPE)
    text.use_sliding_window = False
    for key, value in shape["vision"].items():
        setattr(config.vision_config, key, value)
    if kind == "qwen2_vl":
        config.vision_config.hidden_size = text.hidden_size  # merger output width
    return config


def build_vlm(folder: Path, s: Settings, shape: dict | None, kind: str) -> torch.nn.Module:
    """A random ``*ForConditionalGeneration`` in the real shape (or the tiny one), built on the device."""
    config = AutoConfig.from_pretrained(folder) if shape is None else real_config(folder, shape, kind)
    torch.manual_seed(0)
    with torch.device(s.device):
        model = AutoModelForImageTextToText.from_config(
            config, dtype=getattr(torch, s.dtype), attn_implementation="sdpa"
        )
    return model.eval()


def wrap_embedder(vlm: torch.nn.Module, folder: Path, image_size: int) -> UniMEV2Model:
    """``UniMEV2Model`` around an in-memory VLM, like ``from_backbone`` does around a checkpoint (official format)."""
    config = UniMEV2Config(
        backbone_config=vlm.config,
        prompt_format="official",
        image_resize=image_size,
        min_pixels=28 * 28,
        max_pixels=max(image_size, 28) ** 2,
    )
    with torch.device("meta"):
        model = UniMEV2Model(config)
    model.backbone = vlm.model
    model.config._attn_implementation_internal = vlm.config._attn_implementation
    model.processor = UniMEV2Processor.from_backbone_processor(AutoProcessor.from_pretrained(folder), config)
    return model


def linear_params(module: torch.nn.Module) -> int:
    """Weights of the linear (and patch-embedding conv) layers: what 2·N·T counts."""
    kinds = (torch.nn.Linear, torch.nn.Conv3d)
    return sum(
        m.weight.numel() for m in module.modules() if isinstance(m, kinds) and "lora" not in type(m).__name__.lower()
    )


def model_shape(vlm_base: torch.nn.Module) -> dict[str, Any]:
    """Parameter counts and attention widths that the FLOP model needs (``vlm_base``: ``vlm.model``)."""
    text = vlm_base.config.get_text_config()
    vision = vlm_base.config.vision_config
    width = getattr(vision, "embed_dim", None) or vision.hidden_size
    window = getattr(vision, "window_size", None)
    full_blocks = getattr(vision, "fullatt_block_indexes", None)
    patches_per_window = (window // vision.patch_size) ** 2 if window else None
    return {
        "lm_linear_params": linear_params(vlm_base.language_model.layers),
        "vision_linear_params": linear_params(vlm_base.visual),
        "vision_merger_params": linear_params(vlm_base.visual.merger),
        "lm_layers": text.num_hidden_layers,
        "lm_attn_width": text.num_attention_heads
        * (getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads),
        "vision_depth": vision.depth,
        "vision_width": width,
        "vision_full_blocks": len(full_blocks) if full_blocks is not None else vision.depth,
        "vision_window_patches": patches_per_window,
        "total_params": sum(p.numel() for p in vlm_base.parameters()),
    }


def vision_forward_flops(shape: dict, patches: Sequence[int]) -> float:
    """Linear + attention FLOPs of the vision tower over images of ``patches`` patches each (the merger runs on
    merged tokens: a quarter of the patches)."""
    merger = shape["vision_merger_params"]
    linear = 2 * (shape["vision_linear_params"] - merger) * sum(patches) + 2 * merger * sum(patches) / 4
    width, depth, full = shape["vision_width"], shape["vision_depth"], shape["vision_full_blocks"]
    window = shape["vision_window_patches"]
    attention = 0.0
    for p in patches:
        windowed = 4 * p * min(p, window) * width if window else 4 * p * p * width
        attention += full * 4 * p * p * width + (depth - full) * windowed
    return linear + attention


def lm_forward_flops(
    shape: dict, lengths: Sequence[int], attended: Sequence[int] | None = None
) -> tuple[float, float]:
    """(linear, attention) forward FLOPs of the LM over sequences of ``lengths`` real tokens (causal).

    ``attended[i]``: keys visible before sequence i (a cached prefix), 0 by default.
    """
    attended = attended or [0] * len(lengths)
    linear = 2 * shape["lm_linear_params"] * sum(lengths)
    per_layer = sum(2 * n * n + 4 * n * a for n, a in zip(lengths, attended)) * shape["lm_attn_width"]
    return linear, per_layer * shape["lm_layers"]


def batch_lengths(batch: Any) -> tuple[list[int], list[int], int]:
    """(real LM tokens per row, vision patches per image, padded LM tokens) of a collated batch (any layout)."""
    parts = batch["buckets"] if "buckets" in batch else [batch]
    lengths, patches, padded = [], [], 0
    for part in parts:
        if "sequence_ends" in part:  # packed: a sequence's length is its last token's position + 1
            positions = part["position_ids"][0] if part["position_ids"].dim() == 3 else part["position_ids"]
            lengths += (positions.flatten()[part["sequence_ends"]] + 1).tolist()
        else:
            lengths += part["attention_mask"].sum(-1).tolist()
        padded += part["input_ids"].numel()
        if part.get("image_grid_thw") is not None:
            patches += part["image_grid_thw"].prod(-1).tolist()
    return lengths, patches, padded


def train_flops(shape: dict, batch: Any, lora_params: int) -> dict[str, float]:
    """Model FLOPs of one training step, in both conventions (see the module docstring)."""
    lengths, patches, padded = batch_lengths(batch)
    linear, attention = lm_forward_flops(shape, lengths)
    vision = vision_forward_flops(shape, patches)
    lora = 2 * lora_params * sum(lengths)
    return {
        "lora": 2 * linear + 3 * attention + 3 * lora + vision,
        "6nt": 3 * linear + 3 * attention + 3 * lora + vision,
        "real_tokens": sum(lengths),
        "padded_tokens": padded,
        "vision_patches": sum(patches),
    }


# ------------------------------------------------------------------------------------------------ sections
def measure_matmul(s: Settings, report: dict) -> float:
    """bf16 (fp32 on CPU) matrix rate of an n³ product, mean of 10 after warm-up, in FLOP/s."""
    n, dtype = s.matmul_size, getattr(torch, s.dtype)
    a = torch.randn(n, n, device=s.device, dtype=dtype)
    b = torch.randn(n, n, device=s.device, dtype=dtype)
    times = timed(lambda: a @ b, s.device, warmup=3, repeats=10)
    rate = 2 * n**3 / statistics.mean(times)
    report.update(size=n, dtype=s.dtype, tflops=sig(rate / 1e12), times_ms=[round(t * 1e3, 3) for t in times])
    return rate


def measure_encode(s: Settings, model: UniMEV2Model, words: list[str], report: dict) -> None:
    """Items/s of the embedder (no LoRA) for image items and text items; model-only and ``encode()`` end to end."""
    rng = np.random.default_rng(5)
    images = [
        {"text": "<|image_1|>\nRepresent the given image.", "image": noise_image(s.image_size, 100 + i)}
        for i in range(s.encode_image_batch)
    ]
    texts = [
        {"text": text_of(words, int(rng.integers(5, 31)), rng), "image": None} for _ in range(s.encode_text_batch)
    ]
    model.eval()
    for name, items in (("image_items", images), ("text_items", texts)):
        batch = to_device(model.processor(items), s.device)
        with torch.no_grad():
            times = timed(lambda batch=batch: model(**batch), s.device, warmup=1, repeats=3)
        lengths, patches, _ = batch_lengths(batch)
        report[name] = {
            "batch": len(items),
            "items_per_s": round(len(items) / statistics.median(times), 1),
            "mean_tokens": round(float(np.mean(lengths)), 1),
            "patches_per_image": patches[:1],
        }
    start = time.perf_counter()
    model.encode(images, batch_size=s.encode_image_batch)
    sync(s.device)
    report["encode_api_image_items_per_s"] = round(len(images) / (time.perf_counter() - start), 1)
    many = images * 4  # several batches, so that preparing the next one can overlap the model
    for workers in (0, s.encode_workers):
        start = time.perf_counter()
        model.encode(many, batch_size=s.encode_image_batch // 2, num_workers=workers)
        sync(s.device)
        report[f"encode_api_image_items_per_s_{workers}_workers"] = round(len(many) / (time.perf_counter() - start), 1)


def processor_for(processor: UniMEV2Processor, image_size: int) -> UniMEV2Processor:
    """A copy of the embedder's processor that resizes images to ``image_size``² (pixel budget to match)."""
    config = copy.deepcopy(processor.config)
    config.image_resize, config.max_pixels = image_size, image_size**2
    return UniMEV2Processor.from_backbone_processor(copy.deepcopy(processor.backbone_processor), config)


def lora_model(model: UniMEV2Model, args: UniMEV2ModelArguments) -> torch.nn.Module:
    """The trainer's LoRA setup (``build_embedder``) on an in-memory embedder; B seeded so every gradient is live."""
    config = args.lora_config()
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_((torch.randn(parameter.shape, generator=generator) * 0.02).to(parameter))
    return peft_model


def make_trainer(s: Settings, model: torch.nn.Module, folder: str, **overrides: Any) -> UniMEV2Trainer:
    settings = dict(
        output_dir=folder,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        bf16=s.dtype == "bfloat16",
        use_cpu=not s.device.startswith("cuda"),
        learning_rate=1e-5,
        max_grad_norm=0.0,
    )
    settings.update(overrides)
    args = UniMEV2TrainingArguments(**settings)
    trainer = UniMEV2Trainer(model=model, args=args, data_collator=UniMEV2Collator(None))
    # What Trainer.train() does before its first step: accelerate wraps the forward in autocast (bf16 mixed
    # precision); without it a bf16 model with fp32 LoRA adapters runs its adapters in fp32.
    trainer.model = trainer.model_wrapped = trainer.accelerator.prepare_model(trainer.model)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); training_step divides by it
    return trainer


def train_step(trainer: UniMEV2Trainer, batch: Any) -> float:
    """One optimisation step through the trainer: ``training_step`` (compute_loss + backward) and AdamW."""
    loss = trainer.training_step(trainer.model, batch)
    trainer.optimizer.step()
    trainer.model.zero_grad(set_to_none=True)
    return float(loss)


def set_input_casting(model: torch.nn.Module, enabled: bool) -> None:
    """peft casts every LoRA layer's input to the adapter dtype: with fp32 adapters on a bf16 model, a full fp32 copy
    of the activations per adapted projection (kept for backward). Under autocast the matmul casts it straight back
    to bf16 (bf16 -> fp32 -> bf16 is lossless), so switching the cast off changes no number, only the copies."""
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = enabled


@dataclass
class Variant:
    """One timed training configuration."""

    name: str
    batch: Any
    checkpointing: bool = False
    nocast: bool = False
    preserve_rng: bool = True
    vision_backward: bool = False  # transformers' default input hooks: the frozen tower back-propagates too


def run_variant(
    s: Settings, trainer: UniMEV2Trainer, batch: Any, shape: dict, lora_params: int, peak: float, variant: Variant
) -> dict[str, Any]:
    """Time the step on one prepared batch; queries/s, LM tokens/s, peak memory and MFU."""
    model = trainer.model
    if variant.checkpointing:
        kwargs = {"use_reentrant": False, "preserve_rng_state": variant.preserve_rng}
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if variant.vision_backward:  # transformers' default: every sub-model's input embeddings hooked
            base = model.get_base_model()
            base.disable_input_require_grads()
            PreTrainedModel.enable_input_require_grads(base)
    else:
        model.gradient_checkpointing_disable()
    set_input_casting(model, not variant.nocast)
    reset_peak(s.device)
    losses = []
    try:
        times = timed(lambda: losses.append(train_step(trainer, batch)), s.device, s.warmup, s.steps)
    finally:
        set_input_casting(model, True)
    seconds = statistics.median(times)
    flops = train_flops(shape, batch, lora_params)
    queries = batch["judge_scores"].shape[0]
    return {
        "queries": queries,
        "step_s": round(seconds, 4),
        "queries_per_s": round(queries / seconds, 2),
        "lm_tokens_per_s": round(flops["real_tokens"] / seconds),
        "real_tokens": flops["real_tokens"],
        "padded_tokens": flops["padded_tokens"],
        "vision_patches": flops["vision_patches"],
        "peak_memory_gb": round(peak_gb(s.device), 2),
        "mfu_lora": mfu(flops["lora"], seconds, peak),
        "mfu_6nt": mfu(flops["6nt"], seconds, peak),
        "model_tflop_per_step_lora": sig(flops["lora"] / 1e12),
        "model_tflop_per_step_6nt": sig(flops["6nt"] / 1e12),
        "first_loss": losses[0],
        "gradient_checkpointing": variant.checkpointing,
        "lora_input_cast": not variant.nocast,
        "preserve_rng_state": variant.preserve_rng,
        "vision_tower_backward": variant.vision_backward,
        "times_s": [round(t, 4) for t in times],
    }


def run_plan(
    s: Settings,
    trainer: UniMEV2Trainer,
    plan: list[Variant],
    state: dict,
    peak: float,
    lora_params: int,
    report: Report,
    variants: dict,
    needs_s: float = 45,
) -> None:
    """Run variants in order while time is left; a failing variant (out of memory, …) is recorded, not fatal."""
    for variant in plan:
        if s.variants and not any(part in variant.name for part in s.variants.split(",")):
            continue
        if report.left() < needs_s:
            report.data["skipped"].append(f"train/{variant.name}")
            continue
        try:
            batch = variant.batch() if callable(variant.batch) else variant.batch
            variants[variant.name] = run_variant(s, trainer, batch, state["shape"], lora_params, peak, variant)
            result = variants[variant.name]
            print(
                f"  {variant.name}: {result['queries_per_s']} q/s, MFU {result['mfu_lora']}, "
                f"{result['peak_memory_gb']} GB",
                flush=True,
            )
        except Exception as error:  # noqa: BLE001 — e.g. out of memory: record and go on
            variants[variant.name] = {"error": f"{type(error).__name__}: {error}"[:400]}
            print(f"  {variant.name}: FAILED {type(error).__name__}", flush=True)
        batch = None
        reset_peak(s.device)
        report.save()


def collate(processor: Any, records: list[dict], buckets: int | None, device: str, pack: int = 0) -> Any:
    """A prepared batch: the collator's one padded batch (``buckets=None``), length buckets, or (``pack`` > 0)
    image items in one bucket and the text items packed padding-free into rows of ``pack`` tokens."""
    if pack:
        return to_device(UniMEV2Collator(processor, pack_text_tokens=pack)(records), device)
    wrapped = processor if buckets is None else LengthBucketProcessor(processor, text_buckets=buckets)
    return to_device(UniMEV2Collator(wrapped)(records), device)


def loss_and_grads(trainer: UniMEV2Trainer, batch: Any) -> tuple[float, dict[str, torch.Tensor]]:
    model = trainer.model
    model.zero_grad(set_to_none=True)
    loss = trainer.training_step(model, batch)
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return float(loss), grads


def compare_layouts(trainer: UniMEV2Trainer, padded: Any, bucketed: Any) -> dict[str, float]:
    """Same loss and gradients from the padded and the bucketed batch (what the optimisation must keep)."""
    loss_a, grads_a = loss_and_grads(trainer, padded)
    loss_b, grads_b = loss_and_grads(trainer, bucketed)
    worst = max(float((grads_a[n] - grads_b[n]).abs().max()) for n in grads_a)
    scale = max(float(g.abs().max()) for g in grads_a.values())
    return {
        "loss_padded": loss_a,
        "loss_bucketed": loss_b,
        "max_abs_loss_diff": abs(loss_a - loss_b),
        "max_abs_grad_diff": worst,
        "max_abs_grad": scale,
    }


def grad_cache_step(trainer: UniMEV2Trainer, chunks: list[Any], num_query_chunks: int, scores: torch.Tensor) -> float:
    """The authors' step: queries and candidates in chunks, embedded without gradients, loss on the detached
    embeddings, then every chunk re-embedded with gradients and back-propagated with its cached ∂L/∂e."""
    model = trainer.model
    with trainer.compute_loss_context_manager():
        with torch.no_grad():
            cached = [embed_inputs(model, chunk) for chunk in chunks]
        queries = torch.cat(cached[:num_query_chunks]).requires_grad_()
        candidates = torch.cat(cached[num_query_chunks:]).requires_grad_()
        view = candidates.view(scores.shape[0], scores.shape[1], -1)
        loss = symmetric_kl_loss(candidate_cosines(queries, view), scores)
        loss.backward()
        gradients = list(queries.grad.split(chunks[0]["input_ids"].shape[0]))
        gradients += list(candidates.grad.split(chunks[num_query_chunks]["input_ids"].shape[0]))
        for chunk, gradient in zip(chunks, gradients):
            embed_inputs(model, chunk).backward(gradient)
    trainer.optimizer.step()
    model.zero_grad(set_to_none=True)
    return float(loss.detach())


def grad_cache_chunks(
    processor: Any, records: list[dict], chunk: int, device: str
) -> tuple[list[Any], int, torch.Tensor]:
    queries = [r["query"] for r in records]
    candidates = [c for r in records for c in (r["positive"], *r["negatives"])]
    chunks = [
        to_device(processor(items[i : i + chunk]), device)
        for items in (queries, candidates)
        for i in range(0, len(items), chunk)
    ]
    scores = torch.tensor([r["scores"] for r in records], device=device)
    return chunks, -(-len(queries) // chunk), scores


# ------------------------------------------------------------------------------------------------ judge
def judge_flops(shape: dict, prefix: int, suffixes: Sequence[int], patches: int) -> float:
    """Forward FLOPs of scoring one query's pairs with the prefix computed once (the useful work)."""
    linear_p, attention_p = lm_forward_flops(shape, [prefix])
    linear_s, attention_s = lm_forward_flops(shape, suffixes, [prefix] * len(suffixes))
    return linear_p + attention_p + linear_s + attention_s + vision_forward_flops(shape, [patches])


@contextlib.contextmanager
def compiled_layers(layers: Sequence[torch.nn.Module]) -> Iterator[None]:
    """``torch.compile`` each decoder layer for the block, then back to eager.

    The layers share one class, so dynamo traces the layer once and reuses the graph (parameters are graph inputs);
    the rest of the model stays eager, so nothing about data loading, masks or caches changes.
    """
    for layer in layers:
        layer.compile()
    try:
        yield
    finally:
        for layer in layers:
            layer._compiled_call_impl = None


def measure_judge(
    s: Settings, folder: Path, words: list[str], peak: float, report: dict, compile_layers: bool = False
) -> None:
    """Judge pairs/s for each way of scoring (a–d); with ``compile_layers`` also (d) with compiled decoder layers."""
    vlm = build_vlm(folder, s, None if s.tiny else shallow(QWEN25_VL_7B, s.depth_divisor), "qwen2_5_vl")
    processor = AutoProcessor.from_pretrained(folder)
    set_pixel_budget(processor, 28 * 28, s.image_size**2)
    judge = JudgeScorer(vlm, processor, batch_size=s.judge_candidates)
    shape = model_shape(vlm.model)
    report["model"] = shape
    rng = np.random.default_rng(7)
    queries = [
        {"text": text_of(words, 12, rng), "image": noise_image(s.image_size, 500 + i)} for i in range(s.judge_queries)
    ]
    candidate_lists = [
        [{"text": text_of(words, s.candidate_tokens, rng), "image": None} for _ in range(s.judge_candidates)]
        for _ in queries
    ]
    query, candidates = queries[0], candidate_lists[0]
    encoded = [judge.encode(q, c) for q, c in zip(queries, candidate_lists)]
    prefix = len(encoded[0].prefix.input_ids)
    suffixes = [len(p.input_ids) for p in encoded[0].suffixes]
    patches = int(encoded[0].prefix.images[0]["image_grid_thw"].prod())
    report["inputs"] = {
        "prefix_tokens": prefix,
        "mean_suffix_tokens": round(float(np.mean(suffixes)), 1),
        "candidates_per_query": len(candidates),
        "vision_patches": patches,
    }
    n = len(candidates)
    rates: dict[str, float] = {}
    few = candidates[: s.generate_pairs]
    t = timed(lambda: [judge.score_with_generate(query, c) for c in few], s.device, 1, 1)
    rates["a_generate_per_pair"] = len(few) / min(t)
    t = timed(lambda: judge.score_full_pairs(query, candidates), s.device, 1, 2)
    rates["b_batched_full_pairs"] = n / min(t)
    t = timed(lambda: judge.score(query, candidates), s.device, 1, 3)
    rates["c_prefix_shared"] = n / min(t)
    total = sum(len(c) for c in candidate_lists)
    flops_per_query = judge_flops(shape, prefix, suffixes, patches)
    for q in s.queries_per_forward:
        t = timed(lambda q=q: judge.score_many(encoded, q), s.device, 1, 2)
        rates[f"d_model_only_{q}_queries_per_forward"] = total / min(t)
        report[f"mfu_d_{q}"] = mfu(flops_per_query * len(queries), min(t), peak)
    big = max(s.queries_per_forward)
    t = timed(lambda: [judge.encode(q, c) for q, c in zip(queries, candidate_lists)], s.device, 0, 1)
    report["encode_cpu_queries_per_s"] = round(len(queries) / min(t), 2)
    t = timed(
        lambda: judge.score_many([judge.encode(q, c) for q, c in zip(queries, candidate_lists)], big),
        s.device,
        0,
        2,
    )
    rates[f"d_end_to_end_{big}_queries_per_forward"] = total / min(t)
    single = judge.score(query, candidates)
    full = judge.score_full_pairs(query, candidates)
    multi = judge.score_many(encoded, big)
    if compile_layers:
        with compiled_layers(vlm.model.language_model.layers):
            t = timed(lambda: judge.score_many(encoded, big), s.device, 2, 2)
            compiled = judge.score_many(encoded, big)
        rates[f"d_model_only_{big}_queries_per_forward_compiled_layers"] = total / min(t)
        report[f"mfu_d_{big}_compiled_layers"] = mfu(flops_per_query * len(queries), min(t), peak)
        report["max_abs_diff_compiled_vs_eager"] = float(max(np.abs(c - m).max() for c, m in zip(compiled, multi)))
    report["pairs_per_s"] = {k: round(v, 1) for k, v in rates.items()}
    reference = [judge.score(q, c) for q, c in zip(queries[:2], candidate_lists[:2])]
    report["max_abs_diff_full_vs_prefix"] = float(np.abs(full - single).max())
    report["max_abs_diff_multi_vs_single"] = float(max(np.abs(m - r).max() for m, r in zip(multi, reference)))
    report["c_over_b"] = round(rates["c_prefix_shared"] / rates["b_batched_full_pairs"], 2)
    report["best_over_b"] = round(max(rates.values()) / rates["b_batched_full_pairs"], 2)
    report["mfu_note"] = "forward model FLOPs with the prefix once per query / time / measured matmul rate"


# ------------------------------------------------------------------------------------------------ retrieval
def measure_retrieval(s: Settings, report: dict) -> None:
    """Exact top-k over the pool: torch matmul + topk (fp32 exact, bf16 + recall), faiss CPU when installed."""
    generator = torch.Generator(device=s.device).manual_seed(0)
    pool = torch.nn.functional.normalize(torch.randn(s.pool, s.dims, device=s.device, generator=generator), dim=-1)
    queries = torch.nn.functional.normalize(
        torch.randn(s.retrieval_queries, s.dims, device=s.device, generator=generator), dim=-1
    )
    report.update(pool=s.pool, dims=s.dims, k=s.top_k, queries=s.retrieval_queries, chunk=s.retrieval_chunk)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False

    def search(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ids = [(chunk @ table.T).topk(s.top_k, dim=-1).indices for chunk in rows.split(s.retrieval_chunk)]
        return torch.cat(ids)

    try:
        exact = search(pool, queries[: s.retrieval_chunk])  # warm-up and reference ids
        t = timed(lambda: search(pool, queries), s.device, 0, 1)[0]
        report["torch_fp32_queries_per_s"] = sig(s.retrieval_queries / t)
        if s.dtype == "bfloat16":  # the GPU run: bf16 scores, and how many of the exact top-k they keep
            pool16, queries16 = pool.bfloat16(), queries.bfloat16()
            approx = search(pool16, queries16[: s.retrieval_chunk])
            t = timed(lambda: search(pool16, queries16), s.device, 0, 1)[0]
            report["torch_bf16_queries_per_s"] = sig(s.retrieval_queries / t)
            n = min(256, len(exact))
            hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact[:n].cpu(), approx[:n].cpu())]
            report["bf16_recall_at_k_vs_fp32"] = round(sum(hits) / (n * s.top_k), 4)
            del pool16, queries16
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    report["hours_all_pool_queries_fp32"] = sig(s.pool / report["torch_fp32_queries_per_s"] / 3600)
    try:
        import faiss
    except ImportError:
        report["faiss"] = "not installed"
        return
    table = pool.float().cpu().numpy()
    rows = queries[: s.faiss_queries].float().cpu().numpy()
    index = faiss.IndexFlatIP(s.dims)
    index.add(table)
    start = time.perf_counter()
    _, ids = index.search(rows, s.top_k)
    seconds = time.perf_counter() - start
    overlap = np.mean([len(set(a) & set(b)) / s.top_k for a, b in zip(ids[:64], exact[:64].cpu().numpy())])
    report["faiss_cpu"] = {
        "threads": faiss.omp_get_max_threads(),
        "queries": s.faiss_queries,
        "queries_per_s": round(s.faiss_queries / seconds, 1),
        "agreement_with_torch_fp32": float(overlap),
    }


# ------------------------------------------------------------------------------------------------ driver
def print_table(data: dict) -> None:
    """The summary table (the device reply carries only the end of the log)."""
    print("\n=== gpu_scale summary ===")
    meta = data.get("meta", {})
    print(
        f"device {meta.get('device')}, torch {meta.get('torch')}, transformers {meta.get('transformers')}, "
        f"matmul {data.get('matmul', {}).get('tflops')} TFLOP/s"
    )
    print(f"{'train variant':<40}{'q/s':>8}{'tok/s':>9}{'step s':>8}{'GB':>7}{'MFU lora':>9}{'MFU 6NT':>8}")
    for name, v in data.get("train", {}).get("variants", {}).items():
        if "error" in v:
            print(f"{name:<40} {v['error'][:60]}")
            continue
        print(
            f"{name:<40}{v['queries_per_s']:>8.1f}{v['lm_tokens_per_s']:>9}{v['step_s']:>8.3f}"
            f"{v['peak_memory_gb']:>7.1f}{v['mfu_lora'] or float('nan'):>9.3f}{v['mfu_6nt'] or float('nan'):>8.3f}"
        )
    for name, v in data.get("extras", {}).get("gradcache", {}).items():
        print(f"{'GradCache ' + name:<34}{v['queries_per_s']:>8.2f}{'':>9}{v['step_s']:>8.2f}")
    judge = data.get("judge", {})
    for name, value in judge.get("pairs_per_s", {}).items():
        print(f"judge {name:<52}{value:>10.1f} pairs/s")
    encode = data.get("encode", {})
    for name in ("image_items", "text_items"):
        if name in encode:
            print(f"encode {name:<45}{encode[name]['items_per_s']:>10.1f} items/s")
    retrieval = data.get("retrieval", {})
    for name in ("torch_fp32_queries_per_s", "torch_bf16_queries_per_s"):
        if name in retrieval:
            print(f"retrieval {name:<42}{retrieval[name]:>10} queries/s")
    if isinstance(retrieval.get("faiss_cpu"), dict):
        print(f"retrieval {'faiss_cpu':<42}{retrieval['faiss_cpu']['queries_per_s']:>10} queries/s")
    print(f"errors: {list(data.get('errors', {}))}  skipped: {data.get('skipped')}  elapsed {data.get('elapsed_s')} s")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, fp32: the CPU smoke test")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here (after every section)")
    parser.add_argument("--budget_s", type=float, default=None, help="wall-clock guard (default 450 s; tiny 600 s)")
    parser.add_argument("--sections", default="matmul,encode,train,judge,retrieval,extras")
    parser.add_argument(
        "--no_compile", action="store_true", help="skip the torch.compile extra (always off with --tiny)"
    )
    parser.add_argument("--depth_divisor", type=int, default=1, help="real widths, 1/N of the layers (CPU checks)")
    parser.add_argument("--batch", type=int, default=None, help="queries per training micro-batch (default 16)")
    parser.add_argument("--dtype", default=None, help="default bfloat16 (float32 with --tiny)")
    parser.add_argument("--variants", default="", help="comma-separated name parts: only these training variants")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    s = tiny_settings(device) if args.tiny else Settings(device=device)
    if args.budget_s:
        s = replace(s, budget_s=args.budget_s)
    s = replace(s, depth_divisor=args.depth_divisor, variants=args.variants)
    if args.batch:
        s = replace(s, batch=args.batch)
    if args.dtype:
        s = replace(s, dtype=args.dtype)
    sections = set(args.sections.split(","))
    report = Report(args.out, s.budget_s)
    report.data["meta"] = {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "settings": asdict(s),
        "argv": sys.argv[1:],
    }
    with tempfile.TemporaryDirectory(prefix="gpu_scale_") as workdir:
        run_sections(s, sections, report, Path(workdir), compile_lm=not (args.no_compile or args.tiny))
    report.save()
    print_table(report.data)
    return report.data


def run_sections(s: Settings, sections: set[str], report: Report, workdir: Path, compile_lm: bool) -> None:
    """Every requested section in order; scratch files (tiny backbones, trainer folders) go under ``workdir``."""
    peak = 0.0  # no matmul section: no MFU
    with report.section("matmul") as r:
        if r is not None and "matmul" in sections:
            peak = measure_matmul(s, r)
    folders = {
        kind: build_tiny_backbone(kind, workdir / kind, seed=0, image_size=64) for kind in ("qwen2_vl", "qwen2_5_vl")
    }
    words: list[str] = one_token_words(AutoProcessor.from_pretrained(folders["qwen2_vl"]).tokenizer)
    state: dict[str, Any] = {}
    with report.section("encode", needs_s=60) as r:
        if r is not None:
            vlm = build_vlm(
                folders["qwen2_vl"], s, None if s.tiny else shallow(QWEN2_VL_2B, s.depth_divisor), "qwen2_vl"
            )
            state["embedder"] = wrap_embedder(vlm, folders["qwen2_vl"], s.image_size)
            state["shape"] = model_shape(vlm.model)
            r["model"] = state["shape"]
            if "encode" in sections:
                measure_encode(s, state["embedder"], words, r)
    if "train" in sections and "embedder" in state:
        with report.section("train", needs_s=60) as r:
            if r is not None:
                measure_train(s, state, words, peak, str(workdir / "trainer"), report, r)
    if "judge" in sections:
        with report.section("judge", needs_s=60) as r:
            if r is not None:
                compile_judge = compile_lm and report.left() > 150
                measure_judge(s, folders["qwen2_5_vl"], words, peak, r, compile_layers=compile_judge)
        reset_peak(s.device)  # the judge is gone with measure_judge's frame
    if "retrieval" in sections:
        with report.section("retrieval", needs_s=30) as r:
            if r is not None:
                measure_retrieval(s, r)
    if "extras" in sections and "records" in state:
        measure_extras(s, state, words, peak, str(workdir / "trainer"), report, compile_lm=compile_lm)


def measure_train(
    s: Settings, state: dict, words: list[str], peak: float, folder: str, report: Report, r: dict
) -> None:
    """The main training variants: padded vs length buckets, gradient checkpointing off/on, micro-batch 16/64."""
    embedder = state["embedder"]
    processor = embedder.processor
    embedder.train()
    model = lora_model(embedder, UniMEV2ModelArguments(backbone="in memory", lora_dropout=0.0, use_dora=False))
    lora_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainer = make_trainer(s, model, folder)
    state.update(trainer=trainer, processor=processor, lora_params=lora_params)
    r["lora_params"] = lora_params
    r["note"] = (
        "LoRA r=16 alpha=64 dropout 0 on q,k,v,o,gate,up,down of the LM; step = Trainer.training_step "
        "+ AdamW; batches prepared before timing (the collator runs in DataLoader workers in training)"
    )
    records = make_records(s, words, s.batch, seed=0)
    padded, bucketed = collate(processor, records, None, s.device), collate(processor, records, 1, s.device)
    r["layout_check"] = compare_layouts(trainer, padded, bucketed)
    variants = r.setdefault("variants", {})
    big, b = s.big_batch, s.batch

    def big_batch(multiple: int = 1) -> Any:
        rows = [row for k in range(multiple) for row in make_records(s, words, big, seed=1000 * (k + 1))]
        return collate(processor, rows, 1, s.device)

    plan = [
        Variant(f"padded_b{b}", padded),
        Variant(f"buckets_b{b}", bucketed),
        Variant(f"buckets_b{b}_nocast", bucketed, nocast=True),
        Variant(f"padded_b{b}_nocast", padded, nocast=True),
        Variant(f"padded_b{b}_gc", padded, checkpointing=True),
        Variant(f"buckets_b{b}_gc", bucketed, checkpointing=True),
        Variant(f"buckets_b{b}_gc_nocast", bucketed, checkpointing=True, nocast=True),
        Variant(f"buckets_b{b}_gc_nocast_norng", bucketed, checkpointing=True, nocast=True, preserve_rng=False),
        Variant(
            f"buckets_b{b}_gc_nocast_vision_backward", bucketed, checkpointing=True, nocast=True, vision_backward=True
        ),
        Variant(f"buckets_b{big}_nocast", big_batch, nocast=True),
        Variant(f"buckets_b{big}_gc_nocast", big_batch, checkpointing=True, nocast=True),
        Variant(f"buckets_b{2 * big}_nocast", lambda: big_batch(2), nocast=True),
    ]
    run_plan(s, trainer, plan, state, peak, lora_params, report, variants)
    state["records"] = records
    base = variants.get(f"padded_b{s.batch}", {}).get("queries_per_s")
    best = max((v.get("queries_per_s", 0) for v in variants.values()), default=0)
    if base:
        r["best_over_padded_b16"] = round(best / base, 2)


def measure_extras(
    s: Settings, state: dict, words: list[str], peak: float, folder: str, report: Report, compile_lm: bool
) -> None:
    """Lower-priority measurements while time is left: GradCache, bf16 adapters, DoRA, lengths, 672², compile."""
    trainer, processor, lora_params = state["trainer"], state["processor"], state["lora_params"]
    records = state["records"]
    with report.section("extras", needs_s=20) as r:
        if r is None:
            return
        r["gradcache"] = {}
        trainer.model.gradient_checkpointing_disable()
        set_input_casting(trainer.model, False)  # the same per-forward settings as our fastest step
        try:
            for chunk in s.gradcache_chunks:
                if report.left() < (40 if chunk <= 2 else 25) and not s.tiny:
                    report.data["skipped"].append(f"extras/gradcache_chunk{chunk}")
                    continue
                chunks, num_query_chunks, scores = grad_cache_chunks(processor, records, chunk, s.device)
                step = lambda c=chunks, n=num_query_chunks, y=scores: grad_cache_step(trainer, c, n, y)
                times = timed(step, s.device, 1 if chunk > 2 or s.tiny else 0, 1)
                r["gradcache"][f"chunks_of_{chunk}"] = {
                    "step_s": round(times[0], 3),
                    "queries_per_s": round(len(records) / times[0], 3),
                    "lora_input_cast": False,
                }
                report.save()
        finally:
            set_input_casting(trainer.model, True)
        variants = report.data["train"].setdefault("variants", {})
        batch = collate(processor, records, 1, s.device)
        if report.left() > 40:
            measure_recipe_adapter(s, trainer, batch, state, peak, folder, variants)
        else:
            report.data["skipped"].append("extras/dora")
        report.save()
        b = s.batch

        def varied(
            image_size: int | None = None,
            lengths: tuple[int, int] | None = None,
            buckets: int | None = 1,
            pack: int = 0,
        ):
            size = image_size or s.image_size
            rows = make_records(s, words, b, seed=7, lengths=lengths, image_size=size)
            return lambda: collate(processor_for(processor, size), rows, buckets, s.device, pack)

        short, long = s.pack_tokens
        plan = [
            Variant(f"padded_b{b}_text5-30_nocast", varied(lengths=(5, 30), buckets=None), nocast=True),
            Variant(f"buckets2_b{b}_text5-30_nocast", varied(lengths=(5, 30), buckets=2), nocast=True),
            Variant(f"packed{short}_b{b}_text5-30_nocast", varied(lengths=(5, 30), pack=short), nocast=True),
            Variant(f"packed{long}_b{b}_text5-30_nocast", varied(lengths=(5, 30), pack=long), nocast=True),
            Variant(f"padded_b{b}_672px_nocast", varied(image_size=2 * s.image_size, buckets=None), nocast=True),
            Variant(f"buckets_b{b}_672px_nocast", varied(image_size=2 * s.image_size), nocast=True),
        ]
        run_plan(s, trainer, plan, state, peak, lora_params, report, variants, needs_s=30)
        if report.left() > 40:
            measure_bf16_adapters(s, trainer, batch, state, peak, lora_params, report, variants)
        if compile_lm and report.left() > 150:
            with compiled_layers(trainer.model.get_base_model().backbone.language_model.layers):
                plan = [Variant(f"buckets_b{b}_nocast_compiled_lm_layers", batch, nocast=True)]
                run_plan(s, trainer, plan, state, peak, lora_params, report, variants, needs_s=0)
        elif not compile_lm:
            r["compile"] = "not run (--no_compile or --tiny)"
        else:
            report.data["skipped"].append("extras/compile")


def measure_recipe_adapter(
    s: Settings, trainer: UniMEV2Trainer, batch: Any, state: dict, peak: float, folder: str, variants: dict
) -> None:
    """The paper recipe's adapters (DoRA, dropout 0.1, gradient checkpointing) as a second adapter, then back."""
    model = trainer.model
    recipe = LoraConfig(
        r=16,
        lora_alpha=64,
        lora_dropout=0.1,
        use_dora=True,
        target_modules=lora_target_regex(),
        bias="none",
    )
    model.add_adapter("recipe", recipe)
    model.set_adapter("recipe")
    try:
        recipe_trainer = make_trainer(s, model, folder)
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        plan = [Variant(f"buckets_b{s.batch}_gc_recipe_dora_dropout0.1", batch, checkpointing=True)]
        run_plan(s, recipe_trainer, plan, state, peak, params, Report(None, 1e9), variants, needs_s=0)
    finally:
        model.set_adapter("default")
        model.delete_adapter("recipe")


def measure_bf16_adapters(
    s: Settings,
    trainer: UniMEV2Trainer,
    batch: Any,
    state: dict,
    peak: float,
    lora_params: int,
    report: Report,
    variants: dict,
) -> None:
    """LoRA weights kept in bf16 (``get_peft_model(..., autocast_adapter_dtype=False)``): no casts at all, but the
    optimizer then updates bf16 weights (not numerically the library's fp32-adapter step; measured, not landed)."""
    model = trainer.model
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name and parameter.dtype == torch.float32:
                parameter.data = parameter.data.to(getattr(torch, s.dtype))
    trainer.optimizer = None
    trainer.create_optimizer()
    b = s.batch
    plan = [
        Variant(f"buckets_b{b}_bf16_adapters", batch),
        Variant(f"buckets_b{b}_gc_bf16_adapters", batch, checkpointing=True),
    ]
    run_plan(s, trainer, plan, state, peak, lora_params, report, variants, needs_s=30)


if __name__ == "__main__":
    main()
