"""Training and held-out rows of mini-MMEB from one build, for the tiny recipes and the quickstart."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datasets import Dataset

from .builder import MiniMMEBConfig, build_mini_mmeb


def mini_mmeb_splits(
    seed: int, train_per_task: int, test_per_task: int, num_candidates: int, extra: Mapping[str, Any] | None = None
) -> tuple[Dataset, Dataset]:
    """Disjoint (train, held-out) MMEB-eval-style rows: per task, the first ``test_per_task`` rows are held out and
    the next ``train_per_task`` rows of in-distribution tasks are for training (out-of-distribution tasks are
    evaluation only). ``extra`` holds more :class:`MiniMMEBConfig` fields (colours, shapes, tasks, …)."""
    config = MiniMMEBConfig(
        **{
            "seed": seed,
            "train_pairs": 0,
            "num_candidates": num_candidates,
            "caption_images": 0,
            "long_caption_images": 0,
            "compositional_per_subset": 0,
            **dict(extra or {}),
            "eval_queries": test_per_task + train_per_task,
        }
    )
    return split_rows(build_mini_mmeb(config)["mmeb"]["test"], test_per_task)


def split_rows(rows: Dataset, test_per_task: int) -> tuple[Dataset, Dataset]:
    """(train, held-out) of MMEB-eval-style rows: per task the first ``test_per_task`` rows are held out; the rest of
    the in-distribution tasks' rows are for training."""
    position: dict[str, int] = {}
    test_index, train_index = [], []
    for index, (name, ood) in enumerate(zip(rows["dataset"], rows["ood"])):
        rank = position[name] = position.get(name, -1) + 1
        if rank < test_per_task:
            test_index.append(index)
        elif not ood:
            train_index.append(index)
    return rows.select(train_index), rows.select(test_index)
