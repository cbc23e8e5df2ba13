"""Tiny random vision-language backbones, built offline, saved as ordinary pretrained folders.

No weights can be downloaded where this project is built and tested, yet every code path must run on a real
upstream model class. :func:`build_tiny_backbone` writes a folder that looks exactly like a Hub checkpoint of
``Qwen2VLForConditionalGeneration``, ``Qwen2_5_VLForConditionalGeneration`` or
``LlavaOnevisionForConditionalGeneration`` (config, safetensors weights, tokenizer, image/video processors, chat
template), only a few hundred kB large. Everything downstream (``UniMEV2Model.from_backbone``, the judge, the
trainers) loads it through the normal ``from_pretrained`` path, so the tiny model exercises the same code as a 7B.

The tokenizer is a byte-level BPE trained with ``tokenizers`` on a fixed corpus, so any text can be encoded and
the words the pipeline depends on ("Yes", "No", the prompts, digits) are single tokens or short pieces.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from unime_v2.modeling_unime_v2.configuration_unime_v2 import SUPPORTED_BACKBONES


BACKBONE_KINDS = SUPPORTED_BACKBONES

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
LLAVA_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]

# ChatML, as Qwen-VL and LLaVA-OneVision (Qwen2 LLM) use it; `image_markup` is how one image is written.
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}IMAGE_MARKUP{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS_WORDS = """
Yes No yes no I will provide you with a query and a candidate. Please evaluate whether the candidate meets the
requirements of the query. If it does, respond with 'Yes'; if it doesn't, respond with 'No'. responed Query:
Candidate: Candidates: followed by multiple candidates in the format (1) cand1 (2) cand2, etc. Each candidate is
independent of the others. Evaluate each candidate against the query, and respond with the number corresponding
to the candidate that best meets the requirements of the query. Ans: ( ) 0 1 2 3 4 5 6 7 8 9 10
Represent the given image for classification with the following question Find an image caption describing
everyday Select the portion of the image that isolates object labeled as Retrieve Given find a similar with
described changes Represent cropped red green blue yellow purple orange black white gray brown pink cyan circle
square triangle star cross diamond ellipse small medium large big tiny left right above below top bottom middle
center of the on in a an the is are there what which how many colour color shape size scene objects object
picture photo edited change replace make add remove swap and or to it that this user assistant system
"""


def _train_tokenizer(special_tokens: list[str], vocab_size: int = 1024) -> Tokenizer:
    """Byte-level BPE over a fixed corpus: deterministic, covers every byte, keeps "Yes"/"No" whole."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line.strip() for line in _CORPUS_WORDS.strip().splitlines()]
    words = " ".join(lines).split()
    corpus = [" ".join(lines)] * 4 + [w for w in words for _ in range(3)] + ["Yes", "No"] * 50
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer


def _fast_tokenizer(special_tokens: list[str], image_markup: str) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(special_tokens),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=special_tokens[1:],
        padding_side="right",
        model_max_length=4096,
    )
    fast.chat_template = _CHAT_TEMPLATE.replace("IMAGE_MARKUP", image_markup)
    return fast


def _tiny_text_config(vocab_size: int, pad_id: int, eos_id: int, hidden: int = 64) -> dict:
    return {
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "pad_token_id": pad_id,
        "eos_token_id": eos_id,
        "bos_token_id": pad_id,
    }


def _qwen_processor_parts(image_size: int) -> tuple[Qwen2VLImageProcessor, Qwen2VLVideoProcessor]:
    # One merged patch covers 28x28 px; keep tiny images tiny (a 64 px image gives 4 image tokens).
    pixels = {"shortest_edge": 28 * 28, "longest_edge": 28 * 28 * max(4, (image_size // 28) ** 2)}
    return Qwen2VLImageProcessor(size=pixels), Qwen2VLVideoProcessor(size=pixels)


def _build_qwen(kind: str, image_size: int) -> tuple[torch.nn.Module, object]:
    tokenizer = _fast_tokenizer(QWEN_SPECIAL_TOKENS, "<|vision_start|><|image_pad|><|vision_end|>")
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in QWEN_SPECIAL_TOKENS}
    text = _tiny_text_config(len(tokenizer), ids["<|endoftext|>"], ids["<|im_end|>"])
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    token_ids = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    image_processor, video_processor = _qwen_processor_parts(image_size)
    if kind == "qwen2_vl":
        vision = {"depth": 2, "embed_dim": 32, "hidden_size": text["hidden_size"], "num_heads": 2, "mlp_ratio": 2}
        config = Qwen2VLConfig(text_config=text, vision_config=vision, **token_ids)
        processor = Qwen2VLProcessor(
            image_processor, tokenizer, video_processor, chat_template=tokenizer.chat_template
        )
    else:
        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": text["hidden_size"],
            "window_size": 56,
            "fullatt_block_indexes": [1],
        }
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **token_ids)
        processor = Qwen2_5_VLProcessor(
            image_processor, tokenizer, video_processor, chat_template=tokenizer.chat_template
        )
    return AutoModelForImageTextToText.from_config(config), processor


