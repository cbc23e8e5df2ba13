"""Length buckets for the embedder's training batch: a few forwards of similar-length rows instead of one padded one.

A UniME-V2 micro-batch holds ``B · (2 + k)`` sequences of very different lengths: an image query is ~170 tokens
(144 image tokens at 336², 576 at 672²) while its 9 text candidates are 5–30 tokens each. One forward pads every
row to the longest, so at the paper's shapes most of the compute is spent on padding (16 queries × 10 sequences
padded to 174 tokens: 27.8k tokens, of which 5.1k are real). Every sequence is embedded independently (last-token
pooling, no cross-row attention), so embedding the rows in several forwards and putting the embeddings back in
batch order gives the same embeddings, loss and gradients (up to floating-point rounding; tested), with far fewer
tokens computed.

Usage: wrap the processor, keep the collator and the trainer::

    collator = UniMEV2Collator(LengthBucketProcessor(model.processor))   # batch["buckets"], batch["bucket_rows"]
    trainer = UniMEV2Trainer(..., data_collator=collator)                # compute_loss embeds bucket by bucket

Buckets: the items with an image form one group and the text-only items another (one processor call each, so
any backbone works); the text group is then cut into ``text_buckets`` runs of similar token length (sorted by
length, equal row counts), each trimmed to its own longest row. A model is called once per bucket, and the backward
pass runs once over all of them.

Multi-process note: each bucket is a separate call of the (possibly DDP-wrapped) model before one backward. Tested
here on one process (CPU); with DDP/DeepSpeed, check the first steps' gradients against a single-bucket run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import BatchFeature


BUCKETS_KEY = "buckets"
ROWS_KEY = "bucket_rows"


class LengthBucketProcessor:
    """Processor wrapper: items → ``BatchFeature(buckets=[batch, …], bucket_rows=[item indices, …])``.

    Args:
        processor: a :class:`~unime_v2.modeling_unime_v2.UniMEV2Processor` (``model.processor``).
        text_buckets: how many length runs the text-only items are cut into (1 = one bucket for all of them).
    """

    def __init__(self, processor: Any, text_buckets: int = 2):
        if text_buckets < 1:
            raise ValueError(f"text_buckets must be >= 1, got {text_buckets}")
        self.processor = processor
        self.text_buckets = text_buckets

    def __getattr__(self, name: str) -> Any:  # tokenizer, config, save_pretrained, … of the wrapped processor
        if name == "processor":
            raise AttributeError(name)
        return getattr(self.processor, name)

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> BatchFeature:
        if len(items) == 0:
            raise ValueError("no items to process")
        with_image = [i for i, item in enumerate(items) if _has_image(item)]
        text_only = [i for i, item in enumerate(items) if not _has_image(item)]
        buckets: list[BatchFeature] = []
        rows: list[torch.Tensor] = []
        if with_image:
            buckets.append(self._process(items, with_image))
            rows.append(torch.tensor(with_image))
        if text_only:
            batch = self._process(items, text_only)
            for part, part_rows in split_text_batch(batch, torch.tensor(text_only), self.text_buckets, self._side()):
                buckets.append(part)
                rows.append(part_rows)
        return BatchFeature({BUCKETS_KEY: buckets, ROWS_KEY: rows})

    def _side(self) -> str:
        config = getattr(self.processor, "config", None)
        return getattr(config, "padding_side", None) or self.processor.tokenizer.padding_side

    def _process(self, items: Sequence[Mapping[str, Any]], indices: list[int]) -> BatchFeature:
        """One processor call on ``items[indices]``; ``item j`` in an error is renamed to the batch index."""
        try:
            return self.processor([items[i] for i in indices])
        except (ValueError, FileNotFoundError, TypeError) as error:
            raise type(error)(_rename_item(str(error), indices)) from error


def _has_image(item: Any) -> bool:
    return isinstance(item, Mapping) and item.get("image") is not None


def _rename_item(message: str, indices: Sequence[int]) -> str:
    head, sep, rest = message.partition(":")
    words = head.split()
    if sep and len(words) == 2 and words[0] == "item" and words[1].isdigit() and int(words[1]) < len(indices):
        return f"item {indices[int(words[1])]}:{rest}"
    return message


def split_text_batch(
    batch: BatchFeature, rows: torch.Tensor, parts: int, padding_side: str
) -> list[tuple[BatchFeature, torch.Tensor]]:
    """Cut a text-only batch into ``parts`` runs of rows sorted by length, each trimmed to its longest row.

    Every ``(n, L)`` tensor of the batch (``input_ids``, ``attention_mask``, ``mm_token_type_ids``, …) is sliced
    the same way; ``padding_side`` says which columns are padding. Returns ``(sub-batch, item indices)`` pairs.
    """
    if "pixel_values" in batch:
        raise ValueError("split_text_batch takes text-only batches (this one has pixel_values)")
    lengths = batch["attention_mask"].sum(-1)
    order = torch.argsort(lengths, stable=True)
    out = []
    for chunk in torch.tensor_split(order, min(parts, len(order))):
        longest = int(lengths[chunk].max())
        columns = slice(-longest, None) if padding_side == "left" else slice(0, longest)
        part = {
            key: value[chunk][:, columns] if _is_row_tensor(value, len(lengths)) else value
            for key, value in batch.items()
        }
        out.append((BatchFeature(part), rows[chunk]))
    return out


def _is_row_tensor(value: Any, num_rows: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[0] == num_rows


def embed_inputs(model: torch.nn.Module, inputs: Mapping[str, Any]) -> torch.Tensor:
    """Embeddings ``(n, d)`` of a collated batch in item order: one forward, or one per length bucket."""
    if BUCKETS_KEY not in inputs:
        return model(**inputs).embeddings
    parts = [model(**bucket).embeddings for bucket in inputs[BUCKETS_KEY]]
    rows = torch.cat([r.to(parts[0].device) for r in inputs[ROWS_KEY]])
    return torch.cat(parts)[torch.argsort(rows)]
