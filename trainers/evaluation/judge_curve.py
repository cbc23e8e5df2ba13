"""Judges of controlled quality: mini-MMEB's oracle scores on mined candidates, corrupted to a target AUC (issue 22).

How good must a judge be for UniME-V2's soft labels to help? The ablation (``examples/ablation.py --curve true``)
answers it on ONE set of mined candidates: every candidate of the quickstart's mined data is re-scored by
mini-MMEB's oracle (:func:`oracle_scores_of_mined`), then the oracle's scores are mixed with seeded uniform noise,

    s' = (1 − λ) · oracle + λ · u,   u ~ U(0, 1) per candidate,

with λ found by bisection so that the pooled AUC (:func:`pooled_auc`) hits a target (:func:`calibrate_judge`).
s' stays in [0, 1] (a convex mix of two numbers in [0, 1]); λ = 0 is the oracle itself (AUC 1.0). For one pair
with o₊ > o₋ the positive stays above the negative while (1 − λ)(o₊ − o₋) > λ(u₋ − u₊), a condition that can only
turn false as λ grows; mini-MMEB's oracle scores every positive 1.0 and every true negative below it, so every
pooled pair is such a pair, the AUC never rises with λ and the bisection is exact. The candidates and their order
never change, only the scores do, so a hard-label run on the same data is the control for every level.

The AUC is the one of ``trainers/evaluation/judge_quality.py`` (``roc_auc``), pooled over every query's positive
and stored negatives; a negative the oracle scores at or above its query's positive meets the query (a false
negative of the pool) and is left out of the AUC, as there. :func:`target_statistics` measures what the loss sees:
the soft target ``softmax(s / τ)`` over the positive and the first k negatives (docs/method.md §2).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from unime_v2.trainers.evaluation.judge_quality import roc_auc


Scores = list[list[float]]
"""Per mined record: ``[s₊, s₁, …, s_m]``, the positive first, then the stored negatives in their order."""


@dataclass(frozen=True)
class CorruptedJudge:
    """The oracle's scores corrupted to a target AUC: the mixing weight λ found, the AUC measured, the scores."""

    target_auc: float
    auc: float
    noise_weight: float
    seed: int
    scores: Scores

    def summary(self) -> dict[str, float]:
        """Everything but the scores (what ``results.json`` records)."""
        return {"target_auc": self.target_auc, "auc": self.auc, "noise_weight": self.noise_weight, "seed": self.seed}


def uniform_noise(lengths: Sequence[int], seed: int) -> Scores:
    """U(0, 1) noise of the shape of the scores, drawn per record from ``default_rng([seed, record])``: the same seed
    gives the same noise, and a record's noise does not depend on the records before it."""
    return [np.random.default_rng([seed, index]).random(n).tolist() for index, n in enumerate(lengths)]


