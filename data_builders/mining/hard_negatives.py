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

from ..formats.mined import FALLBACK_SCORE, repeat_to


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


@dataclass(frozen=True)
class CandidateWindow:
    """The candidates a query may take negatives from, before the judge's rule: sentence-transformers'
    ``mine_hard_negatives`` knobs (FlagEmbedding's ``range_for_sampling`` is ``range_min``/``range_max``). All off by
    default (the paper's rule; docs/mining.md, "Sampling knobs").

    Attributes:
        range_min: skip the ``range_min`` most similar retrieved candidates (rank ``0 … range_min − 1``).
        range_max: keep only candidates ranked below ``range_max`` (``None``: all ``top_k``).
        absolute_margin: keep a candidate only if its embedder similarity ``sim ≤ sim_pos − absolute_margin``.
        relative_margin: keep a candidate only if ``sim ≤ sim_pos · (1 − relative_margin)``.
    """

    range_min: int = 0
    range_max: int | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None

    def __post_init__(self) -> None:
        if self.range_min < 0:
            raise ValueError(f"range_min must be >= 0, got {self.range_min}")
        if self.range_max is not None and self.range_max <= self.range_min:
            raise ValueError(f"range_max={self.range_max} must be > range_min={self.range_min}")
        if self.relative_margin is not None and not 0.0 <= self.relative_margin < 1.0:
            raise ValueError(f"relative_margin must be in [0, 1), got {self.relative_margin}")

    @property
    def uses_similarities(self) -> bool:
        """Whether a margin is set (the query–positive embedder similarity is then needed)."""
        return self.absolute_margin is not None or self.relative_margin is not None

    def eligible(
        self, n: int, similarities: Sequence[float] | None = None, positive_similarity: float | None = None
    ) -> list[int]:
        """Positions (retrieval ranks) of the ``n`` candidates inside the window and the margins."""
        ranks = range(self.range_min, n if self.range_max is None else min(n, self.range_max))
        if not self.uses_similarities:
            return list(ranks)
        if similarities is None or positive_similarity is None:
            raise ValueError("absolute_margin / relative_margin need the candidates' and the positive's similarity")
        ceiling = math.inf
        if self.absolute_margin is not None:
            ceiling = min(ceiling, positive_similarity - self.absolute_margin)
        if self.relative_margin is not None:
            ceiling = min(ceiling, positive_similarity * (1.0 - self.relative_margin))
        return [i for i in ranks if float(similarities[i]) <= ceiling]


class HardNegativeSampler:
    """Choose ``num_negatives`` hard negatives per query from its retrieved candidates and their judge scores.

    Args:
        beta: margin of the false-negative filter; a candidate with ``s > s_pos - beta`` is a false negative.
        num_negatives: how many negatives every query gets (10 in the paper).
        interval: step of the cyclical sampling (5 in the paper).
        seed: seeds the fallback draw (combined with the query key, so each query has its own stream).
        fallback_score: the score given to fallback negatives (1.0 in the paper).
        window: the rank window and margins applied before the judge's rule (:class:`CandidateWindow`; default off).
    """

    def __init__(
        self,
        beta: float,
        num_negatives: int = 10,
        interval: int = 5,
        seed: int = 0,
        fallback_score: float = FALLBACK_SCORE,
        window: CandidateWindow = CandidateWindow(),
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
        self.window = window

    def sample(
        self,
        candidate_scores: Sequence[float],
        positive_score: float,
        query_key: str,
        similarities: Sequence[float] | None = None,
        positive_similarity: float | None = None,
    ) -> SampledNegatives:
        """Sample negatives for one query.

        Args:
            candidate_scores: judge scores of the retrieved candidates, in retrieval order (most similar first).
            positive_score: judge score of the query's positive; ``alpha = positive_score - beta``.
            query_key: a stable id of the query (seeds the fallback draw).
            similarities: embedder similarities of the candidates (needed by the window's margins only).
            positive_similarity: embedder similarity of the query and its positive (margins only).

        The window's candidates (all by default) go through the judge's rule; the fallback draws from them too
        (from all candidates when the window leaves none).
        """
        scores = [float(s) for s in candidate_scores]
        if not scores:
            raise ValueError(f"query {query_key!r}: no candidates to sample negatives from (empty pool)")
        if any(math.isnan(s) for s in scores) or math.isnan(positive_score):
            raise ValueError(f"query {query_key!r}: NaN judge score")
        alpha = positive_score - self.beta
        eligible = self.window.eligible(len(scores), similarities, positive_similarity)
        survivors = [i for i in eligible if scores[i] <= alpha]
        n_false = len(eligible) - len(survivors)
        if not survivors:
            return self._fallback(eligible or list(range(len(scores))), n_false, query_key)
        chosen = [survivors[p] for p in cyclical_order(len(survivors), self.interval)[: self.num_negatives]]
        indices = repeat_to(chosen, self.num_negatives)
        return SampledNegatives(
            indices=tuple(indices),
            scores=tuple(scores[i] for i in indices),
            padded=len(chosen) < self.num_negatives,
            fallback=False,
            n_false_negatives=n_false,
        )

    def _fallback(self, pool: list[int], n_false: int, query_key: str) -> SampledNegatives:
        """``num_negatives`` random candidates of ``pool`` (without replacement; repeated when it is smaller)."""
        rng = np.random.default_rng(query_seed(self.seed, query_key))
        drawn = [pool[i] for i in rng.permutation(len(pool))[: self.num_negatives].tolist()]
        indices = repeat_to(drawn, self.num_negatives)
        return SampledNegatives(
            indices=tuple(indices),
            scores=(self.fallback_score,) * self.num_negatives,
            padded=len(drawn) < self.num_negatives,
            fallback=True,
            n_false_negatives=n_false,
        )
