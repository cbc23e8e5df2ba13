"""Judge quality on mini-MMEB's HELD-OUT rows (``heldout_judge_quality``): AUC and "a negative above the positive"
against the oracle, on in-pool candidates and on one-edit hard distractors, pooled and per group."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence

import pytest

from unime_v2.data_builders.formats.judge_pairs import judge_text
from unime_v2.data_builders.mini_mmeb import ONE_EDIT_KINDS, oracle_score
from unime_v2.data_builders.mini_mmeb.splits import mini_mmeb_splits
from unime_v2.trainers.evaluation.judge_quality import (
    HELDOUT_HEADER,
    format_heldout_table,
    heldout_judge_quality,
    measure_heldout_judge,
)


TASKS = ["MiniImageNet-cls", "MiniCOCO-i2t", "MiniCOCO-t2i"]
META = {"MiniImageNet-cls": "classification", "MiniCOCO-i2t": "retrieval", "MiniCOCO-t2i": "retrieval"}
MEASUREMENTS = ("heldout_in_pool", "heldout_hard_distractors")


def item_key(item: dict) -> tuple[str, bytes | None]:
    """What tells items apart: the text the judge reads and the image's pixels."""
    image = item["image"]
    return item["text"], None if image is None else image.tobytes()


def target(row: dict, j: int) -> dict:
    return {"text": judge_text(row["tgt_text"][j]), "image": row["tgt_image"][j]}


