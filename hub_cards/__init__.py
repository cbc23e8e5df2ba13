"""Hub cards: the embedder's model card and the mined dataset's card, rendered with ``huggingface_hub``."""

from .dataset_card import build_mined_dataset_card
from .markdown import markdown_grid, markdown_rows, markdown_table
from .model_card import build_embedder_card, build_reranker_card


__all__ = [
    "build_embedder_card",
    "build_reranker_card",
    "build_mined_dataset_card",
    "markdown_grid",
    "markdown_rows",
    "markdown_table",
]