def _build_llava_onevision(image_size: int) -> tuple[torch.nn.Module, object]:
    tokenizer = _fast_tokenizer(LLAVA_SPECIAL_TOKENS, "<image>")
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in LLAVA_SPECIAL_TOKENS}
    text = _tiny_text_config(len(tokenizer), ids["<|endoftext|>"], ids["<|im_end|>"])
    text["model_type"] = "qwen2"
    tile = 28  # one anyres tile: 2x2 patches of 14 px
    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": tile,
        "patch_size": 14,
    }
    pinpoints = [[tile * r, tile * c] for r in (1, 2) for c in (1, 2)]
    config = LlavaOnevisionConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    size = {"height": tile, "width": tile}
    image_processor = LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints)
    video_processor = LlavaOnevisionVideoProcessor(size=size)
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        num_image_tokens=(tile // 14) ** 2,
        vision_feature_select_strategy="full",
        chat_template=tokenizer.chat_template,
    )
    return AutoModelForImageTextToText.from_config(config), processor


def build_tiny_backbone(kind: str, out_dir: str | Path, seed: int = 0, image_size: int = 64) -> Path:
    """Build a tiny random ``kind`` backbone with its processor and save both to ``out_dir``.

    Args:
        kind: one of ``qwen2_vl``, ``qwen2_5_vl``, ``llava_onevision``.
        out_dir: folder to write; it becomes a normal pretrained checkpoint (``from_pretrained(out_dir)``).
        seed: seeds the random weights, so the same seed gives the same checkpoint.
        image_size: the image side the processor is sized for (Qwen: pixel budget; LLaVA: anyres tiles).
    """
    if kind not in BACKBONE_KINDS:
        raise ValueError(f"unknown tiny backbone kind {kind!r}; choose one of {BACKBONE_KINDS}")
    torch.manual_seed(seed)
    model, processor = (
        _build_llava_onevision(image_size) if kind == "llava_onevision" else _build_qwen(kind, image_size)
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "TINY_BACKBONE.json").write_text(json.dumps({"kind": kind, "seed": seed, "image_size": image_size}))
    return out


def load_tiny_backbone(path: str | Path) -> tuple[torch.nn.Module, object]:
    """Load a folder written by :func:`build_tiny_backbone` the way any Hub checkpoint is loaded."""
    config = AutoConfig.from_pretrained(path)
    return AutoModelForImageTextToText.from_pretrained(path, config=config), AutoProcessor.from_pretrained(path)


def scratch_init_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw every linear / convolution weight from N(0, 1/fan_in) (biases 0) and every embedding from N(0, 1).

    Hugging Face initialises at ``initializer_range`` = 0.02 whatever the width, tuned for wide pretrained models;
    a 64-wide model trained from scratch at that scale sits on the ``ln 2`` plateau (attention stays uniform and
    the image tokens of different images have cosine ~0.9). Fan-in scaling is PyTorch's usual from-scratch scale.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv3d)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / fan_in**0.5)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
    return model


ASSETS = Path(__file__).parent / "assets"


def shipped_tiny_vlm(kind: str = "qwen2_vl") -> Path:
    """Folder of the pretrained tiny VLM shipped in the repository (``docs/tiny_pretrained_vlm.md``: how it was made,
    its size and measured quality). Only ``qwen2_vl`` is shipped; the judge and reranker start from it too."""
    path = ASSETS / f"tiny_vlm_{kind.replace('_', '')}"
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(
            f"no shipped tiny VLM for {kind!r} at {path}; make one with examples/pretrain_tiny_vlm.py"
        )
    return path


def shipped_tiny_judge() -> Path:
    """Folder of the tiny instruct judge shipped in the repository: the miniature of the paper's Qwen2.5-VL-7B
    judge, a tiny Qwen2.5-VL about three times the shipped VLM's parameters, made by ``examples/make_tiny_judge.py``
    from training facts only (``docs/tiny_judge.md``: how, its size and its measured agreement with the oracle). It
    loads as a :class:`~unime_v2.modeling_unime_v2.UniMEV2Reranker` in the judge layout."""
    path = ASSETS / "tiny_judge_qwen25vl"
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"no shipped tiny judge at {path}; make one with examples/make_tiny_judge.py")
    return path