class Heldout:
    """Held-out rows and lookups back from what a judge is shown: query -> row, candidate -> oracle score."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows
        self.query_row = {item_key({"text": judge_text(r["qry_text"]), "image": r["qry_image"]}): i
                          for i, r in enumerate(rows)}  # fmt: skip
        assert len(self.query_row) == len(rows), "two held-out queries look alike"
        self.scenes: dict[tuple, list[str]] = {}
        for row in rows:
            for j, scene in enumerate(row["tgt_scene"]):
                self.scenes.setdefault(item_key(target(row, j)), []).append(scene)

    def row_of(self, query: dict) -> int:
        return self.query_row[item_key(query)]

    def oracle(self, index: int, candidate: dict) -> float:
        """The oracle's score of ``candidate`` for row ``index``'s query (the same for every scene it may be)."""
        scores = {oracle_score(self.rows[index], {"scene": s}) for s in self.scenes[item_key(candidate)]}
        assert len(scores) == 1, f"candidate {candidate['text']!r} is ambiguous: {scores}"
        return scores.pop()


class Scorer:
    """A judge stand-in: ``score(query, candidates)`` from ``rule(row index, candidate)``; every call recorded."""

    def __init__(self, heldout: Heldout, rule: Callable[[int, dict], float]) -> None:
        self.heldout, self.rule = heldout, rule
        self.calls: list[tuple[int, list[dict], list[float]]] = []

    def score(self, query: dict, candidates: Sequence[dict]) -> list[float]:
        index = self.heldout.row_of(query)
        scores = [self.rule(index, c) for c in candidates]
        self.calls.append((index, list(candidates), scores))
        return scores


@pytest.fixture(scope="module")
def heldout() -> Heldout:
    _, rows = mini_mmeb_splits(0, 0, 4, 100, {"tasks": TASKS})
    return Heldout(list(rows))


def perfect(heldout: Heldout) -> Scorer:
    return Scorer(heldout, heldout.oracle)


def inverted(heldout: Heldout) -> Scorer:
    return Scorer(heldout, lambda i, c: 1.0 - heldout.oracle(i, c))


@pytest.fixture(scope="module")
def random_run(heldout: Heldout) -> tuple[Scorer, dict]:
    """A seeded random judge on a coarse scale (ties happen, and count ½ in the AUC) and its figures."""
    rng = random.Random(0)
    scorer = Scorer(heldout, lambda i, c: rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]))
    return scorer, heldout_judge_quality(scorer, heldout.rows)


def split_calls(scorer: Scorer, heldout: Heldout, num_candidates: int = 10) -> dict[str, list]:
    """The recorded calls of each measurement, told apart by their length (in-pool: the other rows of the task;
    hard: the row's one-edit distractors) — which the rows of this test keep different."""
    out = {name: [] for name in MEASUREMENTS}
    for index, candidates, scores in scorer.calls:
        row = heldout.rows[index]
        same_task = sum(r["dataset"] == row["dataset"] for r in heldout.rows) - 1
        edits = sum(kind in ONE_EDIT_KINDS for kind in row["tgt_kind"])
        pool_size, hard_size = 1 + min(num_candidates, same_task), 1 + min(num_candidates, edits)
        assert pool_size != hard_size, "rows of this test must tell the two measurements apart"
        assert len(candidates) in (pool_size, hard_size)
        name = MEASUREMENTS[len(candidates) == hard_size]
        out[name].append((index, candidates, scores))
    return out


def brute_force(heldout: Heldout, calls: list) -> dict[str, float]:
    """AUC over every (positive, negative) pair of the calls, ties ½, and the share of queries with a negative
    strictly above their positive; negatives are the candidates the oracle scores below 1."""
    positives, negatives, beaten = [], [], []
    for index, candidates, scores in calls:
        own = [s for c, s in zip(candidates[1:], scores[1:]) if heldout.oracle(index, c) < 1.0]
        positives.append(scores[0])
        negatives += own
        if own:
            beaten.append(any(s > scores[0] for s in own))
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return {
        "auc": wins / (len(positives) * len(negatives)),
        "negative_above_positive": sum(beaten) / len(beaten),
        "num_queries": len(calls),
    }


@pytest.mark.parametrize("num_candidates", [10, 2])
def test_the_oracle_itself_is_a_perfect_judge(heldout, num_candidates) -> None:
    quality = heldout_judge_quality(perfect(heldout), heldout.rows, num_candidates=num_candidates)
    for name in MEASUREMENTS:
        assert quality[name]["all"]["auc"] == 1.0, name
        assert quality[name]["all"]["negative_above_positive"] == 0.0, name
        assert quality[name]["all"]["num_queries"] == len(heldout.rows), name
    if num_candidates == 2:  # the positive + the first 2 of each kind
        assert quality["heldout_hard_distractors"]["all"]["num_pairs"] == 3 * len(heldout.rows)
        assert quality["heldout_in_pool"]["all"]["num_pairs"] == 3 * len(heldout.rows)


def test_an_inverted_oracle_is_always_wrong(heldout) -> None:
    quality = heldout_judge_quality(inverted(heldout), heldout.rows)
    for name in MEASUREMENTS:
        assert quality[name]["all"]["auc"] == 0.0, name
        assert quality[name]["all"]["negative_above_positive"] == 1.0, name
        assert all(d["auc"] == 0.0 for d in quality[name]["per_dataset"].values()), name


def test_random_judge_figures_equal_a_brute_force_count(heldout, random_run) -> None:
    scorer, quality = random_run
    calls = split_calls(scorer, heldout)
    for name in MEASUREMENTS:
        groups = {"all": ("all", lambda row: True)}
        groups |= {task: ("per_dataset", lambda row, task=task: row["dataset"] == task) for task in TASKS}
        groups |= {m: ("per_meta_task", lambda row, m=m: row["meta_task"] == m) for m in set(META.values())}
        for group, (level, keep) in groups.items():
            figures = quality[name]["all"] if level == "all" else quality[name][level][group]
            expected = brute_force(heldout, [c for c in calls[name] if keep(heldout.rows[c[0]])])
            assert figures["num_queries"] == expected["num_queries"], (name, group)
            assert figures["auc"] == pytest.approx(expected["auc"], abs=1e-12), (name, group)
            assert figures["negative_above_positive"] == pytest.approx(expected["negative_above_positive"]), (
                name,
                group,
            )
    # the random judge is neither perfect nor inverted, so the figures above were not trivial
    assert 0.0 < quality["heldout_hard_distractors"]["all"]["auc"] < 1.0


def test_groups_cover_every_query(heldout, random_run) -> None:
    _, quality = random_run
    for name in MEASUREMENTS:
        figures = quality[name]
        assert set(figures) == {"all", "per_meta_task", "per_dataset"}
        assert set(figures["per_dataset"]) == set(TASKS)
        assert set(figures["per_meta_task"]) == {"classification", "retrieval"}
        assert figures["all"]["num_queries"] == len(heldout.rows)
        for level in ("per_dataset", "per_meta_task"):
            assert sum(g["num_queries"] for g in figures[level].values()) == len(heldout.rows), (name, level)
            assert sum(g["num_pairs"] for g in figures[level].values()) == figures["all"]["num_pairs"], (name, level)
        assert figures["per_dataset"]["MiniCOCO-i2t"]["num_queries"] == 4


def test_in_pool_candidates_are_other_rows_targets_of_the_same_task(heldout, random_run) -> None:
    scorer, _ = random_run
    pool = split_calls(scorer, heldout)["heldout_in_pool"]
    assert sorted(index for index, _, _ in pool) == list(range(len(heldout.rows)))
    for index, candidates, _ in pool:
        row = heldout.rows[index]
        others = [j for j, r in enumerate(heldout.rows) if r["dataset"] == row["dataset"] and j != index]
        assert item_key(candidates[0]) == item_key(target(row, 0))
        allowed = {item_key(target(heldout.rows[j], 0)) for j in others}
        assert {item_key(c) for c in candidates[1:]} <= allowed, index
        assert len(candidates) == 1 + len(others)  # 3 others, fewer than num_candidates: all of them


def test_hard_set_holds_the_rows_first_one_edit_distractors(heldout, random_run) -> None:
    scorer, _ = random_run
    hard = split_calls(scorer, heldout)["heldout_hard_distractors"]
    assert sorted(index for index, _, _ in hard) == list(range(len(heldout.rows)))
    kinds_seen = set()
    for index, candidates, _ in hard:
        row = heldout.rows[index]
        edits = [j for j, kind in enumerate(row["tgt_kind"]) if kind in ONE_EDIT_KINDS][:10]
        assert [item_key(c) for c in candidates] == [item_key(target(row, j)) for j in [0, *edits]], index
        kinds_seen |= {row["tgt_kind"][j] for j in edits}
    assert len(kinds_seen) > 1  # several kinds of edit were exercised


def test_the_table_has_a_row_per_group(random_run) -> None:
    _, quality = random_run
    table = format_heldout_table(quality)
    assert len(HELDOUT_HEADER) == 5 and all(len(row) == len(HELDOUT_HEADER) for row in table)
    assert [row[0] for row in table] == ["all", "classification", "retrieval", *sorted(TASKS)]
    pool, hard = (quality[name] for name in MEASUREMENTS)
    assert table[0][1:] == [round(pool["all"]["auc"], 4), round(hard["all"]["auc"], 4),
                            round(pool["all"]["negative_above_positive"], 4),
                            round(hard["all"]["negative_above_positive"], 4)]  # fmt: skip
    assert table[-1][2] == round(hard["per_dataset"][sorted(TASKS)[-1]]["auc"], 4)


def test_measure_heldout_judge_on_a_tiny_judge(tiny_backbone_dirs, tmp_path) -> None:
    import torch

    from unime_v2.modeling_unime_v2 import UniMEV2Reranker

    folder = tmp_path / "judge"
    UniMEV2Reranker.from_backbone(str(tiny_backbone_dirs["qwen2_5_vl"]), pair_format="judge").save_pretrained(folder)
    quality = measure_heldout_judge(str(folder), 0, 2, TASKS)
    for name in MEASUREMENTS:
        figures = quality[name]["all"]
        assert figures["num_queries"] == 2 * len(TASKS), name
        for key in ("auc", "query_auc", "negative_above_positive"):
            assert math.isfinite(figures[key]) and 0.0 <= figures[key] <= 1.0, (name, key)
        assert set(quality[name]["per_dataset"]) == set(TASKS)
    loaded = UniMEV2Reranker.from_pretrained(str(folder), dtype=torch.float32)
    again = measure_heldout_judge(loaded, 0, 2, TASKS)
    assert json.dumps(again, sort_keys=True) == json.dumps(quality, sort_keys=True)  # a loaded judge or its folder
