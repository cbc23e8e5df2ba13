"""Embed images, texts and image+text items with a UniME-V2 embedder and search them by cosine similarity.

    python examples/embed_and_search.py                                   # tiny offline backbone (CPU, seconds)
    python examples/embed_and_search.py --model TianchengGu/UniME-V2-Qwen2VL-2B   # a released checkpoint (plain Qwen2-VL)
    python examples/embed_and_search.py --model path/to/trained/unime-v2  # a UniME-V2 checkpoint (AutoModel)

A tiny random backbone produces meaningless rankings: it shows the API and the code path, not quality.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import torch
from PIL import Image, ImageDraw

from unime_v2.data_builders.checkpoints import load_embedder
from unime_v2.data_builders.recipes import resolve_backbone
from unime_v2.trainers.arguments import RecipeParser


SHAPES = {"red circle": ((220, 40, 40), "ellipse"), "blue square": ((40, 60, 220), "rectangle")}


def draw(color: tuple[int, int, int], shape: str, size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), (235, 235, 235))
    getattr(ImageDraw.Draw(image), shape)((12, 12, size - 12, size - 12), fill=color)
    return image


@dataclass
class EmbedAndSearchArguments:
    """Which embedder to try."""

    model: str = field(
        default="tiny:qwen2_vl",
        metadata={"help": "A UniME-V2 checkpoint, a plain Qwen2-VL / LLaVA-OV checkpoint, or tiny:<kind>."},
    )


def main(argv: list[str] | None = None) -> None:
    (args,) = RecipeParser(EmbedAndSearchArguments, description=__doc__.split("\n\n")[0]).parse(argv)
    embedder = load_embedder(resolve_backbone(args.model), "official", "float32", torch.device("cpu"))
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
    main(sys.argv[1:])
