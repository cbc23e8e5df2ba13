"""The hard-negative sampler follows each rule of docs/method.md §3 (expected outputs written out by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unime_v2.data_builders.mining.hard_negatives import HardNegativeSampler, cyclical_order, query_seed, repeat_to


def low_scores(n: int) -> list[float]:
    """``n`` candidate scores, all well below any threshold used here (so all survive)."""
    return [0.01 * (i % 7) for i in range(n)]


def test_cyclical_order_interval_five():
    assert cyclical_order(12, 5) == [0, 5, 10, 1, 6, 11, 2, 7, 3, 8, 4, 9]
    assert cyclical_order(3, 5) == [0, 1, 2]
    assert cyclical_order(0, 5) == []


def test_fifty_survivors_give_every_fifth():
    sample = HardNegativeSampler(beta=0.1).sample(low_scores(50), positive_score=0.9, query_key="q")
    assert sample.indices == (0, 5, 10, 15, 20, 25, 30, 35, 40, 45)
    assert not sample.padded and not sample.fallback and sample.n_false_negatives == 0


def test_cycle_wraps_to_the_next_offset():
    sample = HardNegativeSampler(beta=0.1).sample(low_scores(23), positive_score=0.9, query_key="q")
    assert sample.indices == (0, 5, 10, 15, 20, 1, 6, 11, 16, 21)


def test_false_negatives_removed_before_cycling_in_retrieval_order():
    # s_pos = 0.75, beta = 0.25 -> alpha = 0.5 exactly; s > alpha is a false negative, s == alpha survives.
    scores = [0.9, 0.1, 0.5, 0.51, 0.2, 0.3, 0.7, 0.0, 0.4, 0.45, 0.05, 0.6, 0.15, 0.25, 0.35]
    sample = HardNegativeSampler(beta=0.25).sample(scores, positive_score=0.75, query_key="q")
    # survivors (retrieval positions): 1, 2, 4, 5, 7, 8, 9, 10, 12, 13, 14  (0, 3, 6, 11 removed)
    # cyclical over the 11 survivors: survivor positions 0,5,10,1,6,2,7,3,8,4 -> candidates below
    assert sample.indices == (1, 8, 14, 2, 9, 4, 10, 5, 12, 7)
    assert sample.scores == tuple(scores[i] for i in sample.indices)
    assert sample.n_false_negatives == 4
    assert not sample.padded and not sample.fallback


def test_fewer_than_ten_survivors_repeat_in_order():
    scores = [0.95, 0.2, 0.99, 0.3, 0.1]
    sample = HardNegativeSampler(beta=0.1).sample(scores, positive_score=0.8, query_key="q")
    assert sample.indices == (1, 3, 4, 1, 3, 4, 1, 3, 4, 1)
    assert sample.scores == (0.2, 0.3, 0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.1, 0.2)
    assert sample.padded and not sample.fallback and sample.n_false_negatives == 2


def test_fallback_draws_ten_of_the_pool_with_score_one():
    scores = [0.9] * 50  # everything above alpha = 0.5 - 0.1
    sample = HardNegativeSampler(beta=0.1, seed=0).sample(scores, positive_score=0.5, query_key="q-7")
    assert sample.fallback and not sample.padded and sample.n_false_negatives == 50
    assert sample.indices == (37, 14, 20, 15, 26, 22, 28, 3, 16, 12)
    assert sample.scores == (1.0,) * 10
    # a different query gets its own draw; the same query always the same one
    other = HardNegativeSampler(beta=0.1, seed=0).sample(scores, positive_score=0.5, query_key="q-8")
    assert other.indices == (48, 47, 41, 31, 4, 13, 45, 36, 17, 30)
    again = HardNegativeSampler(beta=0.1, seed=0).sample(scores, positive_score=0.5, query_key="q-7")
    assert again == sample


def test_fallback_on_a_small_pool_repeats_the_draw():
    sample = HardNegativeSampler(beta=0.0).sample([0.9, 0.8, 0.95, 0.7], positive_score=0.1, query_key="small")
    drawn = np.random.default_rng(query_seed(0, "small")).permutation(4).tolist()
    assert sample.indices == tuple(drawn * 3)[:10]
    assert sample.fallback and sample.padded


def test_sampler_is_a_pure_function_of_its_inputs():
    rng = np.random.default_rng(1)
    cases = [(rng.random(50).tolist(), float(rng.random()), f"q{i}") for i in range(20)]
    sampler = HardNegativeSampler(beta=0.05, seed=3)
    forward = [sampler.sample(*case) for case in cases]
    backward = [HardNegativeSampler(beta=0.05, seed=3).sample(*case) for case in reversed(cases)][::-1]
    assert forward == backward


def test_other_num_negatives_and_interval():
    sample = HardNegativeSampler(beta=0.1, num_negatives=4, interval=2).sample(low_scores(6), 0.9, "q")
    assert sample.indices == (0, 2, 4, 1)


def test_bad_inputs_raise_naming_the_query():
    sampler = HardNegativeSampler(beta=0.1)
    with pytest.raises(ValueError, match="q-empty.*empty pool"):
        sampler.sample([], 0.9, "q-empty")
    with pytest.raises(ValueError, match="q-nan.*NaN"):
        sampler.sample([0.1, math.nan], 0.9, "q-nan")
    with pytest.raises(ValueError, match="num_negatives"):
        HardNegativeSampler(beta=0.1, num_negatives=0)
    with pytest.raises(ValueError, match="empty"):
        repeat_to([], 3)
