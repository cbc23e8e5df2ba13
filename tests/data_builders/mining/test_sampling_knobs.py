"""The sampling knobs users know from sentence-transformers / FlagEmbedding (docs/mining.md, "Sampling knobs"), on
hand-made scores: a rank window, absolute and relative margins to the positive's similarity; off by default."""

from __future__ import annotations

import pytest

from unime_v2.data_builders.mining.config import MiningConfig
from unime_v2.data_builders.mining.hard_negatives import CandidateWindow, HardNegativeSampler


SCORES = [0.10, 0.20, 0.30, 0.40, 0.50, 0.60]  # judge scores, retrieval order (rank 0 most similar)
SIMS = [0.90, 0.80, 0.70, 0.60, 0.50, 0.40]  # embedder similarities, descending


def sample(window: CandidateWindow, positive_score: float = 1.0, positive_similarity: float = 0.85, k: int = 6):
    sampler = HardNegativeSampler(beta=0.0, num_negatives=k, interval=1, window=window)
    return sampler.sample(SCORES, positive_score, "q", SIMS, positive_similarity)


def test_defaults_are_the_papers_rule():
    default = HardNegativeSampler(beta=0.0, num_negatives=6, interval=1).sample(SCORES, 1.0, "q")
    assert sample(CandidateWindow()) == default
    assert default.indices == (0, 1, 2, 3, 4, 5)
    config = MiningConfig()
    assert config.window == CandidateWindow()


def test_rank_window_skips_the_top_and_stops_at_range_max():
    chosen = sample(CandidateWindow(range_min=2, range_max=5), k=3)
    assert chosen.indices == (2, 3, 4) and not chosen.padded


def test_absolute_margin_to_the_positives_similarity():
    chosen = sample(CandidateWindow(absolute_margin=0.1), positive_similarity=0.85, k=4)
    assert chosen.indices == (2, 3, 4, 5)  # sim <= 0.75


def test_relative_margin_to_the_positives_similarity():
    chosen = sample(CandidateWindow(relative_margin=0.25), positive_similarity=0.8, k=3)
    assert chosen.indices == (3, 4, 5)  # sim <= 0.6


def test_window_then_judge_rule_then_cyclical_order():
    sampler = HardNegativeSampler(beta=0.0, num_negatives=2, interval=2, window=CandidateWindow(range_min=1))
    chosen = sampler.sample(SCORES, 0.45, "q")  # window: ranks 1..5; judge keeps s <= 0.45: ranks 1, 2, 3
    assert chosen.indices == (1, 3) and chosen.n_false_negatives == 2


def test_fallback_draws_from_the_window():
    sampler = HardNegativeSampler(beta=0.0, num_negatives=2, window=CandidateWindow(range_min=4))
    chosen = sampler.sample(SCORES, 0.0, "q")  # nothing passes the judge rule
    assert chosen.fallback and set(chosen.indices) == {4, 5}


def test_margins_need_similarities():
    with pytest.raises(ValueError, match="need the candidates' and the positive's similarity"):
        HardNegativeSampler(0.0, window=CandidateWindow(absolute_margin=0.1)).sample(SCORES, 1.0, "q")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"range_min": -1}, "range_min must be >= 0"),
        ({"range_min": 3, "range_max": 3}, "range_max=3 must be > range_min=3"),
        ({"relative_margin": 1.0}, "relative_margin must be in"),
    ],
)
def test_bad_knobs_are_named(settings, message):
    with pytest.raises(ValueError, match=f"MiningConfig: {message}"):
        MiningConfig(**settings)