def mix_noise(oracle: Scores, noise: Scores, weight: float) -> Scores:
    """``(1 − weight) · oracle + weight · noise`` per candidate; ``weight`` in [0, 1] keeps scores in [0, 1]."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"noise weight must be in [0, 1], got {weight}")
    return [((1.0 - weight) * np.asarray(o) + weight * np.asarray(u)).tolist() for o, u in zip(oracle, noise)]


def pooled_auc(scores: Scores, oracle: Scores) -> float:
    """AUC of every positive's score against every true negative's score, pooled over the records (``roc_auc``).

    A true negative is a stored negative the oracle scores below its query's positive; the others meet the query
    as well as the positive does (false negatives) and are left out, as in ``judge_quality.summarize``.
    """
    if len(scores) != len(oracle):
        raise ValueError(f"{len(scores)} score lists for {len(oracle)} oracle lists")
    positives, negatives = [], []
    for judged, truth in zip(scores, oracle):
        positives.append(judged[0])
        negatives.extend(s for s, o in zip(judged[1:], truth[1:]) if o < truth[0])
    return roc_auc(positives, negatives)


def _check_target(target_auc: float, oracle: Scores) -> None:
    if not 0.5 <= target_auc <= 1.0 or math.isnan(target_auc):
        raise ValueError(f"target AUC {target_auc} is outside [0.5, 1]: 0.5 is chance, 1.0 the oracle")
    if not any(o < truth[0] for truth in oracle for o in truth[1:]):
        raise ValueError("no record holds a negative the oracle scores below its positive: the AUC is undefined")


def calibrate_judge(
    oracle: Scores, target_auc: float, seed: int = 0, tolerance: float = 0.01, iterations: int = 60
) -> CorruptedJudge:
    """The oracle's scores mixed with seeded uniform noise so that :func:`pooled_auc` is ``target_auc`` ± tolerance.

    λ is bisected on [0, 1] (the AUC never rises with λ: module docstring) until the measured AUC is within
    ``tolerance / 2`` of the target. A target the mix cannot reach within ``tolerance`` (the oracle's own AUC is
    below it, or full noise stays above it) raises ``ValueError``. Deterministic by ``seed``.
    """
    _check_target(target_auc, oracle)
    noise = uniform_noise([len(s) for s in oracle], seed)

    def auc_at(weight: float) -> float:
        return pooled_auc(mix_noise(oracle, noise, weight), oracle)

    low, high = 0.0, 1.0  # AUC(low) >= target >= AUC(high) is kept
    best = low
    if abs(auc_at(low) - target_auc) > tolerance / 2:
        for _ in range(iterations):
            best = (low + high) / 2
            auc = auc_at(best)
            if abs(auc - target_auc) <= tolerance / 2:
                break
            low, high = (best, high) if auc > target_auc else (low, best)
    auc = auc_at(best)
    if abs(auc - target_auc) > tolerance:
        raise ValueError(
            f"target AUC {target_auc}: the closest mix (noise weight {best:.4f}) measures {auc:.4f}; the oracle's "
            f"own AUC is {auc_at(0.0):.4f} and pure noise's {auc_at(1.0):.4f}"
        )
    return CorruptedJudge(target_auc, auc, best, seed, mix_noise(oracle, noise, best))


def target_statistics(scores: Scores, k: int = 8, tau: float = 0.02) -> dict[str, float]:
    """What the soft-label loss is asked to match: ``Q = softmax([s₊, s₁..s_k] / τ)`` over the positive and the
    first ``k`` stored negatives (the trainer's ``negative_selection: first``; shorter lists repeat in order, as
    ``pad_policy: repeat``), averaged over the records: ``positive_mass`` (mean Q₊; 1.0 is a hard label),
    ``entropy`` (nats; 0 is a hard label, ``uniform_entropy`` = log(1 + k) a uniform one), ``hard_like`` (share of
    records with Q₊ > 0.99) and ``score_gap_in_tau`` (mean of s₊ − the best of the k negatives, in units of τ)."""
    mass, entropy, hard, gap = [], [], [], []
    for record in scores:
        negatives = list(record[1:])
        negatives = (negatives * (k // max(len(negatives), 1) + 1))[:k]
        logits = np.asarray([record[0], *negatives], dtype=np.float64) / tau
        q = np.exp(logits - logits.max())
        q /= q.sum()
        mass.append(q[0])
        entropy.append(float(-(q * np.log(np.clip(q, 1e-300, None))).sum()))
        hard.append(q[0] > 0.99)
        gap.append((record[0] - max(negatives)) / tau)
    return {
        "positive_mass": float(np.mean(mass)),
        "entropy": float(np.mean(entropy)),
        "uniform_entropy": math.log(1 + k),
        "hard_like": float(np.mean(hard)),
        "score_gap_in_tau": float(np.mean(gap)),
    }


def _pixels_key(image: Any) -> str:
    """A key of an image's decoded pixels (encoded bytes may differ between copies of one image)."""
    if image is None:
        return ""
    from PIL import Image

    if isinstance(image, Mapping):
        import io

        image = Image.open(io.BytesIO(image["bytes"])) if image.get("bytes") else Image.open(image["path"])
    array = np.asarray(image.convert("RGB"))
    return hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest()


def _item_key(text: str | None, image: Any) -> tuple[str, str]:
    return (text or "", _pixels_key(image))


def _content(scene: str) -> tuple[Any, str]:
    """What the oracle reads of a candidate's scene (its modality and spec; not how the generator made it)."""
    record = json.loads(scene)
    return record.get("modality"), json.dumps(record.get("spec"), sort_keys=True)


