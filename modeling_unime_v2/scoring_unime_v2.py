"""MLLM-as-a-Judge: the semantic matching score ``s = softmax([logit_Yes, logit_No])[0]`` of a query–candidate pair.

:class:`JudgeScorer` is the forward engine of :class:`~.modeling_unime_v2_reranker.UniMEV2Reranker`: it runs token
pieces built by :class:`~.processing_unime_v2_reranker.UniMEV2RerankerProcessor` through a VLM. One forward pass per
batch, no ``generate()``: the score is read from the logits at the first answer position (right after the
generation prompt), applying only the two answer rows of the LM head to the last hidden state of each pair.

Prefix sharing. The pairs of a query share a prefix of token ids (the processor's :class:`EncodedPairs`); it runs
once with a KV cache, the cache is repeated over the batch (``batch_repeat_interleave``) and the suffixes run as one
batch. Positions are computed over whole sequences and sliced: ``get_rope_index`` for Qwen-VL (3-D M-RoPE positions,
needed for suffixes with an image), ``prefix_length + arange`` for 1-D RoPE (LLaVA-OneVision).

Several queries per forward (:meth:`JudgeScorer.score_many`): the prefixes of ``queries_per_forward`` queries run as
one right-padded batch; the cache rows are selected once per suffix (``batch_select_indices``) and all suffixes run
in one forward. The attention mask spans ``[prefix row incl. its padding | suffix]``, so a suffix never sees another
query's tokens nor the padding; a text suffix's positions continue its own prefix (1-D: ``prefix_length + arange``;
M-RoPE: the prefix's largest position + 1 + ``arange`` on all three axes, what ``get_rope_index`` gives text after
text or an image), a suffix with an image gets ``get_rope_index`` over its whole pair.

All ways give the scores of each whole pair scored alone, up to float rounding (tests). Works with Qwen2.5-VL (the
paper's judge), Qwen2-VL and LLaVA-OneVision, on transformers 5.17 (``past_key_values`` / ``cache_position``) and
5.24+ (``cache``).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from .configuration_unime_v2_reranker import JUDGE_PROMPT
from .processing_unime_v2_reranker import EncodedPairs, PairTemplate, Piece, UniMEV2RerankerProcessor


JudgeItem = Mapping[str, Any]  # {"text": str, "image": PIL.Image | path | None}
DEFAULT_JUDGE = "Qwen/Qwen2.5-VL-7B-Instruct"  # the paper's judge


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    return dtype if isinstance(dtype, torch.dtype) else getattr(torch, dtype)


class JudgeScorer:
    """Scores query–candidate pairs with a vision-language model (docs/method.md §2).

    Args:
        model: an image-text-to-text model (``*ForConditionalGeneration``) whose base model is ``model.model``.
        processor: a :class:`UniMEV2RerankerProcessor`, or the model's own processor (with a chat template), then
            wrapped in the judge layout with ``prompt``, ``yes_token`` and ``no_token``.
        prompt: the instruction before ``Query:`` (judge layout), or a whole :class:`PairTemplate`.
        batch_size: candidates (suffixes, or whole pairs) per forward pass of :meth:`score`.
        prefix_sharing: run a query's shared prefix once (exact; much faster); ``False`` runs whole pairs.
        yes_token, no_token: the answer words; each must be a single token of the tokenizer.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        prompt: str | PairTemplate = JUDGE_PROMPT,
        batch_size: int = 64,
        prefix_sharing: bool = True,
        yes_token: str = "Yes",
        no_token: str = "No",
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not isinstance(processor, UniMEV2RerankerProcessor):
            processor = UniMEV2RerankerProcessor(processor, prompt, yes_token=yes_token, no_token=no_token)
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size
        self.prefix_sharing = prefix_sharing
        self.uses_mrope = processor.uses_mrope
        params = inspect.signature(self.base.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._takes_cache_position = "cache_position" in params
        self._takes_mm_types = "mm_token_type_ids" in params

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = DEFAULT_JUDGE,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device | None = None,
        attn_implementation: str | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        **kwargs: Any,
    ) -> JudgeScorer:
        """Load a judge checkpoint (folder or Hub id) and its processor (judge layout); ``kwargs`` go to
        :class:`JudgeScorer`."""
        load_kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype)}
        if attn_implementation:
            load_kwargs["attn_implementation"] = attn_implementation
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, **load_kwargs)
        answers = {key: kwargs.pop(key) for key in ("yes_token", "no_token") if key in kwargs}
        processor = UniMEV2RerankerProcessor(
            AutoProcessor.from_pretrained(name_or_path),
            kwargs.pop("prompt", JUDGE_PROMPT),
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            **answers,
        )
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), processor, **kwargs)

    @property
    def base(self) -> torch.nn.Module:
        """The base model (vision tower + language model, no LM head)."""
        return self.model.model

    @property
    def yes_token_id(self) -> int:
        return self.processor.yes_token_id

    @property
    def no_token_id(self) -> int:
        return self.processor.no_token_id

    # ------------------------------------------------------------------------------------------ inputs
    def encode(self, query: JudgeItem, candidates: Sequence[JudgeItem]) -> EncodedPairs:
        """A query's pairs as the processor tokenizes them (shared prefix + suffixes)."""
        return self.processor.encode_pairs(query, candidates)

    def full_pair_inputs(self, query: JudgeItem, candidate: JudgeItem) -> dict[str, Any]:
        """Inputs of one whole pair for a plain ``model(**inputs)`` call (the per-pair reference), on its device."""
        return self.to_device(self.processor.pair_inputs(query, candidate))

    def to_device(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """``inputs`` on the model's device, pixels in its dtype."""
        out = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.model.device)
                if key == "pixel_values":
                    value = value.to(self.model.dtype)
            out[key] = value
        return out

    @torch.no_grad()
    def generate(self, inputs: Mapping[str, Any], max_new_tokens: int, **kwargs: Any) -> Any:
        """Greedy ``generate`` on model inputs (``mm_token_type_ids`` dropped where the model does not take it)."""
        inputs = self.to_device(inputs)
        if not self._takes_mm_types:
            inputs.pop("mm_token_type_ids", None)
        return self.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=self.processor.pad_token_id,
            **kwargs,
        )

    def _positions(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        """Position ids over whole sequences: M-RoPE ``(3, n, L)`` from ``get_rope_index``, else 1-D ``(n, L)``."""
        mask = inputs["attention_mask"]
        if not self.uses_mrope:
            return (mask.cumsum(-1) - 1).clamp(min=0)
        rope_index = self.base.get_rope_index
        kwargs = {
            "input_ids": inputs["input_ids"],
            "image_grid_thw": inputs.get("image_grid_thw"),
            "attention_mask": mask,
        }
        if "mm_token_type_ids" in inspect.signature(rope_index).parameters:
            kwargs["mm_token_type_ids"] = inputs["mm_token_type_ids"]
        positions, _ = rope_index(**kwargs)
        return positions

    def _forward(self, inputs: Mapping[str, Any], **kwargs: Any) -> Any:
        """Run the base model; drops ``mm_token_type_ids`` for versions whose forward does not take it."""
        inputs = self.to_device(inputs)
        if not self._takes_mm_types:
            inputs.pop("mm_token_type_ids", None)
        return self.base(**inputs, **kwargs)

    def _cache_of(self, out: Any) -> Any:
        cache = getattr(out, "cache", None)
        return cache if cache is not None else out.past_key_values

    def _yes_probability(self, hidden: torch.Tensor) -> np.ndarray:
        """``softmax([logit_Yes, logit_No])[0]`` from last hidden states, with only the two LM-head rows (fp32)."""
        head = self.model.get_output_embeddings()
        rows = torch.tensor([self.yes_token_id, self.no_token_id], device=head.weight.device)
        logits = hidden.float() @ head.weight[rows].float().T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[rows].float()
        return logits.softmax(-1)[:, 0].cpu().numpy()

    # ------------------------------------------------------------------------------------------ scoring
    @torch.no_grad()
    def score(self, query: JudgeItem, candidates: Sequence[JudgeItem]) -> np.ndarray:
        """Judge scores of ``candidates`` for ``query`` (``float32``, one per candidate), prefix-shared if enabled."""
        if not candidates:
            return np.zeros(0, dtype=np.float32)
        return self.score_encoded(self.encode(query, candidates))

    @torch.no_grad()
    def score_encoded(self, encoded: EncodedPairs) -> np.ndarray:
        """Scores of one tokenized query, ``batch_size`` suffixes (or whole pairs) per forward."""
        if not self.prefix_sharing or len(encoded.prefix) == 0:
            return self.score_whole([encoded.pair(i) for i in range(len(encoded))])
        scores = np.empty(len(encoded), dtype=np.float32)
        cache = self._prefill([encoded.prefix])[0]
        for start in range(0, len(encoded), self.batch_size):
            chunk = encoded.suffixes[start : start + self.batch_size]
            scores[start : start + len(chunk)] = self._score_suffixes(encoded.prefix, cache, chunk)
        return scores

    @torch.no_grad()
    def score_many(self, encoded: Sequence[EncodedPairs], queries_per_forward: int = 8) -> list[np.ndarray]:
        """Scores of several tokenized queries, ``queries_per_forward`` queries (all their suffixes) per forward.

        Memory: one forward holds the KV cache of all the group's pairs (≈ 57 kB per token of each pair for a 7B
        Qwen2.5-VL judge in bf16: 16 queries × 50 pairs × 230 tokens ≈ 10 GB).
        """
        if queries_per_forward < 1:
            raise ValueError(f"queries_per_forward must be >= 1, got {queries_per_forward}")
        if not self.prefix_sharing:
            return [self.score_encoded(pairs) for pairs in encoded]
        results: list[np.ndarray | None] = [None] * len(encoded)
        shared = [i for i, pairs in enumerate(encoded) if len(pairs.prefix) > 0]
        for i, pairs in enumerate(encoded):
            if len(pairs.prefix) == 0:
                results[i] = self.score_whole([pairs.pair(j) for j in range(len(pairs))])
        for start in range(0, len(shared), queries_per_forward):
            group = shared[start : start + queries_per_forward]
            for i, scores in zip(group, self._score_group([encoded[i] for i in group])):
                results[i] = scores
        return results

    @torch.no_grad()
    def score_whole(self, pairs: Sequence[Piece]) -> np.ndarray:
        """Scores of whole pairs, ``batch_size`` per forward pass (no cache)."""
        scores = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            inputs = self.processor.inputs(chunk)
            positions = self._positions(inputs).to(self.model.device)
            hidden = self._forward(inputs, position_ids=positions, use_cache=False).last_hidden_state
            last = inputs["attention_mask"].sum(-1).to(hidden.device) - 1
            scores.append(self._yes_probability(hidden[torch.arange(len(chunk), device=hidden.device), last]))
        return np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, dtype=np.float32)

    @torch.no_grad()
    def score_full_pairs(self, query: JudgeItem, candidates: Sequence[JudgeItem]) -> np.ndarray:
        """Judge scores with each whole pair in the batch (no prefix sharing): the plain batched way."""
        if not candidates:
            return np.zeros(0, dtype=np.float32)
        encoded = self.encode(query, candidates)
        return self.score_whole([encoded.pair(i) for i in range(len(candidates))])

    @torch.no_grad()
    def score_with_generate(self, query: JudgeItem, candidate: JudgeItem) -> float:
        """One pair through ``generate(max_new_tokens=1)`` (the authors' demo way; for comparisons only)."""
        inputs = self.processor.pair_inputs(query, candidate)
        out = self.generate(inputs, max_new_tokens=1, output_logits=True, return_dict_in_generate=True)
        logits = out.logits[0][0, [self.yes_token_id, self.no_token_id]].float()
        return float(logits.softmax(-1)[0])

    # ------------------------------------------------------------------------------------------ internals
    def _prefill(self, prefixes: Sequence[Piece]) -> tuple[Any, dict[str, Any], torch.Tensor]:
        """Run prefixes (right-padded) once: their KV cache, batch inputs and positions."""
        inputs = self.processor.inputs(prefixes)
        positions = self._positions(inputs)
        out = self._forward(inputs, position_ids=positions.to(self.model.device), use_cache=True)
        return self._cache_of(out), inputs, positions

    def _score_suffixes(self, prefix: Piece, cache: Any, suffixes: Sequence[Piece]) -> np.ndarray:
        """One forward pass over a batch of suffixes that all continue ``prefix`` (cached)."""
        length = len(prefix)
        full = self.processor.inputs([prefix + s for s in suffixes])
        positions = self._positions(full)[..., length:]
        inputs = {"input_ids": full["input_ids"][:, length:], "attention_mask": full["attention_mask"]}
        inputs.update(self.processor.image_inputs.join([image for s in suffixes for image in s.images]))
        if self.uses_mrope:
            inputs["mm_token_type_ids"] = full["mm_token_type_ids"][:, length:]
        repeated = copy.deepcopy(cache)
        repeated.batch_repeat_interleave(len(suffixes))
        kwargs: dict[str, Any] = {self._cache_arg: repeated, "use_cache": True}
        if self._takes_cache_position:
            suffix_length = inputs["input_ids"].shape[1]
            kwargs["cache_position"] = torch.arange(length, length + suffix_length, device=self.model.device)
        hidden = self._forward(inputs, position_ids=positions.to(self.model.device), **kwargs).last_hidden_state
        last = torch.tensor([len(s) - 1 for s in suffixes], device=hidden.device)
        return self._yes_probability(hidden[torch.arange(len(suffixes), device=hidden.device), last])

    def _score_group(self, group: Sequence[EncodedPairs]) -> list[np.ndarray]:
        """Prefill the group's prefixes as one batch, then run every suffix of every query in one forward."""
        device = self.model.device
        cache, prefill, prefix_positions = self._prefill([pairs.prefix for pairs in group])
        owners = [g for g, pairs in enumerate(group) for _ in pairs.suffixes]
        suffixes = [suffix for pairs in group for suffix in pairs.suffixes]
        cache.batch_select_indices(torch.tensor(owners, device=device))
        suffix_batch = self.processor.inputs(suffixes)
        prefix_mask = prefill["attention_mask"][owners]
        inputs = {
            "input_ids": suffix_batch["input_ids"],
            "attention_mask": torch.cat([prefix_mask, suffix_batch["attention_mask"]], dim=1),
        }
        if self.uses_mrope:
            inputs["mm_token_type_ids"] = suffix_batch["mm_token_type_ids"]
        inputs.update(self.processor.image_inputs.join([image for s in suffixes for image in s.images]))
        positions = self._suffix_positions(group, owners, suffixes, prefix_positions, prefill["attention_mask"])
        kwargs: dict[str, Any] = {self._cache_arg: cache, "use_cache": True}
        prefix_length, suffix_length = prefix_mask.shape[1], suffix_batch["input_ids"].shape[1]
        if self._takes_cache_position:
            kwargs["cache_position"] = torch.arange(prefix_length, prefix_length + suffix_length, device=device)
        hidden = self._forward(inputs, position_ids=positions.to(device), **kwargs).last_hidden_state
        last = torch.tensor([len(s) - 1 for s in suffixes], device=hidden.device)
        scores = self._yes_probability(hidden[torch.arange(len(suffixes), device=hidden.device), last])
        return list(np.split(scores.astype(np.float32), np.cumsum([len(p) for p in group])[:-1]))

    def _suffix_positions(
        self,
        group: Sequence[EncodedPairs],
        owners: Sequence[int],
        suffixes: Sequence[Piece],
        prefix_positions: torch.Tensor,
        prefix_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Positions of every suffix token, continuing its own prefix: ``(n, L)`` (1-D RoPE) or ``(3, n, L)``."""
        steps = torch.arange(max(len(s) for s in suffixes))
        if not self.uses_mrope:
            starts = prefix_mask.sum(-1)[owners]
            return starts[:, None] + steps[None, :]
        real = prefix_mask.bool()[None].expand_as(prefix_positions)
        last = prefix_positions.masked_fill(~real, -1).amax(-1).amax(0)  # largest position of each prefix
        positions = (last[owners][:, None] + 1 + steps[None, :]).unsqueeze(0).repeat(3, 1, 1)
        for row, (owner, suffix) in enumerate(zip(owners, suffixes)):
            if suffix.images:  # an image in the suffix: the pair's own M-RoPE grid positions
                prefix = group[owner].prefix
                full = self.processor.inputs([prefix + suffix])
                pair_positions = self._positions(full)[..., len(prefix) :]
                positions[:, row, : pair_positions.shape[-1]] = pair_positions[:, 0]
        return positions
