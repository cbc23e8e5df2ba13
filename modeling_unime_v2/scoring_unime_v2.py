"""MLLM-as-a-Judge: the semantic matching score ``s = softmax([logit_Yes, logit_No])[0]`` of a query–candidate pair.

One forward pass per batch, no ``generate()``: the score is read from the logits at the first answer position
(right after the generation prompt). Only the two answer rows of the LM head are applied, to the last hidden state
of each pair, so no vocabulary-sized logits are ever built.

Prefix sharing. The prompt, the query and the query's image are the same for all candidates of a query, so the
prefix is run once with a KV cache; the cache is repeated over the batch (``batch_repeat_interleave``) and the
candidates run as a batch of suffixes. Positions are computed over the whole sequence (prefix + suffix) and sliced:
for Qwen-VL that is ``get_rope_index`` (3-D M-RoPE positions, needed for image suffixes); for 1-D-RoPE models
(LLaVA-OneVision) it is ``prefix_length + arange``. The scores equal scoring each full pair alone (see tests).

Works with Qwen2.5-VL (the paper's judge), Qwen2-VL and LLaVA-OneVision, on transformers 5.17 (``past_key_values``
/ ``cache_position``) and 5.24+ (``cache``).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.utils import logging

from .processing_unime_v2 import set_pixel_budget
from .prompting_unime_v2 import (
    JUDGE_PROMPT,
    MROPE_MODEL_TYPES,
    PairTemplate,
    Piece,
    PrefixNotShared,
    encode_pieces,
    image_inputs_for,
    images_of,
    render_full,
    render_listwise,
    render_pair,
)


logger = logging.get_logger(__name__)
JudgeItem = Mapping[str, Any]  # {"text": str, "image": PIL.Image | None}
DEFAULT_JUDGE = "Qwen/Qwen2.5-VL-7B-Instruct"  # the paper's judge


@dataclass
class EncodedPairs:
    """A query's pairs as token pieces: a shared prefix + one suffix per candidate where the chat template allows
    it, and whole pairs for the rest (templates that move candidate images before the query text)."""

    prefix: Piece | None
    suffixes: dict[int, Piece]
    whole: dict[int, Piece]

    def pair(self, index: int) -> Piece:
        """The full token sequence of pair ``index`` (the same ids whichever way it is scored)."""
        return self.prefix + self.suffixes[index] if index in self.suffixes else self.whole[index]


def answer_token_id(tokenizer: Any, word: str) -> int:
    """The id of ``word`` as a single token; raises if the tokenizer splits it (the score needs one logit)."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(
            f"the judge's tokenizer encodes the answer {word!r} as {len(ids)} tokens {pieces}; the judge score "
            f"needs {word!r} to be a single token (choose another judge or answer word)"
        )
    return ids[0]


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    return dtype if isinstance(dtype, torch.dtype) else getattr(torch, dtype)


