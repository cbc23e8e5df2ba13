"""Embed images, texts and image+text items with a UniME-V2 embedder and search them by cosine similarity.

    python examples/embed_and_search.py                                   # tiny offline backbone (CPU, seconds)
    python examples/embed_and_search.py --model TianchengGu/UniME-V2-2B   # a released checkpoint (plain Qwen2-VL)
    python examples/embed_and_search.py --model path/to/trained/unime-v2  # a UniME-V2 checkpoint (AutoModel)

A tiny random backbone produces meaningless rankings: it shows the API and the code path, not quality.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from transformers import AutoConfig, AutoModel

from unime_v2.data_builders.tiny_backbones import build_tiny_backbone
from unime_v2.modeling_unime_v2 import UniMEV2Model


SHAPES = {"red circle": ((220, 40, 40), "ellipse"), "blue square": ((40, 60, 220), "rectangle")}


def draw(color: tuple[int, int, int], shape: str, size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), (235, 235, 235))
    getattr(ImageDraw.Draw(image), shape)((12, 12, size - 12, size - 12), fill=color)
    return image


def load_embedder(model: str | None, workdir: Path) -> UniMEV2Model:
    """A UniME-V2 checkpoint loads through AutoModel; a plain VLM checkpoint is wrapped with from_backbone."""
    if model is None:
        model = str(build_tiny_backbone("qwen2_vl", workdir / "tiny_qwen2_vl"))
    if AutoConfig.from_pretrained(model, trust_remote_code=True).model_type == "unime_v2":
        return AutoModel.from_pretrained(model, trust_remote_code=True)
    return UniMEV2Model.from_backbone(model, prompt_format="official")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="UniME-V2 checkpoint or plain Qwen2-VL/LLaVA-OV checkpoint")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        embedder = load_embedder(args.model, Path(tmp))
        candidates = [
            {"text": "<|image_1|>\nRepresent the given image.", "image": draw(*SHAPES[name])} for name in SHAPES
        ] + [{"text": name, "image": None} for name in SHAPES]
        queries = [
            {"text": "Find me an everyday image that matches the given caption: a red circle", "image": None},
            {
                "text": "<|image_1|>\nFind an image caption describing the given image.",
                "image": draw(*SHAPES["blue square"]),
            },
        ]
        with torch.no_grad():
            scores = embedder.similarity(embedder.encode(queries), embedder.encode(candidates))
        names = [f"image: {n}" for n in SHAPES] + [f"text: {n}" for n in SHAPES]
        print(f"embedding dim {embedder.config.hidden_size}, backbone {embedder.config.backbone_type}")
        print("| query | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 1) + "|")
        for query, row in zip(queries, scores.tolist()):
            label = json.dumps(query["text"][:48])
            print(f"| {label} | " + " | ".join(f"{value:+.3f}" for value in row) + " |")


if __name__ == "__main__":
    main()
