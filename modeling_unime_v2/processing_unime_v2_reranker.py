"""The UniME-V2-Reranker's processor: its prompts rendered and tokenized on the CPU, with no model (Hub remote code).

**Layouts.** The user turn of a pair is the authors' list of message parts: the instruction, the query label, the
query's image and text, the candidate label, the candidate's image and text, and an end mark (:class:`PairTemplate`):

* ``reranker`` (the released UniME-V2-Reranker): ``<prompt>`` ``Query:`` (image) (text) ``Candidate:`` (image) (text);
* ``judge`` (the paper's MLLM-as-a-Judge): ``<prompt>`` `` Query:`` (image) (text) ``, Candidates:`` (image) (text) ``.``;
* listwise: ``<prompt>`` ``Query:`` (image) (text) ``Candidates:`` then ``(i) `` (image) (text) per candidate, answer
  ``Ans: (i)`` (1-based).

**Token exactness.** Every sequence is the tokenization of its whole rendered chat text, each image token expanded
as the backbone's processor expands it: what ``processor(text=text, images=images)`` returns (tests). Special tokens
never merge with their neighbours under BPE, so the text goes through the tokenizer alone and each image's run of
image tokens (its length and pixels from the processor on that one image) is spliced in: an image is processed once
however many pairs it appears in.

**Prefix sharing.** The pairs of one query share the longest common prefix of their token ids (:class:`EncodedPairs`),
cut so that it holds no candidate image (not even when two candidate images give runs of equal length), splits no
image run, and leaves every pair at least one token of its own. A template that renders all images first
(LLaVA-OneVision's Hub template) only makes the shared prefix shorter.

**Items.** ``{"text", "image"}``. MMEB's image markers (``<|image_1|>`` and one newline after it) are removed, as
the authors remove ``<|image_pad|>\\n`` and ``<|image_pad|>``; nothing else in the text changes (MMEB texts end in a
newline, which the model reads).

**Training rows** (:meth:`UniMEV2RerankerProcessor.pair_row`, :meth:`~UniMEV2RerankerProcessor.listwise_row`): the
pair's prompt with its answer token id, and the listwise prompt followed by the answer turn ``Ans: (i)<|im_end|>\\n``
with labels on those answer tokens, as the authors' training sequences end.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoProcessor

from .configuration_unime_v2 import IMAGE_MARKER_PATTERN
from .configuration_unime_v2_reranker import (
    JUDGE_PROMPT,
    RERANK_LIST_PROMPT,
    RERANK_PAIR_PROMPT,
    UniMEV2RerankerConfig,
)
from .processing_unime_v2 import load_item_image, set_pixel_budget


IGNORE_INDEX = -100
LIST_ANSWER = "Ans: ({})"
"""The listwise answer, formatted with the 1-based number of the chosen candidate."""
_MARKER = re.compile(IMAGE_MARKER_PATTERN.pattern + r"\n?")
_SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "labels", "candidate_lm_mask")
Item = Mapping[str, Any]


@dataclass(frozen=True)
class PairTemplate:
    """The text parts around a pair's items: ``prompt``, ``query_label``, query image, query text,
    ``candidate_label``, candidate image, candidate text, ``end`` (each a message part of its own, as the authors
    build them; an empty ``end`` is left out)."""

    prompt: str = JUDGE_PROMPT
    query_label: str = " Query:"
    candidate_label: str = ", Candidates:"
    end: str = "."

    def with_prompt(self, prompt: str) -> PairTemplate:
        return replace(self, prompt=prompt)


JUDGE_TEMPLATE = PairTemplate()
RERANK_TEMPLATE = PairTemplate(RERANK_PAIR_PROMPT, "Query:", "Candidate:", "")


def as_template(prompt: str | PairTemplate) -> PairTemplate:
    """A bare instruction string means the judge layout with that instruction."""
    return prompt if isinstance(prompt, PairTemplate) else JUDGE_TEMPLATE.with_prompt(prompt)


def remove_image_markers(text: str | None) -> str:
    """``text`` without MMEB image markers (each with the one newline after it); all other whitespace is kept."""
    return _MARKER.sub("", text or "")


def prepare_item(item: Item, name: str, image_resize: int | None = None) -> dict[str, Any]:
    """``{"text", "image"}`` with the image opened as RGB (and resized to ``image_resize``² when set) and the image
    markers removed; errors name the item."""
    if not isinstance(item, Mapping):
        raise TypeError(f"{name}: an item is a dict with 'text' and/or 'image', got {type(item).__name__}")
    text = item.get("text") or ""
    if not isinstance(text, str):
        raise TypeError(f"{name}: text must be a string, got {type(text).__name__}")
    try:
        image = load_item_image(item.get("image"), 0)
    except (FileNotFoundError, ValueError, TypeError) as error:
        raise type(error)(f"{name}: {str(error).removeprefix('item 0: ')}") from error
    if image is not None and image_resize:
        image = image.resize((image_resize, image_resize))
    text = remove_image_markers(text)
    if not text.strip() and image is None:
        raise ValueError(f"{name}: has neither text nor image")
    return {"text": text, "image": image}


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


@dataclass
class Piece:
    """Token ids ``(L,)`` and the processed inputs of the images whose runs they hold (in token order)."""

    input_ids: torch.Tensor
    images: list[dict[str, torch.Tensor]]

    def __add__(self, other: Piece) -> Piece:
        return Piece(torch.cat([self.input_ids, other.input_ids]), self.images + other.images)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class EncodedPairs:
    """A query's pairs as a shared prefix and one suffix per candidate; ``pair(i)`` is pair i's whole sequence,
    the tokenization of its whole rendered text."""

    prefix: Piece
    suffixes: list[Piece]

    def pair(self, index: int) -> Piece:
        return self.prefix + self.suffixes[index]

    def __len__(self) -> int:
        return len(self.suffixes)


@dataclass
class _Tokens:
    """One rendered text tokenized with its image runs spliced in: ``spans[j]`` is image j's run in ``ids``,
    ``index[t]`` the position in ``ids`` of the tokenizer's token ``t`` (image tokens map to their run's start)."""

    ids: list[int]
    spans: list[tuple[int, int]]
    images: list[dict[str, torch.Tensor]]
    offsets: list[tuple[int, int]]
    index: list[int]


def _pad_dim1(tensor: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - tensor.shape[1]
    return tensor if missing == 0 else F.pad(tensor, [0, 0] * (tensor.ndim - 2) + [0, missing])


class ImageInputs:
    """Per-image split and join of a processor's image outputs.

    Qwen-VL (``mrope``): ``pixel_values`` are the flattened patches of all images, ``image_grid_thw`` one row per
    image. LLaVA-OneVision: one ``pixel_values`` entry ``(n_patches, …)`` per image (zero-padded to the longest when
    joined; the model reads each image's real patch count from ``image_sizes``).
    """

    def __init__(self, mrope: bool):
        self.mrope = mrope
        self.keys = ("pixel_values", "image_grid_thw") if mrope else ("pixel_values", "image_sizes")

    def split(self, batch: Mapping[str, Any], n_images: int) -> list[dict[str, torch.Tensor]]:
        if n_images == 0:
            return []
        if self.mrope:
            grids = batch["image_grid_thw"]
            patches = torch.split(batch["pixel_values"], grids.prod(-1).tolist())
            return [{"pixel_values": patches[i], "image_grid_thw": grids[i : i + 1]} for i in range(n_images)]
        return [{key: batch[key][i : i + 1] for key in self.keys if key in batch} for i in range(n_images)]

    def join(self, images: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if not images:
            return {}
        joined = {}
        for key in images[0]:
            parts = [image[key] for image in images]
            if not self.mrope and parts[0].ndim >= 3:
                longest = max(part.shape[1] for part in parts)
                parts = [_pad_dim1(part, longest) for part in parts]
            joined[key] = torch.cat(parts)
        return joined


def _images_of(item: Item) -> list[Any]:
    return [item["image"]] if item.get("image") is not None else []


def _item_parts(item: Item) -> list[dict[str, str]]:
    parts: list[dict[str, str]] = [{"type": "image"}] if item.get("image") is not None else []
    if item.get("text"):
        parts.append({"type": "text", "text": item["text"]})
    return parts


def _text(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


class UniMEV2RerankerProcessor:
    """Renders and tokenizes the reranker's (and the judge's) prompts with a backbone processor; no model inside.

    Args:
        processor: the backbone VLM's processor (Qwen2-VL, Qwen2.5-VL or LLaVA-OneVision), with a chat template.
        template: the pairwise layout and instruction (:data:`RERANK_TEMPLATE`, :data:`JUDGE_TEMPLATE`, or a bare
            instruction string for the judge layout).
        listwise_prompt: the listwise instruction.
        yes_token, no_token: the pairwise answers; each must be a single token.
        image_resize: resize every image to ``image_resize``² first (the authors' rerank evaluation: 1344).
        min_pixels, max_pixels: the Qwen-VL image processor's pixel budget per image (set on ``processor``).
    """

    def __init__(
        self,
        processor: Any,
        template: str | PairTemplate = RERANK_TEMPLATE,
        listwise_prompt: str = RERANK_LIST_PROMPT,
        yes_token: str = "Yes",
        no_token: str = "No",
        image_resize: int | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ):
        if isinstance(processor, UniMEV2RerankerProcessor):
            processor = processor.backbone
        image_token = getattr(processor, "image_token", None)
        if image_token is None or getattr(processor, "tokenizer", None) is None:
            raise ValueError(f"{type(processor).__name__} is not a vision-language processor with an image token")
        self.backbone = processor
        self.template = as_template(template)
        self.listwise_prompt = listwise_prompt
        self.image_resize = image_resize
        self.image_token = image_token
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(image_token)
        self.yes_token_id = answer_token_id(self.tokenizer, yes_token)
        self.no_token_id = answer_token_id(self.tokenizer, no_token)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.tokenizer.eos_token_id
        names = getattr(getattr(processor, "image_processor", None), "model_input_names", ())
        self.uses_mrope = "image_grid_thw" in names
        self.image_inputs = ImageInputs(self.uses_mrope)
        if self.uses_mrope:  # LLaVA-OneVision's image processor has no pixel budget
            set_pixel_budget(processor, min_pixels, max_pixels)

    @classmethod
    def from_config(cls, processor: Any, config: UniMEV2RerankerConfig) -> UniMEV2RerankerProcessor:
        """The processor of a reranker with ``config`` (layout, prompts, answer words, image settings)."""
        base = RERANK_TEMPLATE if config.pair_format == "reranker" else JUDGE_TEMPLATE
        return cls(
            processor,
            base.with_prompt(config.pairwise_prompt),
            listwise_prompt=config.listwise_prompt,
            yes_token=config.yes_token,
            no_token=config.no_token,
            image_resize=config.image_resize,
            min_pixels=config.min_pixels,
            max_pixels=config.max_pixels,
        )

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> UniMEV2RerankerProcessor:
        """The processor of a saved reranker (its config's settings) or of a plain VLM checkpoint (the judge
        layout); ``kwargs`` name :class:`UniMEV2RerankerConfig` fields that override the saved ones."""
        config_dict, _ = UniMEV2RerankerConfig.get_config_dict(name_or_path)
        if config_dict.get("model_type") == UniMEV2RerankerConfig.model_type:
            config = UniMEV2RerankerConfig.from_dict({**config_dict, **kwargs})
        else:
            config = UniMEV2RerankerConfig(pair_format=kwargs.pop("pair_format", "judge"), **kwargs)
        return cls.from_config(AutoProcessor.from_pretrained(name_or_path, trust_remote_code=False), config)

    def save_pretrained(self, save_directory: str, **kwargs: Any) -> Any:
        """Save the backbone processor (the reranker's settings live in its config)."""
        return self.backbone.save_pretrained(save_directory, **kwargs)

    @property
    def tokenizer(self) -> Any:
        return self.backbone.tokenizer

    @property
    def image_processor(self) -> Any:
        return self.backbone.image_processor

    # ------------------------------------------------------------------------------------------------- items
    def prepare(self, item: Item, name: str) -> dict[str, Any]:
        """One item ready to render (see :func:`prepare_item`), with this processor's ``image_resize``."""
        return prepare_item(item, name, self.image_resize)

    def _prepare_pairs(self, query: Item, candidates: Sequence[Item], where: str) -> tuple[dict, list[dict]]:
        if len(candidates) == 0:
            raise ValueError(f"{where}no candidates to score or rerank (an empty candidate list)")
        prepared = [self.prepare(c, f"{where}candidate {i}") for i, c in enumerate(candidates)]
        return self.prepare(query, f"{where}query"), prepared

    # ------------------------------------------------------------------------------------------------- rendering
    def pair_messages(self, query: Item, candidate: Item) -> list[dict[str, Any]]:
        """The chat messages of one pair (prepared items): one user turn in the configured layout."""
        template = self.template
        content = [_text(template.prompt), _text(template.query_label), *_item_parts(query)]
        content += [_text(template.candidate_label), *_item_parts(candidate)]
        if template.end:
            content.append(_text(template.end))
        return [{"role": "user", "content": content}]

    def listwise_messages(
        self, query: Item, candidates: Sequence[Item], answer: int | None = None
    ) -> list[dict[str, Any]]:
        """The chat messages of a listwise prompt (prepared items); with the assistant's answer turn when
        ``answer`` (the 1-based number of the chosen candidate) is given."""
        content = [_text(self.listwise_prompt), _text("Query:"), *_item_parts(query), _text("Candidates:")]
        for number, candidate in enumerate(candidates, start=1):
            content += [_text(f"({number}) "), *_item_parts(candidate)]
        messages = [{"role": "user", "content": content}]
        if answer is not None:
            messages.append({"role": "assistant", "content": [_text(LIST_ANSWER.format(answer))]})
        return messages

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """The chat-template text of ``messages``."""
        return self.backbone.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def render_pair(self, query: Item, candidate: Item) -> str:
        """The chat-template text of one pair (prepared items), ending with the generation prompt."""
        return self.render(self.pair_messages(query, candidate))

    # ------------------------------------------------------------------------------------------------- tokens
    def _image_runs(self, images: Sequence[Any], runs: dict[int, tuple[int, dict]]) -> None:
        """Add to ``runs`` (keyed by ``id(image)``) each new image's run length and inputs: one processor call."""
        new = list({id(image): image for image in images if id(image) not in runs}.values())
        if not new:
            return
        batch = self.backbone(text=[self.image_token] * len(new), images=new, padding=True, return_tensors="pt")
        counts = (batch["input_ids"] == self.image_token_id).sum(-1).tolist()
        for image, count, inputs in zip(new, counts, self.image_inputs.split(batch, len(new))):
            runs[id(image)] = (int(count), inputs)

    def _tokenize(self, texts: Sequence[str], images: Sequence[Sequence[Any]]) -> list[_Tokens]:
        """Tokenize each whole text and splice in its images' runs (``images[i]``: the images of ``texts[i]`` in
        order; each distinct image is processed once)."""
        runs: dict[int, tuple[int, dict]] = {}
        self._image_runs([image for row in images for image in row], runs)
        encoded = self.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        out = []
        for row, (ids, offsets) in enumerate(zip(encoded["input_ids"], encoded["offset_mapping"])):
            slots = [i for i, token in enumerate(ids) if token == self.image_token_id]
            if len(slots) != len(images[row]):
                raise ValueError(
                    f"the rendered prompt holds {len(slots)} image tokens for {len(images[row])} image(s); does a "
                    f"text contain {self.image_token!r}?"
                )
            out.append(self._splice(ids, offsets, slots, [runs[id(image)] for image in images[row]]))
        return out

    def _splice(
        self, ids: list[int], offsets: list[tuple[int, int]], slots: list[int], runs: list[tuple[int, dict]]
    ) -> _Tokens:
        spliced: list[int] = []
        spans: list[tuple[int, int]] = []
        index: list[int] = []
        start = 0
        for slot, (count, _) in zip(slots, runs):
            index += range(len(spliced), len(spliced) + slot - start)
            spliced += ids[start:slot]
            spans.append((len(spliced), len(spliced) + count))
            index.append(len(spliced))
            spliced += [self.image_token_id] * count
            start = slot + 1
        index += range(len(spliced), len(spliced) + len(ids) - start)
        spliced += ids[start:]
        return _Tokens(spliced, spans, [inputs for _, inputs in runs], list(offsets), index)

    @staticmethod
    def _shared_length(tokens: Sequence[_Tokens], query_images: int) -> int:
        """Tokens the pairs share: their longest common prefix, at most each pair's length − 1, ending before
        every candidate image and splitting no image run."""
        lengths = [len(t.ids) for t in tokens]
        ids = torch.full((len(tokens), max(lengths)), -1, dtype=torch.long)
        for row, t in enumerate(tokens):
            ids[row, : len(t.ids)] = torch.tensor(t.ids, dtype=torch.long)
        cut = int((ids == ids[:1]).all(0).long().cumprod(0).sum())
        cut = min([cut, min(lengths) - 1] + [start for t in tokens for start, _ in t.spans[query_images:]])
        moved = True
        while moved:
            inside = [start for t in tokens for start, end in t.spans if start < cut < end]
            moved = bool(inside)
            cut = min(inside, default=cut)
        return max(cut, 0)

    def encode_pairs(self, query: Item, candidates: Sequence[Item], where: str = "") -> EncodedPairs:
        """A query's pairs, tokenized whole and split into the shared prefix and one suffix per candidate.

        Items are raw (markers, image paths); ``where`` prefixes the names in errors (e.g. ``"query 3 "``).
        """
        query, candidates = self._prepare_pairs(query, candidates, where)
        texts = [self.render_pair(query, candidate) for candidate in candidates]
        tokens = self._tokenize(texts, [_images_of(query) + _images_of(c) for c in candidates])
        cut = self._shared_length(tokens, len(_images_of(query)))
        shared = sum(end <= cut for _, end in tokens[0].spans)
        prefix = Piece(torch.tensor(tokens[0].ids[:cut], dtype=torch.long), tokens[0].images[:shared])
        suffixes = [Piece(torch.tensor(t.ids[cut:], dtype=torch.long), t.images[shared:]) for t in tokens]
        return EncodedPairs(prefix, suffixes)

    def inputs(self, pieces: Sequence[Piece]) -> dict[str, torch.Tensor]:
        """Model inputs of token pieces (one row each, right-padded), their images joined in token order."""
        ids = pad_sequence([p.input_ids for p in pieces], batch_first=True, padding_value=self.pad_token_id)
        lengths = torch.tensor([len(p) for p in pieces])
        mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
        batch: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
        if self.uses_mrope:
            batch["mm_token_type_ids"] = ((ids == self.image_token_id) & mask.bool()).int()
        batch.update(self.image_inputs.join([image for p in pieces for image in p.images]))
        return batch

    def pair_inputs(self, query: Item, candidate: Item) -> dict[str, torch.Tensor]:
        """Model inputs (batch of 1) of one whole pair, ending with the generation prompt."""
        return self.inputs([self.encode_pairs(query, [candidate]).pair(0)])

    def listwise_piece(self, query: Item, candidates: Sequence[Item]) -> Piece:
        """The listwise prompt (query and numbered candidates, the generation prompt last) as one token piece."""
        query, candidates = self._prepare_pairs(query, candidates, "")
        return self._listwise_piece(query, candidates)

    def _listwise_piece(self, query: dict, candidates: Sequence[dict]) -> Piece:
        text = self.render(self.listwise_messages(query, candidates))
        (tokens,) = self._tokenize([text], [_listwise_images(query, candidates)])
        return Piece(torch.tensor(tokens.ids, dtype=torch.long), tokens.images)

    def listwise_inputs(self, query: Item, candidates: Sequence[Item]) -> dict[str, torch.Tensor]:
        """Model inputs (batch of 1) of the listwise prompt."""
        return self.inputs([self.listwise_piece(query, candidates)])

    # ------------------------------------------------------------------------------------------------- training
    def pair_row(
        self, query: Item, candidate: Item, label: bool, candidate_lm: bool = False, where: str = ""
    ) -> dict[str, torch.Tensor]:
        """A pairwise training row: the pair's inputs (batch of 1) and ``labels`` ``(1,)``, the answer token id
        (``Yes`` when ``label``). ``candidate_lm`` adds ``candidate_lm_mask`` ``(1, L)``: the tokens that hold the
        candidate's text, in a ``Yes`` row (the targets of the optional candidate LM loss)."""
        query, (candidate,) = self._prepare_pairs(query, [candidate], where)
        text = self.render_pair(query, candidate)
        (tokens,) = self._tokenize([text], [_images_of(query) + _images_of(candidate)])
        row = self.inputs([Piece(torch.tensor(tokens.ids, dtype=torch.long), tokens.images)])
        row["labels"] = torch.tensor([self.yes_token_id if label else self.no_token_id])
        if candidate_lm:
            mask = torch.zeros_like(row["input_ids"], dtype=torch.bool)
            if label and candidate["text"]:
                start = text.rindex(candidate["text"])
                for token, (begin, end) in enumerate(tokens.offsets):
                    if end > begin and begin < start + len(candidate["text"]) and end > start:
                        mask[0, tokens.index[token]] = True
            row["candidate_lm_mask"] = mask
        return row

    def listwise_row(self, query: Item, candidates: Sequence[Item], position: int) -> dict[str, torch.Tensor]:
        """A listwise training row (batch of 1): the prompt, then the answer turn ``Ans: (position + 1)`` as the chat
        template closes it (``<|im_end|>\\n`` for ChatML); ``labels`` ``-100`` except on the answer turn's tokens."""
        query, candidates = self._prepare_pairs(query, candidates, "")
        prompt = self.render(self.listwise_messages(query, candidates))
        full = self.render(self.listwise_messages(query, candidates, position + 1), add_generation_prompt=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template does not continue the generation prompt with the assistant's turn")
        images = _listwise_images(query, candidates)
        prompt_tokens, tokens = self._tokenize([prompt, full], [images, images])
        start = len(prompt_tokens.ids)
        if tokens.ids[:start] != prompt_tokens.ids:
            raise ValueError("the answer's first token merges with the end of the prompt; cannot label the answer")
        row = self.inputs([Piece(torch.tensor(tokens.ids, dtype=torch.long), tokens.images)])
        labels = row["input_ids"].clone()
        labels[:, :start] = IGNORE_INDEX
        row["labels"] = labels
        return row

    def merge_rows(self, rows: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Right-pad training rows (batch of 1 each) into one batch: token sequences padded (``input_ids`` with the
        pad id, ``labels`` with -100, masks with 0), answer ids ``(1,)`` and image inputs concatenated in order."""
        image_keys = self.image_inputs.keys
        keys = [
            key
            for key in dict.fromkeys(key for row in rows for key, value in row.items() if value is not None)
            if key not in image_keys
        ]
        batch: dict[str, torch.Tensor] = {}
        for key in keys:
            if key in _SEQUENCE_KEYS and next(row[key] for row in rows if row.get(key) is not None).ndim == 2:
                value = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX}.get(key, 0)
                parts = [
                    row[key][0] if row.get(key) is not None else torch.zeros_like(row["attention_mask"][0])
                    for row in rows
                ]
                batch[key] = pad_sequence(parts, batch_first=True, padding_value=value)
            else:
                batch[key] = torch.cat([row[key] for row in rows if row.get(key) is not None])
        images = [{key: row[key] for key in image_keys if key in row} for row in rows if "pixel_values" in row]
        batch.update(self.image_inputs.join(images))
        return batch


def _listwise_images(query: Item, candidates: Sequence[Item]) -> list[Any]:
    return _images_of(query) + [image for candidate in candidates for image in _images_of(candidate)]
