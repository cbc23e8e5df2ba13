"""Batches UniME-V2 training records into one processor call and one forward pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import BatchFeature

from unime_v2.modeling_unime_v2.processing_unime_v2 import rename_item_error

from .bucketing import LengthBucketProcessor


class UniMEV2Collator:
    """Turns training records into one batch of ``B · (2 + k)`` sequences plus the judge scores.

    Each record contributes its query, its positive and its k negatives, in that order, so row ``i·(2+k) + j`` of
    the batch is record i's query (j = 0), positive (j = 1) or negative j − 1. All sequences go through **one**
    processor call and one forward pass: no separate query/candidate towers, no second pass. The output is the
    processor's ``BatchFeature`` (``input_ids``, ``attention_mask``, and the backbone's image inputs:
    ``pixel_values``, ``image_grid_thw``, ``mm_token_type_ids`` for Qwen-VL; ``pixel_values``, ``image_sizes``,
    ``batch_num_images`` for LLaVA-OneVision) plus ``judge_scores`` of shape ``(B, 1 + k)`` in fp32.

    With ``length_buckets`` ≥ 1 or ``pack_text_tokens`` ≥ 1 the items go through
    :class:`~unime_v2.trainers.bucketing.LengthBucketProcessor` instead (the output then holds ``buckets`` and
    ``bucket_rows``; the trainer embeds bucket by bucket).

    Args:
        processor: a :class:`~unime_v2.modeling_unime_v2.UniMEV2Processor` (``model.processor``).
        length_buckets: 0 for one padded batch, else the number of text length runs.
        pack_text_tokens: 0, or the row length of the padding-free packed text items (image items then form one
            bucket of their own; ``length_buckets`` is unused).
    """

    def __init__(self, processor: Any, length_buckets: int = 0, pack_text_tokens: int = 0):
        if length_buckets or pack_text_tokens:
            processor = LengthBucketProcessor(processor, max(length_buckets, 1), pack_text_tokens)
        self.processor = processor

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> BatchFeature:
        if not records:
            raise ValueError("no records to collate")
        group = 2 + len(records[0]["negatives"])
        items: list[Mapping[str, Any]] = []
        for position, record in enumerate(records):
            if 2 + len(record["negatives"]) != group or len(record["scores"]) != group - 1:
                raise ValueError(
                    f"record {_record_name(record, position)}: {len(record['negatives'])} negatives and "
                    f"{len(record['scores'])} scores, but this batch uses {group - 2} negatives (+1 positive score)"
                )
            items += [record["query"], record["positive"], *record["negatives"]]
        try:
            batch = self.processor(items)
        except (ValueError, FileNotFoundError, TypeError) as error:
            raise rename_item_error(error, lambda i: _item_role(records, group, i)) from error
        batch["judge_scores"] = torch.tensor([record["scores"] for record in records], dtype=torch.float32)
        return batch


def _record_name(record: Mapping[str, Any], position: int) -> str:
    index = record.get("record_index", position)
    query_id = record.get("query_id")
    return f"{index} ({query_id})" if query_id else str(index)


def _item_role(records: Sequence[Mapping[str, Any]], group: int, item: int) -> str:
    """The record and role of the ``item``-th entry of the flattened batch (query, positive, negatives...)."""
    position, slot = divmod(item, group)
    role = "query" if slot == 0 else "positive" if slot == 1 else f"negative {slot - 2}"
    return f"record {_record_name(records[position], position)}, {role}"
