"""UniME-V2-Reranker training: ``L = L_pair + L_list`` (docs/reranker.md); the tiny judge is its pairwise half.

**Pairwise.** A pair (query, candidate) is rendered exactly as the scoring core
(:class:`~unime_v2.modeling_unime_v2.scoring_unime_v2.JudgeScorer`) renders it — same chat template, same
prefix/suffix token pieces, same image processing — and the loss is the causal-LM cross-entropy over the **full
vocabulary** at the last prompt position (right after the generation prompt: the position whose ``Yes``/``No``
logits the scorer reads), target ``Yes`` for a matching pair and ``No`` otherwise. Per training record: (query,
positive) → "Yes" and (query, hardest negative by judge score) → "No".

**Listwise.** The query and x + 1 numbered candidates — the top-x negatives by judge score (default 5) and the
positive at a uniformly random position among all x + 1 — then the answer ``Ans: (i)`` (1-based); labels only on
the answer's tokens (tokenized after the generation prompt, as generation produces them).

Both halves weigh 1 (configurable) and are logged separately (``pair_loss``, ``list_loss``).

Pieces:

* :class:`RerankerCollator` — pair dicts (``query``, ``candidate``, ``label``: what
  :class:`~unime_v2.data_builders.formats.judge_pairs.JudgePairDataset` yields) and/or training records
  (``query``, ``positive``, ``negatives``, ``scores``: what
  :class:`~unime_v2.data_builders.formats.training_records.TrainingRecords` yields) → a right-padded pair batch
  with ``labels`` (the answer token id per pair) and, for records, a ``listwise`` sub-batch with token ``labels``
  (``-100`` except on the answer).
* :func:`logits_at`, :func:`answer_logits` — full-vocabulary logits at chosen positions through the model's own
  ``forward`` (DDP / PEFT wrappers stay in the loop), the LM head applied only there.
* :func:`judge_losses` — the pairwise loss (plus the optional term below); :func:`listwise_loss`;
  :func:`reranker_losses` — both, weighted.
* :class:`UniMEV2RerankerTrainer` — ``Trainer`` with that loss; the collator consumes whole records, so no column
  is removed; ``model_accepts_loss_kwargs = False`` (the loss is a mean: Trainer divides by accumulation).

Optional, off by default: ``candidate_lm_weight > 0`` adds the causal-LM cross-entropy of the candidate's text
tokens of the **"Yes"** pairs (the positive's text given the prompt and the query: captioning / answering),

    L = L_pair + w · mean_{candidate text tokens of Yes pairs} −log p(token | prefix)

It is not part of the paper's objective. It exists for models trained from scratch (the tiny CPU judge,
:mod:`unime_v2.trainers.tiny_judge`), which otherwise never leave the ``ln 2`` plateau: "Yes"/"No" alone is a
second-order signal, while predicting the positive's words from the image is first-order (measurements in
``docs/judge_training.md``). A pretrained model should not need it (not measured here).
"""

from __future__ import annotations

import inspect
import numbers
import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from transformers import Trainer

from unime_v2.modeling_unime_v2.modeling_unime_v2_reranker import UniMEV2Reranker, prepare_item
from unime_v2.modeling_unime_v2.prompting_unime_v2 import JUDGE_PROMPT, RERANK_LIST_PROMPT, Piece
from unime_v2.modeling_unime_v2.scoring_unime_v2 import JudgeScorer

from .hub_push import HubMixin


IGNORE_INDEX = -100


def _label_of(feature: Mapping[str, Any], index: int) -> bool:
    label = feature.get("label")
    if isinstance(label, str) and label in ("Yes", "No"):
        return label == "Yes"
    if isinstance(label, numbers.Integral) and int(label) in (0, 1):
        return bool(int(label))
    if isinstance(label, torch.Tensor) and label.numel() == 1 and int(label) in (0, 1):
        return bool(int(label))
    raise ValueError(f"pair {index}: label must be 1/0, True/False or 'Yes'/'No', got {label!r}")


_SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids", "labels")


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
    """Builds judge-prompt batches for pairwise training: each row is ``JudgeScorer.full_pair_inputs``.

    Each feature is ``{"query": {"text", "image"}, "candidate": {"text", "image"}, "label": 1 | 0}`` (also
    ``True``/``False`` or ``"Yes"``/``"No"``; extra keys are ignored), what
    :class:`~unime_v2.data_builders.formats.judge_pairs.JudgePairDataset` yields. Every pair is encoded by the judge itself
    (``scorer.full_pair_inputs``: same chat template, same prefix + suffix token pieces, same image processing),
    so the training prompt is token for token the prompt the judge scores.

    Returns CPU tensors: ``input_ids``, ``attention_mask`` (right padding), the image inputs of the model family
    (``pixel_values`` + ``image_grid_thw`` and ``mm_token_type_ids`` for Qwen-VL; ``pixel_values`` + ``image_sizes``
    for LLaVA-OneVision) and ``labels``: ``(n,)`` answer token ids (``Yes`` or ``No``).

    Args:
        scorer: a :class:`~unime_v2.modeling_unime_v2.scoring_unime_v2.JudgeScorer` (use :meth:`for_model` to wrap the model being
            trained; only its prompt rendering is used, never its forward).
        candidate_lm: also return ``candidate_lm_mask`` ``(n, L)`` bool: the positions of the candidate's text
            tokens in "Yes" rows (targets of the optional candidate LM loss).
        listwise: build the listwise row of each training record (off: records give their two pairs only).
        num_list_negatives: x, the top negatives by judge score in a listwise row (authors: 5).
        num_pair_negatives: "No" pairs per record, the hardest negatives by judge score (paper: 1).
        listwise_prompt: the listwise instruction.
        seed: seeds the positive's position in listwise rows.
    """

    def __init__(
        self,
        scorer: JudgeScorer,
        candidate_lm: bool = False,
        listwise: bool = True,
        num_list_negatives: int = 5,
        listwise_prompt: str = RERANK_LIST_PROMPT,
        seed: int = 0,
        num_pair_negatives: int = 1,
    ):
        for name, value in (("num_list_negatives", num_list_negatives), ("num_pair_negatives", num_pair_negatives)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.num_pair_negatives = num_pair_negatives
        self.scorer = scorer
        self.candidate_lm = candidate_lm
        self.listwise = listwise
        self.num_list_negatives = num_list_negatives
        self.listwise_prompt = listwise_prompt
        self.rng = random.Random(seed)
        self.yes_token_id = scorer.yes_token_id
        self.no_token_id = scorer.no_token_id
        tokenizer = scorer.processor.tokenizer
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else tokenizer.eos_token_id

    @classmethod
    def for_model(
        cls,
        model: torch.nn.Module,
        processor: Any,
        prompt: str = JUDGE_PROMPT,
        yes_token: str = "Yes",
        no_token: str = "No",
        **kwargs: Any,
    ) -> RerankerCollator:
        """A collator for ``model`` (plain, PEFT- or DDP-wrapped) and its processor; keeps the model's train mode.

        A :class:`UniMEV2Reranker` brings its own layout, prompts and answer words (``prompt``, ``yes_token`` and
        ``no_token`` then do not apply); a plain VLM gets the judge layout. ``kwargs`` go to the constructor.
        """
        inner = _unwrap(model)
        was_training = inner.training
        if isinstance(inner, UniMEV2Reranker):
            inner.attach_processor(processor)
            scorer = inner.scorer
            kwargs.setdefault("listwise_prompt", inner.config.listwise_prompt)
        else:
            scorer = JudgeScorer(inner, processor, prompt=prompt, yes_token=yes_token, no_token=no_token)
        inner.train(was_training)  # JudgeScorer puts its model in eval mode
        return cls(scorer, **kwargs)

    def pair_inputs(self, query: Mapping[str, Any], candidate: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """One pair's model inputs (batch of 1, CPU)."""
        inputs = self.scorer.full_pair_inputs(query, candidate)
        return {key: value.cpu() if isinstance(value, torch.Tensor) else value for key, value in inputs.items()}

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
            batch["listwise"] = self.merge(lists)
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
        query = prepare_item(record["query"], f"record {index} query")
        positive = prepare_item(record["positive"], f"record {index} positive")
        negatives = [prepare_item(n, f"record {index} negative {j}") for j, n in enumerate(negatives)]
        hardest = hardest_first(scores[1:])[: self.num_pair_negatives]
        pairs = [{"query": query, "candidate": positive, "label": 1}]
        pairs += [{"query": query, "candidate": negatives[j], "label": 0} for j in hardest]
        if not self.listwise:
            return pairs, None
        candidates, position = listwise_candidates(positive, negatives, scores[1:], self.num_list_negatives, self.rng)
        return pairs, self.listwise_row(query, candidates, position)

    def listwise_row(self, query: Mapping[str, Any], candidates: Sequence[Mapping], position: int) -> dict:
        """Inputs (batch of 1, CPU) of the listwise prompt + answer ``Ans: (position + 1)``, ``labels`` on the answer
        tokens only."""
        prompt = self.scorer.encode_listwise(self.listwise_prompt, query, candidates)
        answer = self.scorer.processor.tokenizer(f"Ans: ({position + 1})", add_special_tokens=False)["input_ids"]
        answer = torch.tensor(answer, dtype=prompt.input_ids.dtype)
        inputs = self.scorer.piece_inputs(Piece(torch.cat([prompt.input_ids, answer]), prompt.images))
        row = {key: value.cpu() if isinstance(value, torch.Tensor) else value for key, value in inputs.items()}
        labels = torch.full_like(row["input_ids"], IGNORE_INDEX)
        labels[0, len(prompt.input_ids) :] = answer
        row["labels"] = labels
        return row

    def pair_batch(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The pair rows of ``features`` (``query``, ``candidate``, ``label``) with their answer ids as ``labels``."""
        rows, labels, spans = [], [], []
        for index, feature in enumerate(features):
            if "query" not in feature or "candidate" not in feature:
                raise KeyError(
                    f"pair {index}: a judge pair needs 'query' and 'candidate' items, got {sorted(feature)}"
                )
            yes = _label_of(feature, index)
            labels.append(self.yes_token_id if yes else self.no_token_id)
            query = prepare_item(feature["query"], f"pair {index} query")
            rows.append(self.pair_inputs(query, prepare_item(feature["candidate"], f"pair {index} candidate")))
            if self.candidate_lm:
                ids = rows[-1]["input_ids"][0]
                spans.append(self._candidate_span(ids, feature["candidate"], index) if yes else None)
        batch = self.merge(rows)
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
        if self.candidate_lm:
            mask = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
            for row, span in enumerate(spans):
                if span is not None:
                    mask[row, span[0] : span[1]] = True
            batch["candidate_lm_mask"] = mask
        return batch

    def _candidate_span(self, ids: torch.Tensor, candidate: Mapping[str, Any], index: int) -> tuple[int, int] | None:
        """``(start, end)`` of the candidate's text tokens in a pair's ids: the last occurrence of the text's own
        tokenization (the candidate comes last in the prompt); ``None`` for a candidate without text."""
        text = candidate.get("text")
        if not text:
            return None
        wanted = self.scorer.processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        n = len(wanted)
        wanted_t = torch.tensor(wanted, dtype=ids.dtype)
        for start in range(len(ids) - n, 0, -1):
            if torch.equal(ids[start : start + n], wanted_t):
                return start, start + n
        raise ValueError(
            f"pair {index}: the candidate text {text[:60]!r} is not tokenized the same inside the judge prompt as "
            "alone (a token merges across its boundary), so its LM targets cannot be located; use candidate_lm=False"
        )

    def merge(self, rows: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Right-pad the token rows of single-pair inputs into one batch; concatenate their image inputs in order
        (image tensors with a per-image patch axis, LLaVA-OneVision's ``pixel_values``, are zero-padded on it)."""
        keys = list(dict.fromkeys(key for row in rows for key, value in row.items() if value is not None))
        batch: dict[str, torch.Tensor] = {}
        for key in keys:
            if key in _SEQUENCE_KEYS:
                value = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX}.get(key, 0)
                parts = [
                    row[key][0] if row.get(key) is not None else torch.zeros_like(row["attention_mask"][0])
                    for row in rows
                ]
                batch[key] = pad_sequence(parts, batch_first=True, padding_value=value)
                continue
            parts = [row[key] for row in rows if row.get(key) is not None]
            if parts[0].ndim >= 3:
                longest = max(part.shape[1] for part in parts)
                parts = [_pad_dim1(part, longest) for part in parts]
            batch[key] = torch.cat(parts)
        return batch


def _pad_dim1(tensor: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - tensor.shape[1]
    if missing == 0:
        return tensor
    return F.pad(tensor, [0, 0] * (tensor.ndim - 2) + [0, missing])


def _accepts(model: torch.nn.Module, name: str) -> bool:
    forward = getattr(model, "forward", None)
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _right_padded_last(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token; raises unless rows are right-padded (``1…1 0…0``)."""
    last = mask.sum(-1) - 1
    steps = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    if bool(((mask.cumsum(-1) == steps).sum(-1) != mask.sum(-1)).any()) or bool((last < 0).any()):
        raise ValueError("the judge loss needs right-padded, non-empty rows (attention_mask 1…1 0…0)")
    return last


def logits_at(
    model: torch.nn.Module, inputs: Mapping[str, Any], rows: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """Full-vocabulary logits ``(m, V)`` at ``(rows[i], positions[i])``, from one ``model(**inputs)`` call.

    The LM head is applied only at the distinct positions asked for (``logits_to_keep`` as an index tensor), not
    to the whole sequence; the call goes through the model's own ``forward`` (PEFT / DDP wrappers stay in the loop).
    """
    inputs = {key: value for key, value in inputs.items() if key not in ("labels", "candidate_lm_mask", "listwise")}
    kwargs: dict[str, Any] = {"use_cache": False}
    if _accepts(model, "logits_to_keep"):
        keep, inverse = torch.unique(positions, return_inverse=True)
        logits = model(**inputs, logits_to_keep=keep, **kwargs).logits  # (n, len(keep), V)
        return logits[rows, inverse]
    return model(**inputs, **kwargs).logits[rows, positions]  # (n, L, V) -> (m, V)


def answer_logits(model: torch.nn.Module, inputs: Mapping[str, Any]) -> torch.Tensor:
    """Full-vocabulary logits ``(n, V)`` at each row's last prompt position (right padding: ``mask.sum - 1``), the
    position whose ``Yes``/``No`` logits ``JudgeScorer`` reads."""
    last = _right_padded_last(inputs["attention_mask"])
    return logits_at(model, inputs, torch.arange(len(last), device=last.device), last)


def pairwise_judge_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the full vocabulary (fp32) of ``(n, V)`` answer logits against answer token ids."""
    return F.cross_entropy(logits.float(), labels.to(logits.device))


def judge_losses(
    model: torch.nn.Module, inputs: Mapping[str, Any], candidate_lm_weight: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(loss, answer_logits, candidate_lm_loss)`` of a collated batch in one forward pass.

    ``loss = pairwise_judge_loss + candidate_lm_weight · candidate_lm_loss``; the candidate LM term (mean token
    cross-entropy at the positions of ``inputs["candidate_lm_mask"]``, each predicted from the position before)
    is ``None`` when the weight is 0 or the batch has no such token.
    """
    labels = inputs["labels"]
    last = _right_padded_last(inputs["attention_mask"])
    n = len(last)
    rows = torch.arange(n, device=last.device)
    positions = last
    targets = None
    mask = inputs.get("candidate_lm_mask")
    if candidate_lm_weight:
        if mask is None:
            raise ValueError(
                "candidate_lm_weight > 0 needs batches with candidate_lm_mask (RerankerCollator candidate_lm=True)"
            )
        lm_rows, lm_positions = mask.nonzero(as_tuple=True)
        lm_positions = lm_positions.to(last.device)
        if len(lm_rows):
            targets = inputs["input_ids"][lm_rows, lm_positions]
            rows = torch.cat([rows, lm_rows.to(last.device)])
            positions = torch.cat([positions, lm_positions - 1])
    logits = logits_at(model, inputs, rows, positions)
    answer = logits[:n]
    loss = pairwise_judge_loss(answer, labels)
    lm_loss = None
    if targets is not None:
        lm_loss = F.cross_entropy(logits[n:].float(), targets.to(logits.device))
        loss = loss + candidate_lm_weight * lm_loss
    return loss, answer, lm_loss


def listwise_loss(model: torch.nn.Module, inputs: Mapping[str, Any]) -> torch.Tensor:
    """Mean cross-entropy (fp32, full vocabulary) of the answer tokens of a listwise batch: every position whose
    ``labels`` is not ``-100``, predicted from the position before, in one forward pass."""
    labels = inputs["labels"]
    rows, positions = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
    if not len(rows):
        raise ValueError("the listwise batch has no answer token to learn")
    if bool((positions == 0).any()):
        raise ValueError("a listwise row starts with an answer token: nothing before it to predict it from")
    logits = logits_at(model, inputs, rows, positions - 1)
    return F.cross_entropy(logits.float(), labels[rows, positions].to(logits.device))


def reranker_losses(
    model: torch.nn.Module,
    inputs: Mapping[str, Any],
    pair_weight: float = 1.0,
    list_weight: float = 1.0,
    candidate_lm_weight: float = 0.0,
) -> dict[str, torch.Tensor | None]:
    """``{"loss", "pair_loss", "list_loss", "candidate_lm_loss", "answer_logits"}`` of a collated batch.

    ``loss = pair_weight · L_pair (+ candidate LM term) + list_weight · L_list``; ``list_loss`` is ``None`` when
    the batch has no listwise rows or ``list_weight`` is 0 (then no listwise forward runs).
    """
    pair_loss, answer, lm_loss = judge_losses(model, inputs, candidate_lm_weight)
    loss = pair_weight * pair_loss
    list_loss = None
    if list_weight and inputs.get("listwise") is not None:
        list_loss = listwise_loss(model, inputs["listwise"])
        loss = loss + list_weight * list_loss
    return {
        "loss": loss,
        "pair_loss": pair_loss,
        "list_loss": list_loss,
        "candidate_lm_loss": lm_loss,
        "answer_logits": answer,
    }


class UniMEV2RerankerTrainer(HubMixin, Trainer):
    """``Trainer`` for ``L = L_pair + L_list`` (see the module docstring), with both terms logged separately.

    The training set is training records (listwise + pairwise) or judge pairs (pairwise only: the tiny judge).
    ``data_collator`` defaults to a :class:`RerankerCollator` of ``model`` and ``processing_class``. A pair set that
    can be checked cheaply (:class:`~unime_v2.data_builders.formats.judge_pairs.JudgePairDataset`, or a
    ``datasets.Dataset`` with a ``label`` column) is validated first: every query needs a "Yes" and a "No" pair.
    ``compute_loss(..., return_outputs=True)`` also returns ``{"logits": (n, 2) [Yes, No] logits}`` of the pairs.

    Args:
        pair_weight, list_weight: weights of the two terms (paper: 1 and 1; ``list_weight=0`` is pairwise only).
        candidate_lm_weight: weight of the optional candidate LM term (module docstring; 0 = the paper's loss).
        num_list_negatives: x, the negatives of a listwise row (default collator only).
        num_pair_negatives: "No" pairs per record (default collator only; paper: 1).
        backbone, train_data: what the model card names as the starting checkpoint and the training data
            (default: the backbone's ``_name_or_path``, the training set's ``name``).

    The final ``save_model()`` writes the merged reranker (adapter in ``adapter/``) and its card; ``push_to_hub``
    uploads them in one commit (:class:`~unime_v2.trainers.hub_push.HubMixin`).
        *args, **kwargs: those of ``Trainer``.
    """

    def __init__(
        self,
        *args: Any,
        pair_weight: float = 1.0,
        list_weight: float = 1.0,
        candidate_lm_weight: float = 0.0,
        num_list_negatives: int = 5,
        num_pair_negatives: int = 1,
        backbone: str | None = None,
        train_data: str | None = None,
        **kwargs: Any,
    ):
        for name, value in (("pair_weight", pair_weight), ("list_weight", list_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if candidate_lm_weight < 0:
            raise ValueError(f"candidate_lm_weight must be >= 0, got {candidate_lm_weight}")
        self.pair_weight, self.list_weight = float(pair_weight), float(list_weight)
        self.num_list_negatives, self.num_pair_negatives = num_list_negatives, num_pair_negatives
        self.backbone, self.train_data = backbone, train_data
        self.candidate_lm_weight = float(candidate_lm_weight)
        processor = kwargs.get("processing_class")
        if kwargs.get("data_collator") is None:
            model = kwargs.get("model", args[0] if args else None)
            if processor is None or model is None:
                raise ValueError("UniMEV2RerankerTrainer needs data_collator= or model= and processing_class=")
            kwargs["data_collator"] = RerankerCollator.for_model(
                model,
                processor,
                candidate_lm=self.candidate_lm_weight > 0,
                listwise=self.list_weight > 0,
                num_list_negatives=num_list_negatives,
                num_pair_negatives=num_pair_negatives,
                seed=getattr(kwargs.get("args"), "seed", 0),
            )
        from unime_v2.data_builders.formats.judge_pairs import check_pair_dataset

        if kwargs.get("train_dataset") is not None:
            check_pair_dataset(kwargs["train_dataset"])
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # compute_loss returns a mean: Trainer divides by accumulation
        self._terms: dict[str, list[float]] = {}

    # the collator consumes whole records: keep every column
    def _remove_unused_columns(self, dataset: Any, description: str | None = None) -> Any:
        return dataset

    def _get_collator_with_removed_columns(self, data_collator: Any, description: str | None = None) -> Any:
        return data_collator

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = reranker_losses(model, inputs, self.pair_weight, self.list_weight, self.candidate_lm_weight)
        if model.training:
            for name in ("pair_loss", "list_loss", "candidate_lm_loss"):
                if out[name] is not None:
                    self._terms.setdefault(name, []).append(float(out[name].detach()))
        if not return_outputs:
            return out["loss"]
        collator = self.data_collator
        yes = getattr(collator, "yes_token_id", None)
        no = getattr(collator, "no_token_id", None)
        logits = out["answer_logits"]
        pair = logits[:, [yes, no]].detach() if yes is not None and no is not None else logits.detach()
        return out["loss"], {"logits": pair}

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Adds the mean of each loss term since the last log (``pair_loss``, ``list_loss``, …) to training logs."""
        if "loss" in logs:
            for name, values in self._terms.items():
                logs[name] = round(sum(values) / len(values), 4)
            self._terms = {}
        super().log(logs, *args, **kwargs)

    # ----------------------------------------------------------------------------------------------- the card
    hub_artifact = "reranker"

    def card_train_data(self) -> str | None:
        return self.train_data or getattr(self.train_dataset, "name", None)

    def card_settings(self) -> dict[str, Any]:
        """The training settings the reranker's model card records (the paper's names in docs/method.md)."""
        args = self.args
        model = self.accelerator.unwrap_model(self.model)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        last = {
            key: entry[key] for entry in self.state.log_history for key in ("pair_loss", "list_loss") if key in entry
        }
        lora = getattr(args, "use_lora", False)
        return {
            "backbone": self.backbone or getattr(base.config.backbone_config, "_name_or_path", None),
            "training data": self.card_train_data(),
            "listwise negatives (x)": self.num_list_negatives,
            "pairwise negatives per record": self.num_pair_negatives,
            "loss weights (pair, list)": f"{self.pair_weight}, {self.list_weight}",
            "LoRA (r, alpha, dropout)": f"{args.lora_r}, {args.lora_alpha}, {args.lora_dropout}" if lora else "off",
            "vision tower": "frozen" if getattr(args, "freeze_vision_tower", True) else "trained",
            "learning rate, schedule": f"{args.learning_rate}, {args.lr_scheduler_type}",
            "steps": self.state.global_step,
            "seed": args.seed,
            **{f"final {key}": value for key, value in last.items()},
        }
