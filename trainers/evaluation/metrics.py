"""The metrics of the paper's tables, on score matrices, with one tie rule: a tie never favours the ground truth.

* MMEB precision@1 — a row is a hit only when its ground truth (candidate 0) scores **strictly** above every other
  candidate. The authors' ``argmax`` returns the first maximum, so a tie with index 0 counted as a hit there and a
  collapsed model (all embeddings equal) scored 100 %.
* Recall@k — a query is a hit at ``k`` when fewer than ``k`` non-relevant candidates score **at least** as high as
  its best relevant candidate (other relevant candidates never push it down: with five captions per image, any of
  them is a hit).
* SugarCrepe accuracy — an item is correct when cos(image, positive) is **strictly** above cos(image, negative).

The same rule applies to a reranked list: a candidate list ordered best first (:func:`ranked_hits`).
docs/evaluation.md has the MMEB task table (:data:`MMEB_TASKS`) and how the means are taken.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class MMEBTask:
    """One MMEB dataset: its meta-task and whether it is out of distribution (not in MMEB-train)."""

    name: str
    meta_task: str
    ood: bool


def _tasks(meta_task: str, ind: str, ood: str) -> list[MMEBTask]:
    return [MMEBTask(n, meta_task, False) for n in ind.split()] + [MMEBTask(n, meta_task, True) for n in ood.split()]


MMEB_META_TASKS = ("classification", "vqa", "retrieval", "grounding")
MMEB_TASKS: tuple[MMEBTask, ...] = tuple(
    _tasks("classification", "ImageNet-1K N24News HatefulMemes VOC2007 SUN397",
           "Place365 ImageNet-A ImageNet-R ObjectNet Country211")
    + _tasks("vqa", "OK-VQA A-OKVQA DocVQA InfographicsVQA ChartQA Visual7W", "ScienceQA VizWiz GQA TextVQA")
    + _tasks("retrieval", "VisDial CIRR VisualNews_t2i VisualNews_i2t MSCOCO_t2i MSCOCO_i2t NIGHTS WebQA",
             "FashionIQ Wiki-SS-NQ OVEN EDIS")
    + _tasks("grounding", "MSCOCO", "RefCOCO RefCOCO-Matching Visual7W-Pointing")
)  # fmt: skip
"""The 36 MMEB-eval datasets (10 classification, 10 VQA, 12 retrieval, 4 grounding; 20 IND, 16 OOD)."""

SUGARCREPE_SUBSETS = ("replace-obj", "replace-att", "replace-rel", "swap-obj", "swap-att", "add-obj", "add-att")
SUGARCREPE_GROUPS = ("replace", "swap", "add")


def hits_at_k(scores: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int]) -> dict[int, torch.Tensor]:
    """``{k: bool (n,)}``: query ``i`` is a hit at ``k`` when fewer than ``k`` non-relevant candidates score at least
    as high as its best relevant one (ties count against the query).

    Args:
        scores: ``(n_queries, n_candidates)`` similarities.
        relevant: same shape, True where the candidate is a right answer (each row needs one).
        ks: cut-offs, e.g. ``(1, 5, 10)``.
    """
    if scores.shape != relevant.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and relevant {tuple(relevant.shape)} differ in shape")
    if not bool(relevant.any(dim=1).all()):
        raise ValueError(f"query {int((~relevant.any(dim=1)).nonzero()[0])} has no relevant candidate")
    best = scores.masked_fill(~relevant, float("-inf")).max(dim=1, keepdim=True).values
    rank = ((scores >= best) & ~relevant).sum(dim=1)  # 0 = strictly first
    return {k: rank < k for k in ks}


def is_hit(scores: torch.Tensor) -> bool:
    """True when candidate 0 (the ground truth) scores strictly above every other candidate (MMEB's row)."""
    relevant = torch.zeros(1, scores.numel(), dtype=torch.bool)
    relevant[0, 0] = True
    return bool(hits_at_k(scores.reshape(1, -1), relevant, (1,))[1][0])


def pessimistic_order(scores: Sequence[float] | np.ndarray, relevant: Sequence[bool] | np.ndarray) -> list[int]:
    """Candidate indices best first; among equal scores the relevant candidates come last (for top-k cuts)."""
    scores, relevant = np.asarray(scores, dtype=np.float64), np.asarray(relevant, dtype=bool)
    return np.lexsort((relevant, -scores)).tolist()


def ranked_hits(ranking: Sequence[int], relevant: Sequence[bool] | np.ndarray, ks: Sequence[int]) -> dict[int, bool]:
    """``{k: hit}`` for a candidate list ordered best first (e.g. after reranking): any relevant one in the top k."""
    relevant = np.asarray(relevant, dtype=bool)
    first = next((position for position, index in enumerate(ranking) if relevant[index]), len(ranking))
    return {k: first < k for k in ks}


def pairwise_accuracy(positive_scores: torch.Tensor, negative_scores: torch.Tensor) -> float:
    """Fraction of items whose positive scores strictly above its negative (SugarCrepe)."""
    if positive_scores.numel() == 0:
        raise ValueError("no items to score")
    return float((positive_scores > negative_scores).float().mean())


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; ``nan`` when empty (a group with no evaluated dataset)."""
    return float(sum(values) / len(values)) if values else float("nan")


def aggregate_mmeb(per_dataset: Mapping[str, float], tasks: Sequence[MMEBTask] = MMEB_TASKS) -> dict[str, float]:
    """Meta-task, IND, OOD and overall means of per-dataset precisions (each mean over the datasets present).

    A dataset not in ``tasks`` (e.g. one of mini-MMEB) counts in ``overall`` only, unless ``tasks`` names it.
    """
    known = {task.name: task for task in tasks}
    out = {f"meta/{meta}": mean([v for n, v in per_dataset.items() if n in known and known[n].meta_task == meta])
           for meta in dict.fromkeys(t.meta_task for t in tasks)}  # fmt: skip
    out["ind"] = mean([v for n, v in per_dataset.items() if n in known and not known[n].ood])
    out["ood"] = mean([v for n, v in per_dataset.items() if n in known and known[n].ood])
    out["overall"] = mean(list(per_dataset.values()))
    return out


def sugarcrepe_groups(per_subset: Mapping[str, float]) -> dict[str, float]:
    """Means of the replace / swap / add subsets present (subset names ``replace-obj`` or ``replace_obj``)."""
    return {
        group: mean([v for name, v in per_subset.items() if name.replace("_", "-").startswith(group + "-")])
        for group in SUGARCREPE_GROUPS
    }


METRIC_DIR = Path(__file__).with_name("mmeb_precision_at_1")
"""The folder of the ``evaluate`` metric module (``evaluate.load(str(METRIC_DIR))``, works offline)."""


def load_mmeb_metric() -> Any:
    """MMEB precision@1 (ties are misses) as an ``evaluate`` metric loaded from this repository, offline."""
    import evaluate

    return evaluate.load(str(METRIC_DIR))
