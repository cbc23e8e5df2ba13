"""How good is a judge? Its scores against mini-MMEB's oracle, on held-out queries.

For each query the judge scores the query's positive and several candidates, and two figures are reported:

* **ROC-AUC** of score(positive) against score(negatives): the probability that a random positive pair scores
  above a random negative pair (ties count ½), pooled over all queries (``auc``) and per query, then averaged
  (``query_auc``: the fraction of a query's negatives ranked below its positive — what false-negative filtering
  with ``α = s_pos − β`` relies on). A candidate the oracle scores 1.0 meets the query (a false negative of the
  pool) and is left out of the AUC.
* **Spearman** rank correlation between the judge score and ``oracle_score`` over all scored pairs (positives
  included; ties get average ranks).

Two sources of (query, candidates):

* :func:`judge_quality` — query–positive records (mini-MMEB ``train`` style); candidates are in-pool positives of
  other records of the same ``dataset`` (drawn by :func:`~unime_v2.data_builders.formats.judge_pairs.build_judge_pairs`).
* :func:`judge_quality_eval_rows` — MMEB-eval style rows (mini-MMEB ``test``): the ground truth (index 0) and the
  next candidates of the row, which include mini-MMEB's hard distractors (one attribute replaced, …).

The oracle is a measuring stick only: nothing here feeds training. No scipy / sklearn: ranks with numpy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from unime_v2.data_builders.formats.judge_pairs import YES, PairColumns, build_judge_pairs, judge_text


def rankdata(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-based ranks, ties get the average of the ranks they span (like ``scipy.stats.rankdata``)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    # start index of each run of equal values
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0  # mean of ranks start+1 .. end
    return ranks


def roc_auc(positive_scores: Sequence[float], negative_scores: Sequence[float]) -> float:
    """P(score(pos) > score(neg)) + ½ P(tie), by the Mann–Whitney rank sum; ``nan`` if a side is empty."""
    pos = np.asarray(positive_scores, dtype=np.float64).ravel()
    neg = np.asarray(negative_scores, dtype=np.float64).ravel()
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    rank_sum = ranks[: len(pos)].sum()
    return float((rank_sum - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); ``nan`` if either side is constant."""
    rx, ry = rankdata(x), rankdata(y)
    if len(rx) != len(ry):
        raise ValueError(f"spearman needs equal lengths, got {len(rx)} and {len(ry)}")
    if len(rx) < 2:
        return float("nan")
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


@dataclass
class ScoredQuery:
    """One query's judged candidates: index 0 is the positive."""

    source: str
    judge: list[float]
    oracle: list[float] | None


@dataclass
class JudgeQuality:
    """Judge vs oracle on a set of queries (see the module docstring)."""

    auc: float
    query_auc: float
    spearman: float
    num_queries: int
    num_pairs: int
    num_false_negatives: int
    mean_positive_score: float
    mean_negative_score: float
    per_dataset: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def summarize(queries: Sequence[ScoredQuery], per_dataset: bool = True) -> JudgeQuality:
    """Pool scored queries into AUC / per-query AUC / Spearman (and the same per ``dataset``)."""
    pos, neg, query_aucs, judge_all, oracle_all = [], [], [], [], []
    false_negatives = 0
    for q in queries:
        oracle = q.oracle if q.oracle is not None else [1.0] + [0.0] * (len(q.judge) - 1)
        negatives = [s for s, o in zip(q.judge[1:], oracle[1:]) if o < 1.0]
        false_negatives += len(q.judge) - 1 - len(negatives)
        pos.append(q.judge[0])
        neg.extend(negatives)
        if negatives:
            query_aucs.append(roc_auc([q.judge[0]], negatives))
        if q.oracle is not None:
            judge_all.extend(q.judge)
            oracle_all.extend(q.oracle)
    groups: dict[str, dict[str, float]] = {}
    if per_dataset:
        sources = sorted({q.source for q in queries})
        if len(sources) > 1:
            for source in sources:
                sub = summarize([q for q in queries if q.source == source], per_dataset=False)
                groups[source] = {
                    "auc": sub.auc,
                    "query_auc": sub.query_auc,
                    "spearman": sub.spearman,
                    "num_queries": sub.num_queries,
                }
    return JudgeQuality(
        auc=roc_auc(pos, neg),
        query_auc=float(np.mean(query_aucs)) if query_aucs else float("nan"),
        spearman=spearman(judge_all, oracle_all) if judge_all else float("nan"),
        num_queries=len(queries),
        num_pairs=sum(len(q.judge) for q in queries),
        num_false_negatives=false_negatives,
        mean_positive_score=float(np.mean(pos)) if pos else float("nan"),
        mean_negative_score=float(np.mean(neg)) if neg else float("nan"),
        per_dataset=groups,
    )


