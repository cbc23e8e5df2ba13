"""Reranker training batches, rendered by the reranker's processor: no model inside (docs/reranker.md).

:class:`RerankerCollator` turns pair dicts (``query``, ``candidate``, ``label``: what
:class:`~unime_v2.data_builders.formats.judge_pairs.JudgePairDataset` yields) and/or training records (``query``,
``positive``, ``negatives``, ``scores``: what :class:`~unime_v2.data_builders.formats.training_records.TrainingRecords`
yields) into a right-padded pair batch with ``labels`` (the answer token id per pair) and, for records, a
``listwise`` sub-batch with token ``labels`` (``-100`` except on the answer turn ``Ans: (i)<|im_end|>\n``). Every row
is built by :class:`~unime_v2.modeling_unime_v2.processing_unime_v2_reranker.UniMEV2RerankerProcessor`: token for
token the prompt the reranker scores.
"""

from __future__ import annotations

import numbers
import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from unime_v2.modeling_unime_v2.configuration_unime_v2_reranker import UniMEV2RerankerConfig
from unime_v2.modeling_unime_v2.processing_unime_v2_reranker import (
    IGNORE_INDEX,
    JUDGE_TEMPLATE,
    UniMEV2RerankerProcessor,
)


__all__ = ["IGNORE_INDEX", "RerankerCollator", "hardest_first", "listwise_candidates"]


def _label_of(feature: Mapping[str, Any], index: int) -> bool:
    label = feature.get("label")
    if isinstance(label, str) and label in ("Yes", "No"):
        return label == "Yes"
    if isinstance(label, numbers.Integral) and int(label) in (0, 1):
        return bool(int(label))
    if isinstance(label, torch.Tensor) and label.numel() == 1 and int(label) in (0, 1):
        return bool(int(label))
    raise ValueError(f"pair {index}: label must be 1/0, True/False or 'Yes'/'No', got {label!r}")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a PEFT / DDP wrapper (LoRA layers stay in place)."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def hardest_first(scores: Sequence[float]) -> list[int]:
    """Indices of the negatives by judge score, hardest (highest score) first; ties keep the stored order."""
    return sorted(range(len(scores)), key=lambda j: -float(scores[j]))


def listwise_candidates(
    positive: Any, negatives: Sequence[Any], scores: Sequence[float], x: int, rng: random.Random
) -> tuple[list[Any], int]:
    """The top-``x`` negatives by judge score (:func:`hardest_first`) with ``positive`` inserted at a uniformly
    random position among all of them: ``(candidates, position of the positive)``."""
    ranked = hardest_first(scores)
    top = [negatives[j] for j in ranked[:x]]
    position = rng.randrange(len(top) + 1)
    return top[:position] + [positive] + top[position:], position


