"""Hard-negative sampling from judge scores (docs/method.md §3): false negatives out, cyclical pick, pad, seeded fallback.

The sampler is a pure function of its inputs (the judge scores of one query's retrieved candidates, in retrieval
order, the positive's score, and the query's id for the fallback's random draw), so a run split over processes or
resumed after a crash chooses exactly the same negatives as one uninterrupted run.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..formats.mined import repeat_to


@dataclass(frozen=True)
class SampledNegatives:
    """The hard negatives chosen for one query.

    Attributes:
        indices: positions in the query's retrieved-candidate list (retrieval order), ``num_negatives`` of them;
            an index repeats when fewer distinct candidates were available.
        scores: the judge score of each chosen candidate (``fallback_score`` for every one on the fallback path).
        padded: fewer than ``num_negatives`` distinct candidates were chosen, so the list repeats itself.
        fallback: no candidate survived the false-negative filter; the negatives are a seeded random draw.
        n_false_negatives: candidates removed because ``s > s_pos - beta``.
    """

    indices: tuple[int, ...]
    scores: tuple[float, ...]
    padded: bool
    fallback: bool
    n_false_negatives: int


def cyclical_order(n: int, interval: int) -> list[int]:
    """Positions ``0, i, 2i, … , 1, 1+i, … , 2, 2+i, …`` of a list of length ``n``: spreads a pick over difficulty."""
    return [position for start in range(min(interval, n)) for position in range(start, n, interval)]


def query_seed(seed: int, query_key: str) -> list[int]:
    """A per-query seed for ``numpy.random.default_rng``: independent of which process or run draws it."""
    digest = hashlib.sha256(query_key.encode("utf-8")).digest()
    return [seed, int.from_bytes(digest[:8], "little")]


class HardNegativeSampler:
    """Choose ``num_negatives`` hard negatives per query from its retrieved candidates and their judge scores.

    Args:
        beta: margin of the false-negative filter; a candidate with ``s > s_pos - beta`` is a false negative.
        num_negatives: how many negatives every query gets (10 in the paper).
        interval: step of the cyclical sampling (5 in the paper).
        seed: seeds the fallback draw (combined with the query key, so each query has its own stream).
        fallback_score: the score given to fallback negatives (1.0 in the paper).
    """

    def __init__(
        self, beta: float, num_negatives: int = 10, interval: int = 5, seed: int = 0, fallback_score: float = 1.0
    ):
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.beta = beta
        self.num_negatives = num_negatives
        self.interval = interval
        self.seed = seed
        self.fallback_score = fallback_score

    def sample(self, candidate_scores: Sequence[float], positive_score: float, query_key: str) -> SampledNegatives:
        """Sample negatives for one query.

        Args:
            candidate_scores: judge scores of the retrieved candidates, in retrieval order (most similar first).
            positive_score: judge score of the query's positive; ``alpha = positive_score - beta``.
            query_key: a stable id of the query (seeds the fallback draw).
        """
        scores = [float(s) for s in candidate_scores]
        if not scores:
            raise ValueError(f"query {query_key!r}: no candidates to sample negatives from (empty pool)")
        if any(math.isnan(s) for s in scores) or math.isnan(positive_score):
            raise ValueError(f"query {query_key!r}: NaN judge score")
        alpha = positive_score - self.beta
        survivors = [i for i, s in enumerate(scores) if s <= alpha]
        n_false = len(scores) - len(survivors)
        if not survivors:
            return self._fallback(len(scores), n_false, query_key)
        chosen = [survivors[p] for p in cyclical_order(len(survivors), self.interval)[: self.num_negatives]]
        indices = repeat_to(chosen, self.num_negatives)
        return SampledNegatives(
            indices=tuple(indices),
            scores=tuple(scores[i] for i in indices),
            padded=len(chosen) < self.num_negatives,
            fallback=False,
            n_false_negatives=n_false,
        )

    def _fallback(self, n_candidates: int, n_false: int, query_key: str) -> SampledNegatives:
        """``num_negatives`` random candidates of the pool (without replacement; repeated when the pool is smaller)."""
        rng = np.random.default_rng(query_seed(self.seed, query_key))
        drawn = rng.permutation(n_candidates)[: self.num_negatives].tolist()
        indices = repeat_to(drawn, self.num_negatives)
        return SampledNegatives(
            indices=tuple(indices),
            scores=(self.fallback_score,) * self.num_negatives,
            padded=len(drawn) < self.num_negatives,
            fallback=True,
            n_false_negatives=n_false,
        )
