"""Training and held-out mini-MMEB rows that are disjoint in their facts, with the list length an eval setting.

Training and held-out rows drawn from one generated MMEB-eval split would let a held-out query repeat a training
query's facts (same task, same text, same image facts), and a shared random stream would make ``num_candidates``
change every query. Instead:

* held-out queries come from their own stream per task (``"{seed}/heldout/{task}"``) and never depend on the
  number of candidates;
* each held-out row's candidate list comes from its own stream (``"{seed}/heldout-candidates/{task}/{i}"``) and a
  fixed-size pool, so ``eval_candidates`` changes only the lists (up to 106 candidates, a shorter list's
  candidates are a subset of a longer one's);
* training queries come from a third stream and skip every held-out query key (:func:`query_key`: task, text and
  image facts, rendering jitter ignored); a training query that cannot avoid them raises instead of leaking.

Rows have the MMEB-eval layout of ``docs/mini_mmeb.md`` (ground truth first), so ``oracle_mined_dataset`` and the
precision@1 evaluator read them unchanged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import datasets

from .builder import MiniMMEBConfig, _ImageStore, _test_row, make_vocab, selected_tasks, test_features
from .tasks import MiniTask, Vocab, assemble_candidates, build_pool, query_key


POOL_SIZE = 320  # random-fill pool per task: fixed, so that the eval list length never changes what is drawn
TRAIN_CANDIDATES = 11  # training lists: positive + the 10 stored negatives of the mined format


@dataclass
class MiniMMEBSplit:
    """Training rows (IND tasks), held-out rows (all tasks) and the held-out query keys."""

    train: datasets.Dataset
    heldout: datasets.Dataset
    heldout_keys: set[str] = field(default_factory=set)


def _heldout_rows(
    task: MiniTask, config: MiniMMEBConfig, vocab: Vocab, images: _ImageStore, count: int, num_candidates: int
) -> tuple[list[dict], set[str]]:
    pool = build_pool(
        task, random.Random(f"{config.seed}/pool/{task.name}"), vocab, max(POOL_SIZE, 3 * num_candidates)
    )
    query_rng = random.Random(f"{config.seed}/heldout/{task.name}")
    rows, keys = [], set()
    for index in range(count):
        ex = task.sample(query_rng, vocab)
        keys.add(query_key(task, ex))
        candidate_rng = random.Random(f"{config.seed}/heldout-candidates/{task.name}/{index}")
        rows.append(
            _test_row(task, ex, assemble_candidates(task, ex, candidate_rng, vocab, pool, num_candidates), images)
        )
    return rows, keys


def _train_rows(
    task: MiniTask,
    config: MiniMMEBConfig,
    vocab: Vocab,
    images: _ImageStore,
    count: int,
    exclude: set[str],
    num_candidates: int,
    tries: int = 10_000,
) -> list[dict]:
    pool = build_pool(task, random.Random(f"{config.seed}/train-pool/{task.name}"), vocab, POOL_SIZE)
    rng = random.Random(f"{config.seed}/train-rows/{task.name}")
    rows = []
    for _ in range(count):
        for _ in range(tries):
            ex = task.sample(rng, vocab)
            if query_key(task, ex) not in exclude:
                break
        else:
            raise ValueError(f"{task.name}: no training query outside the held-out facts in {tries} draws")
        rows.append(_test_row(task, ex, assemble_candidates(task, ex, rng, vocab, pool, num_candidates), images))
    return rows


def heldout_query_keys(config: MiniMMEBConfig, test_per_task: int) -> set[str]:
    """The query keys of :func:`build_split`'s held-out rows (cheap: no rendering, no candidates)."""
    vocab = make_vocab(config)
    keys = set()
    for task in selected_tasks(config):
        rng = random.Random(f"{config.seed}/heldout/{task.name}")
        keys.update(query_key(task, task.sample(rng, vocab)) for _ in range(test_per_task))
    return keys


def build_split(
    config: MiniMMEBConfig,
    train_per_task: int,
    test_per_task: int,
    eval_candidates: int = 100,
    train_candidates: int = TRAIN_CANDIDATES,
) -> MiniMMEBSplit:
    """Held-out rows of every selected task and training rows of its IND tasks, disjoint in query facts.

    ``config`` supplies the seed, vocabulary, image size and tasks (its ``train_pairs``/``eval_queries``/
    ``num_candidates`` are not used). ``eval_candidates`` sets the held-out list length only; the queries are the
    same for every value. ``train_candidates`` sets the training lists (ground truth + distractors scored by the
    oracle in the demo's ``oracle:mini_mmeb`` data).
    """
    vocab = make_vocab(config)
    images = _ImageStore(config.image_size)
    tasks = selected_tasks(config)
    heldout, keys = [], set()
    for task in tasks:
        rows, task_keys = _heldout_rows(task, config, vocab, images, test_per_task, eval_candidates)
        heldout += rows
        keys |= task_keys
    train = [
        row
        for task in tasks
        if not task.ood
        for row in _train_rows(task, config, vocab, images, train_per_task, keys, train_candidates)
    ]
    return MiniMMEBSplit(train=_dataset(train), heldout=_dataset(heldout), heldout_keys=keys)


def _dataset(rows: list[dict]) -> datasets.Dataset:
    features = test_features()
    return datasets.Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)


def mini_mmeb_splits(
    seed: int, train_per_task: int, test_per_task: int, num_candidates: int, extra: dict[str, Any] | None = None
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(training rows, held-out rows) of :func:`build_split` for the tiny recipes, the evaluation and the quickstart.

    ``num_candidates`` is the held-out list length only (training lists have ``TRAIN_CANDIDATES``); ``extra`` holds
    more :class:`MiniMMEBConfig` fields (colours, shapes, tasks, …).
    """
    config = MiniMMEBConfig(
        **{
            "seed": seed,
            "train_pairs": 0,
            "caption_images": 0,
            "long_caption_images": 0,
            "compositional_per_subset": 0,
            **dict(extra or {}),
        }  # fmt: skip
    )
    split = build_split(config, train_per_task, test_per_task, eval_candidates=num_candidates)
    return split.train, split.heldout