class RerankerCollator:
    """Training batches of the reranker from judge pairs and/or training records, built by a
    :class:`UniMEV2RerankerProcessor` (no model inside).

    A pair feature is ``{"query": {"text", "image"}, "candidate": {"text", "image"}, "label": 1 | 0}`` (also
    ``True``/``False`` or ``"Yes"``/``"No"``; extra keys are ignored); a record is ``{"query", "positive",
    "negatives", "scores"}`` and gives a "Yes" pair, its ``num_pair_negatives`` hardest negatives as "No" pairs and,
    with ``listwise``, one listwise row.

    Returns CPU tensors: ``input_ids``, ``attention_mask`` (right padding), the image inputs of the model family
    (``pixel_values`` + ``image_grid_thw`` and ``mm_token_type_ids`` for Qwen-VL; ``pixel_values`` + ``image_sizes``
    for LLaVA-OneVision), ``labels``: ``(n,)`` answer token ids (``Yes`` or ``No``), and for records ``listwise``:
    the same for the listwise rows with ``labels`` ``(m, L)`` on the answer turn only.

    Args:
        processor: the reranker's processor (layout, prompts, answer words); :meth:`for_model` builds it for a
            model being trained.
        candidate_lm: also return ``candidate_lm_mask`` ``(n, L)`` bool: the tokens of the candidate's text in
            "Yes" rows (targets of the optional candidate LM loss).
        listwise: build the listwise row of each training record (off: records give their pairs only).
        num_list_negatives: x, the top negatives by judge score in a listwise row (authors: 5).
        seed: seeds the positive's position in listwise rows.
        num_pair_negatives: "No" pairs per record, the hardest negatives by judge score (paper: 1).
    """

    def __init__(
        self,
        processor: UniMEV2RerankerProcessor,
        candidate_lm: bool = False,
        listwise: bool = True,
        num_list_negatives: int = 5,
        seed: int = 0,
        num_pair_negatives: int = 1,
    ):
        if not isinstance(processor, UniMEV2RerankerProcessor):
            raise TypeError(
                f"RerankerCollator needs a UniMEV2RerankerProcessor, got {type(processor).__name__} (for a model "
                "and its backbone processor use RerankerCollator.for_model)"
            )
        for name, value in (("num_list_negatives", num_list_negatives), ("num_pair_negatives", num_pair_negatives)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.processor = processor
        self.candidate_lm = candidate_lm
        self.listwise = listwise
        self.num_list_negatives = num_list_negatives
        self.num_pair_negatives = num_pair_negatives
        self.rng = random.Random(seed)

    @classmethod
    def for_model(cls, model: torch.nn.Module, processor: Any, **kwargs: Any) -> RerankerCollator:
        """A collator whose processor renders as ``model`` does: a :class:`UniMEV2Reranker` (plain, PEFT- or
        DDP-wrapped) in its config's layout and prompts, any other VLM in the judge layout. A
        :class:`UniMEV2RerankerProcessor` is used as it is. ``kwargs`` go to the constructor."""
        if not isinstance(processor, UniMEV2RerankerProcessor):
            config = getattr(_unwrap(model), "config", None)
            if isinstance(config, UniMEV2RerankerConfig):
                processor = UniMEV2RerankerProcessor.from_config(processor, config)
            else:
                processor = UniMEV2RerankerProcessor(processor, JUDGE_TEMPLATE)
        return cls(processor, **kwargs)

    @property
    def yes_token_id(self) -> int:
        return self.processor.yes_token_id

    @property
    def no_token_id(self) -> int:
        return self.processor.no_token_id

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("RerankerCollator got an empty batch")
        pairs, lists = [], []
        for index, feature in enumerate(features):
            if "positive" in feature:
                pair_features, list_row = self.record_rows(feature, index)
                pairs += pair_features
                if list_row is not None:
                    lists.append(list_row)
            else:
                pairs.append(feature)
        batch = self.pair_batch(pairs)
        if lists:
            batch["listwise"] = self.processor.merge_rows(lists)
        return batch

    def record_rows(self, record: Mapping[str, Any], index: int) -> tuple[list[dict[str, Any]], dict | None]:
        """A training record's pairs (positive → Yes; its ``num_pair_negatives`` hardest negatives by judge score →
        No) and its listwise row (or ``None``)."""
        negatives = list(record.get("negatives") or [])
        scores = list(record.get("scores") or [])
        if not negatives:
            raise ValueError(f"record {index}: a reranker training record needs at least one negative")
        if len(scores) != len(negatives) + 1:
            raise ValueError(
                f"record {index}: needs judge scores for the positive and each of its {len(negatives)} negatives "
                f"('scores' has {len(scores)})"
            )
        prepare = self.processor.prepare
        query = prepare(record["query"], f"record {index} query")
        positive = prepare(record["positive"], f"record {index} positive")
        negatives = [prepare(n, f"record {index} negative {j}") for j, n in enumerate(negatives)]
        hardest = hardest_first(scores[1:])[: self.num_pair_negatives]
        pairs = [{"query": query, "candidate": positive, "label": 1}]
        pairs += [{"query": query, "candidate": negatives[j], "label": 0} for j in hardest]
        if not self.listwise:
            return pairs, None
        candidates, position = listwise_candidates(positive, negatives, scores[1:], self.num_list_negatives, self.rng)
        return pairs, self.processor.listwise_row(query, candidates, position)

    def pair_batch(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The pair rows of ``features`` (``query``, ``candidate``, ``label``) with their answer ids as ``labels``."""
        rows = []
        for index, feature in enumerate(features):
            if "query" not in feature or "candidate" not in feature:
                raise KeyError(
                    f"pair {index}: a judge pair needs 'query' and 'candidate' items, got {sorted(feature)}"
                )
            label = _label_of(feature, index)
            query, candidate = feature["query"], feature["candidate"]
            where = f"pair {index} "
            rows.append(self.processor.pair_row(query, candidate, label, self.candidate_lm, where))
        return self.processor.merge_rows(rows)
