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

Padding-free packing (``pack_text_tokens`` > 0): the text group is instead packed, its sequences laid end to end in
rows of at most ``pack_text_tokens`` tokens (first-fit decreasing) with position ids that restart at 0 for every
sequence and no attention mask. transformers reads the restarts as sequence boundaries and attends within each
sequence only (a block-diagonal causal mask with sdpa/eager/flex attention; variable-length kernels with flash
attention), so no padded token is computed except the short tail of each row. Text candidates of 5–30 tokens
padded to the longest waste up to 5/6 of the text compute; packed, almost none.

Multi-process note: each bucket is a separate call of the (possibly DDP-wrapped) model before one backward. Tested
here on one process (CPU); with DDP/DeepSpeed, check the first steps' gradients against a single-bucket run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import BatchFeature

from unime_v2.modeling_unime_v2.processing_unime_v2 import rename_item_error


BUCKETS_KEY = "buckets"
ROWS_KEY = "bucket_rows"


class LengthBucketProcessor:
    """Processor wrapper: items → ``BatchFeature(buckets=[batch, …], bucket_rows=[item indices, …])``.

    Args:
        processor: a :class:`~unime_v2.modeling_unime_v2.UniMEV2Processor` (``model.processor``).
        text_buckets: how many length runs the text-only items are cut into (1 = one bucket for all of them).
        pack_text_tokens: > 0: pack the text-only items padding-free into rows of at most this many tokens
            (:func:`pack_text_batch`; ``text_buckets`` is then unused); 0: length runs.
    """

    def __init__(self, processor: Any, text_buckets: int = 2, pack_text_tokens: int = 0):
        if text_buckets < 1:
            raise ValueError(f"text_buckets must be >= 1, got {text_buckets}")
        if pack_text_tokens < 0:
            raise ValueError(f"pack_text_tokens must be >= 0 (0: no packing), got {pack_text_tokens}")
        self.processor = processor
        self.text_buckets = text_buckets
        self.pack_text_tokens = pack_text_tokens

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
            if self.pack_text_tokens:
                parts = [self._pack(batch, torch.tensor(text_only))]
            else:
                parts = split_text_batch(batch, torch.tensor(text_only), self.text_buckets, self._side())
            for part, part_rows in parts:
                buckets.append(part)
                rows.append(part_rows)
        return BatchFeature({BUCKETS_KEY: buckets, ROWS_KEY: rows})

    def _pack(self, batch: BatchFeature, rows: torch.Tensor) -> tuple[BatchFeature, torch.Tensor]:
        config = getattr(self.processor, "config", None)
        mrope = bool(getattr(config, "uses_mrope", False))
        pad = self.processor.tokenizer.pad_token_id
        return pack_text_batch(batch, rows, self.pack_text_tokens, pad_token_id=pad or 0, mrope=mrope)

    def _side(self) -> str:
        config = getattr(self.processor, "config", None)
        return getattr(config, "padding_side", None) or self.processor.tokenizer.padding_side

    def _process(self, items: Sequence[Mapping[str, Any]], indices: list[int]) -> BatchFeature:
        """One processor call on ``items[indices]``; ``item j`` in an error is renamed to the batch index."""
        try:
            return self.processor([items[i] for i in indices])
        except (ValueError, FileNotFoundError, TypeError) as error:
            raise rename_item_error(error, lambda j: f"item {indices[j]}" if j < len(indices) else None) from error


def _has_image(item: Any) -> bool:
    return isinstance(item, Mapping) and item.get("image") is not None


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


def pack_text_batch(
    batch: BatchFeature, rows: torch.Tensor, max_tokens: int, pad_token_id: int = 0, mrope: bool = False
) -> tuple[BatchFeature, torch.Tensor]:
    """Lay a padded text-only batch's sequences end to end, without padding, in rows of at most ``max_tokens``.

    Rows are filled first-fit in order of decreasing length (a sequence longer than ``max_tokens`` gets a row of its
    own); each row's tail up to the longest row is filled with ``pad_token_id`` and counted as one more sequence.
    Every ``(n, L)`` tensor of the batch is packed the same way; ``attention_mask`` is dropped, ``position_ids``
    (restarting at 0 per sequence; ``(4, rows, length)`` with ``mrope``: the text positions, then the same positions
    on the three M-RoPE axes, as for text-only Qwen-VL input in either prompt format) and ``sequence_ends`` (flat
    index of each sequence's last token, in the order of the returned item indices) are added. Returns
    ``(packed batch, item indices)``; :meth:`UniMEV2Model.forward` embeds it.
    """
    if "pixel_values" in batch:
        raise ValueError("pack_text_batch takes text-only batches (this one has pixel_values)")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    mask = batch["attention_mask"].bool()
    lengths = mask.sum(-1).tolist()
    members, fills = _first_fit_decreasing(lengths, max_tokens)
    width = max(fills)
    order = [i for row in members for i in row]
    packed: dict[str, Any] = {}
    for key, value in batch.items():
        if key == "attention_mask":
            continue
        if not _is_row_tensor(value, len(lengths)):
            packed[key] = value
            continue
        out = value.new_full((len(members), width), pad_token_id if key == "input_ids" else 0)
        for r, row in enumerate(members):
            out[r, : fills[r]] = torch.cat([value[i][mask[i]] for i in row])
        packed[key] = out
    positions = torch.zeros(len(members), width, dtype=torch.long)
    ends: list[int] = []
    for r, row in enumerate(members):
        start = 0
        for i in row:
            positions[r, start : start + lengths[i]] = torch.arange(lengths[i])
            start += lengths[i]
            ends.append(r * width + start - 1)
        positions[r, start:] = torch.arange(width - start)
    packed["position_ids"] = positions.unsqueeze(0).expand(4, -1, -1).clone() if mrope else positions
    packed["sequence_ends"] = torch.tensor(ends)
    return BatchFeature(packed), rows[order]


def _first_fit_decreasing(lengths: list[int], capacity: int) -> tuple[list[list[int]], list[int]]:
    """Bins (lists of indices into ``lengths``) of total length ≤ ``capacity`` (longer items alone), and their fills."""
    members: list[list[int]] = []
    fills: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        target = next((r for r, fill in enumerate(fills) if fill + lengths[i] <= capacity), None)
        if target is None:
            members.append([i])
            fills.append(lengths[i])
        else:
            members[target].append(i)
            fills[target] += lengths[i]
    return members, fills


def _is_row_tensor(value: Any, num_rows: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[0] == num_rows


def embed_inputs(model: torch.nn.Module, inputs: Mapping[str, Any]) -> torch.Tensor:
    """Embeddings ``(n, d)`` of a collated batch in item order: one forward, or one per length bucket."""
    if BUCKETS_KEY not in inputs:
        return model(**inputs).embeddings
    parts = [model(**bucket).embeddings for bucket in inputs[BUCKETS_KEY]]
    rows = torch.cat([r.to(parts[0].device) for r in inputs[ROWS_KEY]])
    return torch.cat(parts)[torch.argsort(rows)]
