"""Judges of controlled quality (trainers/evaluation/judge_curve.py): the oracle's scores corrupted to a target AUC,
measured, deterministic by seed; the oracle re-scoring of mined candidates; the soft targets' statistics."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from unime_v2.data_builders.formats.mined import MINED_FEATURES, make_mined_row
from unime_v2.trainers.evaluation.judge_curve import (
    calibrate_judge,
    mix_noise,
    oracle_scores_of_mined,
    pooled_auc,
    target_statistics,
    uniform_noise,
    with_scores,
)


TARGETS = (0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


@pytest.fixture(scope="module")
def oracle() -> list[list[float]]:
    """200 records: the positive at 1.0, ten negatives at mini-MMEB-like graded levels."""
    rng = random.Random(0)
    return [[1.0] + [rng.choice((0.0, 0.25, 1 / 3, 0.5, 2 / 3, 0.75)) for _ in range(10)] for _ in range(200)]


@pytest.mark.parametrize("target", TARGETS)
def test_calibrated_auc_is_within_tolerance_of_the_target(oracle: list[list[float]], target: float) -> None:
    judge = calibrate_judge(oracle, target, seed=3)
    assert abs(judge.auc - target) <= 0.01
    assert judge.auc == pytest.approx(pooled_auc(judge.scores, oracle))
    flat = np.concatenate([np.asarray(s) for s in judge.scores])
    assert flat.min() >= 0.0 and flat.max() <= 1.0
    assert [len(s) for s in judge.scores] == [len(s) for s in oracle]


def test_auc_one_leaves_the_oracle_scores(oracle: list[list[float]]) -> None:
    judge = calibrate_judge(oracle, 1.0, seed=5)
    assert judge.noise_weight == 0.0 and judge.auc == 1.0
    assert judge.scores == oracle


def test_more_noise_never_raises_the_auc(oracle: list[list[float]]) -> None:
    noise = uniform_noise([len(s) for s in oracle], seed=1)
    aucs = [pooled_auc(mix_noise(oracle, noise, w), oracle) for w in np.linspace(0, 1, 11)]
    assert all(a >= b for a, b in zip(aucs, aucs[1:]))
    assert aucs[0] == 1.0 and aucs[-1] == pytest.approx(0.5, abs=0.05)


def test_deterministic_by_seed(oracle: list[list[float]]) -> None:
    first, again = calibrate_judge(oracle, 0.8, seed=7), calibrate_judge(oracle, 0.8, seed=7)
    other = calibrate_judge(oracle, 0.8, seed=8)
    assert first == again
    assert first.scores != other.scores


@pytest.mark.parametrize("target", [0.4, 1.2, math.nan])
def test_a_target_outside_chance_to_oracle_is_refused(oracle: list[list[float]], target: float) -> None:
    with pytest.raises(ValueError, match=r"outside \[0.5, 1\]"):
        calibrate_judge(oracle, target)


def test_an_unreachable_target_is_refused() -> None:
    tied = [[1.0, 1.0, 0.0] for _ in range(20)]  # half of the negatives are false negatives, left out
    assert pooled_auc(tied, tied) == 1.0
    with pytest.raises(ValueError, match="no record holds a negative"):
        calibrate_judge([[1.0, 1.0]], 0.9)


def test_false_negatives_are_left_out_of_the_auc() -> None:
    oracle = [[1.0, 1.0, 0.2], [1.0, 0.5, 0.0]]
    judged = [[0.9, 0.95, 0.1], [0.8, 0.3, 0.85]]  # the 0.95 is a false negative: it does not count
    assert pooled_auc(judged, oracle) == pytest.approx(roc([0.9, 0.8], [0.1, 0.3, 0.85]))


def roc(pos: list[float], neg: list[float]) -> float:
    return float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))


def test_target_statistics_of_hard_and_flat_scores() -> None:
    hard = target_statistics([[1.0] + [0.5] * 10], k=8, tau=0.02)
    assert hard["positive_mass"] == pytest.approx(1.0) and hard["entropy"] < 1e-6 and hard["hard_like"] == 1.0
    flat = target_statistics([[0.7] * 11], k=8, tau=0.02)
    assert flat["positive_mass"] == pytest.approx(1 / 9) and flat["entropy"] == pytest.approx(math.log(9))
    short = target_statistics([[1.0, 1.0]], k=8, tau=0.02)  # one negative repeated to 8, as pad_policy: repeat
    assert short["positive_mass"] == pytest.approx(1 / 9)


def _mined(records: list[dict]) -> object:
    import datasets

    return datasets.Dataset.from_list(records, features=MINED_FEATURES)


def test_with_scores_replaces_only_the_scores() -> None:
    row = make_mined_row(query_text="q", pos_text="p", pos_score=0.7, neg_texts=["a", "b"], neg_scores=[0.6, 0.5],
                         num_negatives=None)  # fmt: skip
    mined = _mined([row, {**row, "query_id": "x"}])
    out = with_scores(mined, [[1.0, 0.25, 0.0], [0.5, 0.5, 0.125]])
    assert out.features == mined.features
    assert out["pos_score"] == [1.0, 0.5] and out["neg_scores"] == [[0.25, 0.0], [0.5, 0.125]]
    assert out["neg_texts"] == mined["neg_texts"] and out["query_id"] == mined["query_id"]
    with pytest.raises(ValueError, match="1 \\+ 2 candidates"):
        with_scores(mined, [[1.0, 0.0], [1.0, 0.0, 0.0]])


def test_oracle_scores_of_mined_candidates() -> None:
    from unime_v2.data_builders.mini_mmeb import oracle_score
    from unime_v2.data_builders.mini_mmeb.splits import mini_mmeb_splits

    rows, _ = mini_mmeb_splits(0, 4, 1, 2, {"tasks": ["MiniImageNet-cls", "MiniCOCO-t2i"]})
    records, expected = [], []
    for index, row in enumerate(rows):
        # two other rows' positives (the global pool) and one item of another row's list (the corpus)
        others = [(j, 0) for j in range(len(rows)) if j != index][:2] + [((index + 1) % len(rows), 3)]
        records.append(make_mined_row(
            query_id=f"{row['dataset']}-{index}", source=row["dataset"], query_text=row["qry_text"],
            query_image=row["qry_image"], pos_text=row["tgt_text"][0], pos_image=row["tgt_image"][0], pos_score=0.5,
            neg_texts=[rows[j]["tgt_text"][c] or "" for j, c in others],
            neg_images=[rows[j]["tgt_image"][c] for j, c in others], neg_scores=[0.5] * 3, num_negatives=None,
        ))  # fmt: skip
        expected.append([oracle_score(row, {"scene": rows[j]["tgt_scene"][c]}) for j, c in [(index, 0), *others]])
    scores, counts = oracle_scores_of_mined(_mined(records), rows)
    assert np.allclose(np.asarray(scores), np.asarray(expected))
    assert counts["records"] == len(rows) and counts["negatives"] == 3 * len(rows)
    assert all(s[0] == 1.0 for s in scores)
    with pytest.raises(ValueError, match="does not match"):
        oracle_scores_of_mined(_mined(records[1:2]), list(rows)[1:])