class JudgeScorer:
    """Scores query–candidate pairs with a vision-language model and the paper's judge prompt (docs/method.md §2).

    Args:
        model: an image-text-to-text model (``*ForConditionalGeneration``) whose base model is ``model.model``.
        processor: its processor, with a chat template.
        prompt: the instruction before ``Query:`` (the judge layout), or a whole :class:`PairTemplate`.
        batch_size: candidates (suffixes, or full pairs) per forward pass.
        prefix_sharing: run the query prefix once per query (exact; much faster); ``False`` runs full pairs.
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
        self.model = model.eval()
        self.processor = processor
        self.prompt = prompt
        self.batch_size = batch_size
        self.prefix_sharing = prefix_sharing
        self.yes_token_id = answer_token_id(processor.tokenizer, yes_token)
        self.no_token_id = answer_token_id(processor.tokenizer, no_token)
        self.model_type = model.config.model_type
        self.uses_mrope = self.model_type in MROPE_MODEL_TYPES
        self.images = image_inputs_for(self.model_type)
        self.image_token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
        pad = processor.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else processor.tokenizer.eos_token_id
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
        """Load a judge checkpoint (folder or Hub id) and its processor; ``kwargs`` go to :class:`JudgeScorer`."""
        load_kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype)}
        if attn_implementation:
            load_kwargs["attn_implementation"] = attn_implementation
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, **load_kwargs)
        processor = AutoProcessor.from_pretrained(name_or_path)
        set_pixel_budget(processor, min_pixels, max_pixels)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), processor, **kwargs)

    @property
    def base(self) -> torch.nn.Module:
        """The base model (vision tower + language model, no LM head)."""
        return self.model.model

    # ------------------------------------------------------------------------------------------ inputs
    def encode(self, query: JudgeItem, candidates: Sequence[JudgeItem]) -> EncodedPairs:
        """Tokenize a query's pairs: shared prefix + suffixes, or whole pairs where the template reorders parts."""
        cut: dict[int, tuple[str, str]] = {}
        for index, candidate in enumerate(candidates):
            try:
                cut[index] = render_pair(self.processor, self.prompt, query, candidate)
            except PrefixNotShared:
                continue
        prefix_text = next(iter(cut.values()))[0] if cut else None
        cut = {i: pieces for i, pieces in cut.items() if pieces[0] == prefix_text}
        whole = [i for i in range(len(candidates)) if i not in cut]
        if whole and not getattr(self, "_warned_whole", False):
            logger.warning(
                "the judge's chat template reorders the prompt parts for some pairs (e.g. images first); "
                "those pairs are scored whole, without prefix sharing"
            )
            self._warned_whole = True
        prefix = encode_pieces(self.processor, self.images, [prefix_text], [images_of(query)])[0] if cut else None
        suffixes = encode_pieces(
            self.processor, self.images, [cut[i][1] for i in cut], [images_of(candidates[i]) for i in cut]
        )
        wholes = encode_pieces(
            self.processor,
            self.images,
            [render_full(self.processor, self.prompt, query, candidates[i]) for i in whole],
            [images_of(query) + images_of(candidates[i]) for i in whole],
        )
        return EncodedPairs(prefix, dict(zip(cut, suffixes)), dict(zip(whole, wholes)))

    def _text_batch(self, rows: Sequence[torch.Tensor]) -> dict[str, Any]:
        """Right-padded ``input_ids``/``attention_mask`` (+ ``mm_token_type_ids`` for M-RoPE) of token rows."""
        ids = pad_sequence(list(rows), batch_first=True, padding_value=self.pad_token_id)
        lengths = torch.tensor([len(row) for row in rows])
        mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
        inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if self.uses_mrope:
            inputs["mm_token_type_ids"] = ((ids == self.image_token_id) & mask.bool()).int()
        return inputs

    def _batch(self, rows: Sequence[torch.Tensor], images: Sequence[dict[str, torch.Tensor]]) -> dict[str, Any]:
        """Model inputs for token rows; ``images`` in the order their tokens appear."""
        return {**self._text_batch(rows), **self.images.join(list(images))}

    def full_pair_inputs(self, query: JudgeItem, candidate: JudgeItem) -> dict[str, Any]:
        """Inputs of one full pair for a plain ``model(**inputs)`` call (the per-pair reference), on its device."""
        return self.piece_inputs(self.encode(query, [candidate]).pair(0))

    def piece_inputs(self, piece: Piece) -> dict[str, Any]:
        """Inputs of one token piece (batch of 1) for a plain ``model(**inputs)`` call, on the model's device."""
        return self._to_device(self._batch([piece.input_ids], piece.images))

    def encode_listwise(self, prompt: str, query: JudgeItem, candidates: Sequence[JudgeItem]) -> Piece:
        """The listwise prompt (query + numbered candidates, generation prompt last) as one token piece."""
        text = render_listwise(self.processor, prompt, query, candidates)
        images = images_of(query) + [image for candidate in candidates for image in images_of(candidate)]
        return encode_pieces(self.processor, self.images, [text], [images])[0]

    @torch.no_grad()
    def generate(self, inputs: Mapping[str, Any], max_new_tokens: int, **kwargs: Any) -> Any:
        """Greedy ``generate`` on model inputs (``mm_token_type_ids`` dropped where the model does not take it)."""
        inputs = dict(inputs)
        if not self._takes_mm_types:
            inputs.pop("mm_token_type_ids", None)
        return self.model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.pad_token_id, **kwargs
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

    def _to_device(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.model.device)
                if key == "pixel_values":
                    value = value.to(self.model.dtype)
            out[key] = value
        return out

    def _forward(self, inputs: Mapping[str, Any], **kwargs: Any) -> Any:
        """Run the base model; drops ``mm_token_type_ids`` for versions whose forward does not take it."""
        inputs = dict(inputs)
        if not self._takes_mm_types:
            inputs.pop("mm_token_type_ids", None)
        return self.base(**self._to_device(inputs), **kwargs)

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
        encoded = self.encode(query, candidates)
        if not self.prefix_sharing or encoded.prefix is None:
            return self._score_whole([encoded.pair(i) for i in range(len(candidates))])
        scores = np.empty(len(candidates), dtype=np.float32)
        cache = self._prefill(encoded.prefix)
        shared = list(encoded.suffixes)
        for start in range(0, len(shared), self.batch_size):
            chunk = shared[start : start + self.batch_size]
            scores[chunk] = self._score_suffixes(encoded.prefix, cache, [encoded.suffixes[i] for i in chunk])
        if encoded.whole:
            whole = list(encoded.whole)
            scores[whole] = self._score_whole([encoded.whole[i] for i in whole])
        return scores

    def _prefill(self, prefix: Piece) -> Any:
        """Run the shared prefix once and return its KV cache (batch of 1)."""
        inputs = self._batch([prefix.input_ids], prefix.images)
        out = self._forward(inputs, position_ids=self._positions(inputs).to(self.model.device), use_cache=True)
        cache = getattr(out, "cache", None)
        return cache if cache is not None else out.past_key_values

    def _score_suffixes(self, prefix: Piece, cache: Any, suffixes: Sequence[Piece]) -> np.ndarray:
        """One forward pass over a batch of suffixes that all continue ``prefix`` (cached)."""
        length = len(prefix.input_ids)
        full = self._text_batch([torch.cat([prefix.input_ids, s.input_ids]) for s in suffixes])
        if self.uses_mrope:  # positions over prefix + suffix need every image's grid, not its pixels
            grids = [image["image_grid_thw"] for s in suffixes for image in prefix.images + s.images]
            full["image_grid_thw"] = torch.cat(grids) if grids else None
        positions = self._positions(full)[..., length:]
        inputs = {"input_ids": full["input_ids"][:, length:], "attention_mask": full["attention_mask"]}
        inputs.update(self.images.join([image for s in suffixes for image in s.images]))
        if self.uses_mrope:
            inputs["mm_token_type_ids"] = full["mm_token_type_ids"][:, length:]
        repeated = copy.deepcopy(cache)
        repeated.batch_repeat_interleave(len(suffixes))
        kwargs: dict[str, Any] = {self._cache_arg: repeated, "use_cache": True}
        if self._takes_cache_position:
            suffix_length = inputs["input_ids"].shape[1]
            kwargs["cache_position"] = torch.arange(length, length + suffix_length, device=self.model.device)
        hidden = self._forward(inputs, position_ids=positions.to(self.model.device), **kwargs).last_hidden_state
        last = torch.tensor([len(s.input_ids) - 1 for s in suffixes], device=hidden.device)
        return self._yes_probability(hidden[torch.arange(len(suffixes), device=hidden.device), last])

    def _score_whole(self, pairs: Sequence[Piece]) -> np.ndarray:
        """Scores of whole pairs, ``batch_size`` per forward pass (no cache)."""
        scores = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            inputs = self._batch([p.input_ids for p in chunk], [image for p in chunk for image in p.images])
            positions = self._positions(inputs).to(self.model.device)
            hidden = self._forward(inputs, position_ids=positions, use_cache=False).last_hidden_state
            last = inputs["attention_mask"].sum(-1).to(hidden.device) - 1
            scores.append(self._yes_probability(hidden[torch.arange(len(chunk), device=hidden.device), last]))
        return np.concatenate(scores).astype(np.float32)

    @torch.no_grad()
    def score_full_pairs(self, query: JudgeItem, candidates: Sequence[JudgeItem]) -> np.ndarray:
        """Judge scores with each full pair in the batch (no prefix sharing): the plain batched way."""
        if not candidates:
            return np.zeros(0, dtype=np.float32)
        encoded = self.encode(query, candidates)
        return self._score_whole([encoded.pair(i) for i in range(len(candidates))])

    @torch.no_grad()
    def score_with_generate(self, query: JudgeItem, candidate: JudgeItem) -> float:
        """One pair through ``generate(max_new_tokens=1)`` (the authors' demo way; for comparisons only)."""
        inputs = self.full_pair_inputs(query, candidate)
        out = self.generate(inputs, max_new_tokens=1, output_logits=True, return_dict_in_generate=True)
        logits = out.logits[0][0, [self.yes_token_id, self.no_token_id]].float()
        return float(logits.softmax(-1)[0])