def _default_oracle(records: Any) -> Callable[[Any, Any], float] | None:
    names = getattr(records, "column_names", None) or (list(records[0]) if len(records) else [])
    if "qry_scene" not in names:
        return None
    from unime_v2.data_builders.mini_mmeb import oracle_score

    return oracle_score


def judge_quality(
    scorer: Any,
    records: Any,
    query_indices: Sequence[int] | None = None,
    pool_indices: Sequence[int] | None = None,
    num_candidates: int = 4,
    seed: int = 0,
    oracle: Callable[[Any, Any], float] | None | str = "auto",
    columns: PairColumns = PairColumns(),
) -> JudgeQuality:
    """Score held-out queries of query–positive ``records`` against their positive and in-pool candidates.

    Args:
        scorer: anything with ``score(query_item, candidate_items) -> array`` (a ``UniMEV2Reranker``).
        records: query–positive records (mini-MMEB ``train`` split or a slice of it).
        query_indices: the held-out queries (default: all records).
        pool_indices: records whose positives are the candidates (default: ``query_indices``).
        num_candidates: in-pool candidates per query besides the positive.
        seed: seeds the candidate draw (per record, as in :func:`build_judge_pairs`).
        oracle: ``oracle(query_record, candidate_record) -> [0, 1]``; ``"auto"`` = mini-MMEB's ``oracle_score``
            when the records carry scene columns, else none (then Spearman is ``nan`` and every candidate counts
            as a negative).
    """
    if oracle == "auto":
        oracle = _default_oracle(records)
    pairs = build_judge_pairs(records, num_candidates, seed, query_indices, pool_indices, columns)
    scored = []
    for query_index, group in pairs.by_query().items():
        group = sorted(group, key=lambda p: p.label != YES)  # positive first
        query_row = records[query_index]
        candidates = [pairs.positive_item(p.candidate_index) for p in group]
        judge = np.asarray(scorer.score(pairs.query_item(query_index), candidates), dtype=np.float64).tolist()
        oracle_scores = None
        if oracle is not None:
            oracle_scores = [1.0] + [float(oracle(query_row, records[p.candidate_index])) for p in group[1:]]
        scored.append(ScoredQuery(group[0].source, judge, oracle_scores))
    return summarize(scored)


def judge_quality_eval_rows(
    scorer: Any,
    rows: Any,
    num_candidates: int = 8,
    oracle: Callable[[Any, Any], float] | None | str = "auto",
) -> JudgeQuality:
    """Score MMEB-eval style rows (``qry_text``, ``qry_image``, ``tgt_text``, ``tgt_image``, ``dataset``; ground
    truth at index 0): the ground truth and the next ``num_candidates`` candidates of each row."""
    if oracle == "auto":
        oracle = _default_oracle(rows)
    scored = []
    for row in rows:
        texts = row["tgt_text"][: num_candidates + 1]
        images = row.get("tgt_image") or [None] * len(texts)
        query = {"text": judge_text(row["qry_text"]), "image": row.get("qry_image")}
        candidates = [{"text": judge_text(t), "image": i} for t, i in zip(texts, images)]
        judge = np.asarray(scorer.score(query, candidates), dtype=np.float64).tolist()
        oracle_scores = None
        if oracle is not None:
            oracle_scores = [1.0] + [float(oracle(row, {"scene": s})) for s in row["tgt_scene"][1 : len(texts)]]
        scored.append(ScoredQuery(str(row.get("dataset", "")), judge, oracle_scores))
    return summarize(scored)