def oracle_scores_of_mined(
    mined: Any, rows: Any, oracle: Callable[[Any, Any], float] | None = None
) -> tuple[Scores, dict[str, int]]:
    """mini-MMEB's oracle scores of every candidate of a mined dataset whose queries are mini-MMEB training rows.

    ``rows`` are the rows the mining source was written from (``examples/quickstart.py``: ``mini_mmeb_splits``
    training rows with their scene columns), in the source's order: a mined record's ``query_id`` is
    ``<dataset>-<row>`` (``data_builders/mining/records.py``, ``RowIds``); its query and positive (text and pixels)
    are checked against that row (``ValueError`` if they differ). Its negatives are items of the rows' training
    lists: other rows' positives (the global pool) or the other candidates of the lists (the quickstart's corpus of
    near-misses), found by text and decoded pixels. Returns the scores (``[oracle(query, positive),
    oracle(query, negative) …]`` per record) and counts: ``records``, ``negatives``, ``false_negatives`` (a negative
    the oracle scores at or above the positive) and ``ambiguous`` (negatives whose content several list items share
    with different scenes; the first one's scene is used).
    """
    if oracle is None:
        from unime_v2.data_builders.mini_mmeb import oracle_score as oracle
    rows = list(rows)
    scenes: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        images = row.get("tgt_image") or [None] * len(row["tgt_text"])
        for text, image, scene in zip(row["tgt_text"], images, row["tgt_scene"]):
            found = scenes.setdefault(_item_key(text, image), [])
            if all(_content(scene) != _content(other) for other in found):
                found.append(scene)
    out: Scores = []
    counts = {"records": 0, "negatives": 0, "false_negatives": 0, "ambiguous": 0}
    for record in mined:
        index = int(str(record["query_id"]).rsplit("-", 1)[1])
        row = rows[index]
        same_query = _item_key(record["query_text"], record["query_image"]) == _item_key(
            row["qry_text"], row["qry_image"]
        )
        positive = _item_key(row["tgt_text"][0], (row.get("tgt_image") or [None])[0])
        if not same_query or _item_key(record["pos_text"], record["pos_image"]) != positive:
            raise ValueError(f"mined record {record['query_id']} does not match mini-MMEB training row {index}")
        scored = [float(oracle(row, {"scene": row["tgt_scene"][0]}))]
        for text, image in zip(record["neg_texts"], record["neg_images"]):
            found = scenes.get(_item_key(text, image))
            if not found:
                raise KeyError(f"mined record {record['query_id']}: negative {text!r} is in no training row's list")
            counts["ambiguous"] += len(found) > 1
            scored.append(float(oracle(row, {"scene": found[0]})))
        counts["records"] += 1
        counts["negatives"] += len(scored) - 1
        counts["false_negatives"] += sum(s >= scored[0] for s in scored[1:])
        out.append(scored)
    return out, counts


def oracle_score_levels(oracle: Scores) -> dict[str, Any]:
    """How graded the oracle's relevance is on the mined negatives: the share of each distinct negative score and of
    negatives at or above their positive (false negatives)."""
    negatives = [s for record in oracle for s in record[1:]]
    values, counts = np.unique(np.round(negatives, 4), return_counts=True)
    false = sum(s >= record[0] for record in oracle for s in record[1:])
    return {
        "negatives": len(negatives),
        "false_negative_share": false / max(len(negatives), 1),
        "levels": {f"{v:.4f}": int(c) for v, c in zip(values, counts)},
        "mean_negative": float(np.mean(negatives)) if negatives else float("nan"),
    }


def with_scores(mined: Any, scores: Scores) -> Any:
    """The mined dataset with ``pos_score`` / ``neg_scores`` replaced by ``scores`` (everything else kept)."""
    if len(scores) != len(mined):
        raise ValueError(f"{len(scores)} score lists for {len(mined)} mined records")
    for index, (record, new) in enumerate(zip(mined.select_columns(["neg_scores"]), scores)):
        if len(new) != 1 + len(record["neg_scores"]):
            raise ValueError(f"record {index}: {len(new)} scores for 1 + {len(record['neg_scores'])} candidates")
    import datasets

    table = mined.flatten_indices().data.table
    for name, values in (("pos_score", [s[0] for s in scores]), ("neg_scores", [list(s[1:]) for s in scores])):
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pa.array(values, type=table.schema.field(index).type))
    return datasets.Dataset(table, info=mined.info.copy())


__all__ = [
    "CorruptedJudge",
    "calibrate_judge",
    "mix_noise",
    "oracle_score_levels",
    "oracle_scores_of_mined",
    "pooled_auc",
    "target_statistics",
    "uniform_noise",
    "with_scores",
]
