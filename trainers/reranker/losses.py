"""The reranker's losses (docs/reranker.md): ``L = pair_weight · L_pair + list_weight · L_list``.

**Pairwise.** The causal-LM cross-entropy over the **full vocabulary** at the last prompt position of each pair
(right after the generation prompt: the position whose ``Yes``/``No`` logits the judge reads), target ``Yes`` for a
matching pair and ``No`` otherwise.

**Listwise.** The cross-entropy of the answer tokens ``Ans: (i)`` of a listwise row, each predicted from the
position before.

Optional, off by default: ``candidate_lm_weight > 0`` adds the causal-LM cross-entropy of the candidate's text
tokens of the **"Yes"** pairs (the positive's text given the prompt and the query: captioning / answering),

    L_pair + w · mean_{candidate text tokens of Yes pairs} −log p(token | prefix)

It is not part of the paper's objective. It exists for models trained from scratch (the tiny judge recipe,
``examples/configs/reranker/tiny_judge.yaml``), which otherwise never leave the ``ln 2`` plateau: "Yes"/"No"
alone is a second-order signal, while predicting the positive's words from the image is first-order (measurements
in docs/judge_training.md). A pretrained model should not need it.

Every loss goes through the model's own ``forward`` (DDP / PEFT wrappers stay in the loop) and applies the LM head
only at the positions it needs (:func:`logits_at`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from .collator import IGNORE_INDEX


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