def format_quality_table(results: Mapping[str, JudgeQuality]) -> str:
    """A small markdown table: one row per named result (e.g. "untrained", "trained")."""
    lines = [
        "| judge | AUC | per-query AUC | Spearman vs oracle | mean s(pos) | mean s(neg) | queries | pairs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, q in results.items():
        lines.append(
            f"| {name} | {q.auc:.3f} | {q.query_auc:.3f} | {q.spearman:.3f} | {q.mean_positive_score:.3f} | "
            f"{q.mean_negative_score:.3f} | {q.num_queries} | {q.num_pairs} |"
        )
    return "\n".join(lines)


HELDOUT_TABLES = {
    "heldout_in_pool": "held-out queries, positive + in-pool candidates (other held-out queries' targets)",
    "heldout_hard_distractors": "held-out queries, positive + one-edit hard distractors",
}


def _query_figures(queries: Sequence[ScoredQuery]) -> dict[str, float]:
    """AUC, per-query AUC, Spearman vs the oracle and the share of queries whose positive a negative out-scores."""
    quality = summarize(queries, per_dataset=False)
    beaten = [max(s for s, o in zip(q.judge[1:], q.oracle[1:]) if o < 1.0) > q.judge[0] for q in queries
              if any(o < 1.0 for o in q.oracle[1:])]  # fmt: skip
    return {
        "auc": quality.auc,
        "query_auc": quality.query_auc,
        "spearman": quality.spearman,
        "negative_above_positive": float(np.mean(beaten)) if beaten else float("nan"),
        "num_queries": quality.num_queries,
        "num_pairs": quality.num_pairs,
    }


def _grouped(queries: Sequence[ScoredQuery], meta: Mapping[str, str]) -> dict[str, Any]:
    """``all``, ``per_meta_task`` and ``per_dataset`` figures of :func:`_query_figures`."""
    out: dict[str, Any] = {"all": _query_figures(queries), "per_meta_task": {}, "per_dataset": {}}
    for name in sorted({q.source for q in queries}):
        out["per_dataset"][name] = _query_figures([q for q in queries if q.source == name])
    for task in sorted(set(meta.values())):
        group = [q for q in queries if meta.get(q.source) == task]
        if group:
            out["per_meta_task"][task] = _query_figures(group)
    return out


def heldout_judge_quality(judge: Any, rows: Any, num_candidates: int = 10, seed: int = 0) -> dict[str, Any]:
    """A judge against mini-MMEB's oracle on HELD-OUT rows (facts never in any training data): the figures every
    quickstart summary and the shipped judge's card report.

    * ``heldout_in_pool``: each row's ground truth + ``num_candidates`` ground truths of other held-out rows of
      the same task (seeded draw; a drawn target the oracle scores 1.0 meets the query and is left out);
    * ``heldout_hard_distractors``: each row's ground truth + its first ``num_candidates`` one-edit distractors
      (``tgt_kind`` in :data:`~unime_v2.data_builders.mini_mmeb.ONE_EDIT_KINDS`).

    Each holds ``all``, ``per_meta_task`` and ``per_dataset``: ``auc``, ``query_auc``, ``spearman``,
    ``negative_above_positive`` (the share of queries where some negative scores above the positive: what
    false-negative filtering with ``α = s_pos − β`` turns into lost negatives), ``num_queries``, ``num_pairs``.
    ``rows``: mini-MMEB held-out rows (``mini_mmeb_splits``), with ``tgt_kind`` and the scene columns.
    """
    import random

    from unime_v2.data_builders.mini_mmeb import ONE_EDIT_KINDS, oracle_score

    rows = list(rows)
    meta = {row["dataset"]: row["meta_task"] for row in rows}
    by_task: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_task.setdefault(row["dataset"], []).append(index)
    pool, hard = [], []
    for index, row in enumerate(rows):
        query = {"text": judge_text(row["qry_text"]), "image": row.get("qry_image")}
        images = row.get("tgt_image") or [None] * len(row["tgt_text"])
        others = [j for j in by_task[row["dataset"]] if j != index]
        drawn = random.Random(f"{seed}/in-pool/{index}").sample(others, min(num_candidates, len(others)))
        edits = [j for j, kind in enumerate(row["tgt_kind"]) if kind in ONE_EDIT_KINDS][:num_candidates]
        for kept, items in (
            (pool, [(row["tgt_text"][0], images[0], row["tgt_scene"][0])]
             + [(rows[j]["tgt_text"][0], (rows[j].get("tgt_image") or [None])[0], rows[j]["tgt_scene"][0]) for j in drawn]),
            (hard, [(row["tgt_text"][j], images[j], row["tgt_scene"][j]) for j in [0, *edits]]),
        ):  # fmt: skip
            if len(items) < 2:
                continue
            candidates = [{"text": judge_text(text), "image": image} for text, image, _ in items]
            scores = np.asarray(judge.score(query, candidates), dtype=np.float64).tolist()
            oracle = [1.0] + [float(oracle_score(row, {"scene": scene})) for _, _, scene in items[1:]]
            kept.append(ScoredQuery(row["dataset"], scores, oracle))
    return {"heldout_in_pool": _grouped(pool, meta), "heldout_hard_distractors": _grouped(hard, meta)}


def measure_heldout_judge(
    judge: str | Any, seed: int, rows_per_task: int, tasks: Sequence[str], num_candidates: int = 10
) -> dict[str, Any]:
    """:func:`heldout_judge_quality` of ``judge`` (a saved judge folder or a loaded one) on the first
    ``rows_per_task`` held-out mini-MMEB rows of each of ``tasks`` (``mini_mmeb_splits``, seed ``seed``): the rows
    every demo evaluates on, whose facts no training data of the project holds."""
    import torch

    from unime_v2.data_builders.mini_mmeb.splits import mini_mmeb_splits
    from unime_v2.modeling_unime_v2 import UniMEV2Reranker

    _, rows = mini_mmeb_splits(seed, 0, rows_per_task, 100, {"tasks": list(tasks)})
    if isinstance(judge, (str, bytes)) or hasattr(judge, "__fspath__"):
        judge = UniMEV2Reranker.from_pretrained(str(judge), dtype=torch.float32)
    with torch.no_grad():
        return heldout_judge_quality(judge.eval(), rows, num_candidates=num_candidates, seed=seed)


def format_heldout_table(quality: Mapping[str, Any]) -> list[list[Any]]:
    """Rows (group, in-pool AUC, hard-distractor AUC, share of queries a negative out-scores the positive on each)
    of :func:`heldout_judge_quality`'s figures: all, per meta-task, per dataset."""
    pool, hard = quality["heldout_in_pool"], quality["heldout_hard_distractors"]

    def row(name: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Any]:
        return [name, round(a.get("auc", float("nan")), 4), round(b.get("auc", float("nan")), 4),
                round(a.get("negative_above_positive", float("nan")), 4),
                round(b.get("negative_above_positive", float("nan")), 4)]  # fmt: skip

    rows = [row("all", pool["all"], hard["all"])]
    for level in ("per_meta_task", "per_dataset"):
        for name in sorted(set(pool[level]) | set(hard[level]), key=list({**pool[level], **hard[level]}).index):
            rows.append(row(name, pool[level].get(name, {}), hard[level].get(name, {})))
    return rows


HELDOUT_HEADER = ["tasks", "AUC in-pool", "AUC hard distractors", "negative > positive (in-pool)",
                  "negative > positive (hard distractors)"]  # fmt: skip
