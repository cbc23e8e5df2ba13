"""Metrics against hand-computed examples (ties included) and a brute-force reference; aggregation by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unime_v2.trainers.evaluation import (
    MMEB_TASKS,
    MMEBTask,
    aggregate_mmeb,
    hits_at_k,
    is_hit,
    load_mmeb_metric,
    pairwise_accuracy,
    pessimistic_order,
    ranked_hits,
    sugarcrepe_groups,
)


def test_mmeb_hit_by_hand_a_tie_with_the_ground_truth_is_a_miss() -> None:
    assert is_hit(torch.tensor([0.9, 0.2, 0.5]))
    assert not is_hit(torch.tensor([0.5, 0.5, 0.1]))  # tie with candidate 1: argmax would say hit
    assert not is_hit(torch.tensor([0.3, 0.2, 0.4]))
    assert not is_hit(torch.zeros(5))  # collapsed model
    assert is_hit(torch.tensor([0.1]))


def test_recall_by_hand_five_captions_any_is_a_hit_and_ties_count_against() -> None:
    # 2 images x 4 captions; captions 0,1 describe image 0, captions 2,3 image 1
    scores = torch.tensor([[0.1, 0.6, 0.6, 0.2], [0.9, 0.8, 0.3, 0.3]])
    relevant = torch.tensor([[True, True, False, False], [False, False, True, True]])
    hits = hits_at_k(scores, relevant, (1, 2, 3))
    # image 0: best relevant 0.6 ties with caption 2 -> rank 1 (miss at 1, hit at 2)
    # image 1: best relevant 0.3 below 0.9 and 0.8 -> rank 2 (hit only at 3)
    assert hits[1].tolist() == [False, False]
    assert hits[2].tolist() == [True, False]
    assert hits[3].tolist() == [True, True]


def test_sugarcrepe_accuracy_by_hand_tie_is_wrong() -> None:
    assert pairwise_accuracy(torch.tensor([0.5, 0.4, 0.3, 0.9]), torch.tensor([0.4, 0.4, 0.6, 0.1])) == 0.5
    with pytest.raises(ValueError, match="no items"):
        pairwise_accuracy(torch.zeros(0), torch.zeros(0))


def test_pessimistic_order_puts_a_tied_ground_truth_last_and_ranked_hits() -> None:
    assert pessimistic_order([0.5, 0.5, 0.9, 0.1], [True, False, False, False]) == [2, 1, 0, 3]
    assert ranked_hits([2, 1, 0, 3], [True, False, False, False], (1, 3)) == {1: False, 3: True}


def brute_force_recall(scores: np.ndarray, relevant: np.ndarray, k: int) -> list[bool]:
    """Sort every row best first, relevant candidates after equal-scored others; hit when one is in the top k."""
    out = []
    for row, rel in zip(scores, relevant):
        ranked = sorted(range(len(row)), key=lambda j: (-row[j], rel[j]))
        out.append(any(rel[j] for j in ranked[:k]))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_and_precision_equal_a_brute_force_reference_on_random_embeddings(seed: int) -> None:
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(12, 8))
    texts = rng.normal(size=(36, 8))
    texts[5] = texts[4]  # exact duplicates make ties
    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    texts = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    scores = np.round(images @ texts.T, 2)  # rounding makes more ties
    owner = np.repeat(np.arange(12), 3)
    relevant = owner[None, :] == np.arange(12)[:, None]
    hits = hits_at_k(torch.tensor(scores), torch.tensor(relevant), (1, 5, 10))
    for k in (1, 5, 10):
        assert hits[k].tolist() == brute_force_recall(scores, relevant, k)
        assert hits_at_k(torch.tensor(scores.T), torch.tensor(relevant.T), (k,))[k].tolist() == brute_force_recall(
            scores.T, relevant.T, k
        )
    for row in scores:  # MMEB rows: ground truth at index 0
        assert is_hit(torch.tensor(row)) == bool(row[0] > row[1:].max())


def test_aggregation_equals_hand_computation() -> None:
    tasks = [
        MMEBTask("A", "classification", False),
        MMEBTask("B", "classification", True),
        MMEBTask("C", "vqa", False),
        MMEBTask("D", "grounding", True),
    ]
    means = aggregate_mmeb({"A": 0.5, "B": 0.1, "C": 0.9, "D": 0.3, "extra": 1.0}, tasks)
    assert means["meta/classification"] == pytest.approx((0.5 + 0.1) / 2)
    assert means["meta/vqa"] == pytest.approx(0.9)
    assert means["meta/grounding"] == pytest.approx(0.3)
    assert means["ind"] == pytest.approx((0.5 + 0.9) / 2)
    assert means["ood"] == pytest.approx((0.1 + 0.3) / 2)
    assert means["overall"] == pytest.approx((0.5 + 0.1 + 0.9 + 0.3 + 1.0) / 5)
    groups = sugarcrepe_groups({"replace-obj": 0.2, "replace_att": 0.4, "swap-obj": 0.6, "add-att": 1.0})
    assert groups == pytest.approx({"replace": 0.3, "swap": 0.6, "add": 1.0})


def test_mmeb_task_table_has_36_tasks_20_ind_16_ood() -> None:
    assert len(MMEB_TASKS) == len({t.name for t in MMEB_TASKS}) == 36
    assert sum(not t.ood for t in MMEB_TASKS) == 20 and sum(t.ood for t in MMEB_TASKS) == 16
    counts = {
        m: sum(t.meta_task == m for t in MMEB_TASKS) for m in ("classification", "vqa", "retrieval", "grounding")
    }
    assert counts == {"classification": 10, "vqa": 10, "retrieval": 12, "grounding": 4}
    per = {t.name: float(i % 7) / 7 for i, t in enumerate(MMEB_TASKS)}
    assert aggregate_mmeb(per)["overall"] == pytest.approx(sum(per.values()) / 36)
    assert math.isnan(aggregate_mmeb({"ImageNet-1K": 0.5})["ood"])


def test_evaluate_metric_module_loads_offline_and_counts_ties_as_misses(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = load_mmeb_metric()
    result = metric.compute(predictions=[[0.9, 0.1], [0.4, 0.4, 0.1], [0.2, 0.7], [0.8, 0.3]], references=list("aabb"))
    assert result["precision_at_1/a"] == 0.5 and result["precision_at_1/b"] == 0.5
    assert result["precision_at_1"] == 0.5 and result["num_rows"] == 4
