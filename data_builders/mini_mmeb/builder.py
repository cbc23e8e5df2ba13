"""Mini-MMEB: a generated, offline benchmark that exercises every MMEB meta-task.

``build_mini_mmeb(MiniMMEBConfig(...))`` returns ``datasets.DatasetDict`` objects with ``Image`` features:

* ``"mmeb"``: split ``train`` (MMEB-train records) and split ``test`` (MMEB-eval rows: query, candidate list with
  the ground truth at index 0, hard distractors and random fill);
* ``"caption_retrieval"``, ``"long_caption"``, ``"compositional"``: split ``test`` each (the paper's companion
  evaluations, in their shapes).

Everything is deterministic by seed. Every item keeps its scene graph as JSON so that :func:`oracle_score` can
score any (query, candidate) pair of a task. ``export.py`` writes the real MMEB file formats (JSONL + PNG,
relative image paths) and reads them back.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .companion import (
    caption_retrieval_rows,
    compositional_rows,
    long_caption_rows,
    spec_caption,
)
from .scenes import (
    BACKGROUND_PALETTE,
    COLOR_PALETTE,
    SHAPE_NAMES,
    SIZE_SCALES,
    SceneRenderer,
    oracle_score,
    to_json,
)
from .tasks import (
    TASK_NAMES,
    Example,
    MiniTask,
    Vocab,
    assemble_candidates,
    build_pool,
    choose_heldout,
    default_tasks,
    query_key,
    sample_excluding,
)


__all__ = [
    "MiniMMEBConfig",
    "build_mini_mmeb",
    "make_vocab",
    "eval_candidates",
    "oracle_score",
    "summary_rows",
    "format_summary",
    "task_table",
    "TASK_NAMES",
    "train_features",
    "test_features",
]

DEFAULT_COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "brown")
DEFAULT_SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
DEFAULT_SIZES = ("small", "medium", "large")
DEFAULT_BACKGROUNDS = ("white", "light gray", "beige", "pale blue")

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 64, 112


# ----------------------------------------------------------------------------------------------- config


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"MiniMMEBConfig.{name} must be an int {bound}, got {value!r}")


def _check_names(name: str, value: Any, allowed: Iterable[str], minimum: int) -> None:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"MiniMMEBConfig.{name} must be a list of names, got {value!r}")
    allowed = list(allowed)
    for item in value:
        if item not in allowed:
            raise ValueError(f"MiniMMEBConfig.{name}: unknown value {item!r}; allowed: {allowed}")
    if len(set(value)) != len(value):
        raise ValueError(f"MiniMMEBConfig.{name} has duplicates: {list(value)!r}")
    if len(value) < minimum:
        raise ValueError(f"MiniMMEBConfig.{name} needs at least {minimum} values, got {list(value)!r}")


@dataclass
class MiniMMEBConfig:
    """What to generate. Defaults: ~20k train pairs, 150 eval queries per task, 100 candidates, 64 px images.

    Attribute lists choose from the renderer's palettes (``COLOR_PALETTE``, ``SHAPE_NAMES``, ``SIZE_SCALES``,
    ``BACKGROUND_PALETTE``). ``holdout_fraction`` of the colour x shape combinations never appear in training and
    drive the OOD tasks. ``tasks`` restricts generation to some task names (all thirteen by default).
    Invalid values raise ``ValueError`` naming the field and the value.
    """

    seed: int = 0
    train_pairs: int = 20_000
    eval_queries: int = 150
    num_candidates: int = 100
    image_size: int = 64
    colors: Sequence[str] = DEFAULT_COLORS
    shapes: Sequence[str] = DEFAULT_SHAPES
    sizes: Sequence[str] = DEFAULT_SIZES
    backgrounds: Sequence[str] = DEFAULT_BACKGROUNDS
    holdout_fraction: float = 0.125
    tasks: Sequence[str] | None = None
    caption_images: int = 200
    long_caption_images: int = 200
    compositional_per_subset: int = 100

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and its value."""
        _check_int("seed", self.seed, 0)
        _check_int("image_size", self.image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
        _check_int("train_pairs", self.train_pairs, 0)
        _check_int("eval_queries", self.eval_queries, 1)
        _check_int("num_candidates", self.num_candidates, 2)
        _check_int("caption_images", self.caption_images, 0)
        _check_int("long_caption_images", self.long_caption_images, 0)
        _check_int("compositional_per_subset", self.compositional_per_subset, 0)
        _check_names("colors", self.colors, COLOR_PALETTE, 3)
        _check_names("shapes", self.shapes, SHAPE_NAMES, 3)
        _check_names("sizes", self.sizes, SIZE_SCALES, 2)
        _check_names("backgrounds", self.backgrounds, BACKGROUND_PALETTE, 1)
        frac = self.holdout_fraction
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 < frac <= 0.5:
            raise ValueError(f"MiniMMEBConfig.holdout_fraction must be a number in (0, 0.5], got {frac!r}")
        if self.tasks is not None:
            _check_names("tasks", self.tasks, TASK_NAMES, 1)

    def to_dict(self) -> dict:
        """JSON-ready copy (lists instead of tuples)."""
        return {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in asdict(self).items()}


def make_vocab(config: MiniMMEBConfig) -> Vocab:
    """The vocabulary of a config, with its seed-determined held-out colour x shape combinations."""
    rng = random.Random(f"{config.seed}/holdout")
    held = choose_heldout(config.colors, config.shapes, config.holdout_fraction, rng)
    return Vocab(
        tuple(config.colors), tuple(config.shapes), tuple(config.sizes), tuple(config.backgrounds), tuple(held)
    )


def selected_tasks(config: MiniMMEBConfig) -> list[MiniTask]:
    """The config's tasks in canonical order."""
    wanted = set(config.tasks) if config.tasks is not None else set(TASK_NAMES)
    return [t for t in default_tasks() if t.name in wanted]


def task_table(config: MiniMMEBConfig | None = None) -> list[dict]:
    """One row per task: name, meta-task, OOD flag, query -> target modality (for docs and summaries)."""
    config = config or MiniMMEBConfig()
    rows = []
    for task in selected_tasks(config):
        ex = task.sample(random.Random(0), make_vocab(config))
        rows.append(
            {
                "dataset": task.name,
                "meta_task": task.meta_task,
                "ood": task.ood,
                "query": ex.query["query_modality"],
                "target": task.target_modality,
                "example_query": ex.qry_text,
                "example_target": ex.positive.text,
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------- features


def train_features():
    """Features of the ``train`` split (MMEB-train records + scene JSON)."""
    from datasets import Features, Image, Value

    return Features(
        {
            "qry": Value("string"),
            "qry_image": Image(),
            "pos_text": Value("string"),
            "pos_image": Image(),
            "dataset": Value("string"),
            "meta_task": Value("string"),
            "qry_scene": Value("string"),
            "pos_scene": Value("string"),
        }
    )


def test_features():
    """Features of the ``test`` split (MMEB-eval rows + candidate kinds + scene JSON)."""
    from datasets import Features, Image, List, Value

    return Features(
        {
            "qry_text": Value("string"),
            "qry_image": Image(),
            "tgt_text": List(Value("string")),
            "tgt_image": List(Image()),
            "dataset": Value("string"),
            "meta_task": Value("string"),
            "ood": Value("bool"),
            "tgt_kind": List(Value("string")),
            "qry_scene": Value("string"),
            "tgt_scene": List(Value("string")),
        }
    )


# ----------------------------------------------------------------------------------------------- building


class _ImageStore:
    """Turns image references into ``datasets`` image dicts through the render cache."""

    def __init__(self, image_size: int) -> None:
        self.renderer = SceneRenderer(image_size)

    def __call__(self, ref: tuple | None) -> dict | None:
        if ref is None:
            return None
        if ref[0] == "scene":
            data = self.renderer.scene_png(ref[1])
        else:
            data = self.renderer.crop_png(ref[1], ref[2])
        return {"bytes": data, "path": None}

    def scene(self, scene: dict) -> dict:
        return {"bytes": self.renderer.scene_png(scene), "path": None}


def _split_counts(total: int, n: int) -> list[int]:
    """Split ``total`` over ``n`` tasks as evenly as possible (earlier tasks get the remainder)."""
    return [total // n + (1 if k < total % n else 0) for k in range(n)] if n else []


def _train_record(task: MiniTask, ex: Example, images: _ImageStore) -> dict:
    return {
        "qry": ex.qry_text,
        "qry_image": images.scene(ex.qry_image) if ex.qry_image else None,
        "pos_text": ex.positive.text,
        "pos_image": images(ex.positive.image),
        "dataset": task.name,
        "meta_task": task.meta_task,
        "qry_scene": to_json(ex.query),
        "pos_scene": ex.positive.content_json(),
    }


def _test_row(task: MiniTask, ex: Example, candidates: list, images: _ImageStore) -> dict:
    return {
        "qry_text": ex.qry_text,
        "qry_image": images.scene(ex.qry_image) if ex.qry_image else None,
        "tgt_text": [item.text for _, item, _ in candidates],
        "tgt_image": [images(item.image) for _, item, _ in candidates],
        "dataset": task.name,
        "meta_task": task.meta_task,
        "ood": task.ood,
        "tgt_kind": [kind for kind, _, _ in candidates],
        "qry_scene": to_json(ex.query),
        "tgt_scene": [item.content_json(edit) for _, item, edit in candidates],
    }


def _columns(rows: list[dict], features) -> dict[str, list]:
    return {name: [r[name] for r in rows] for name in features}


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row")


def build_train_rows(
    config: MiniMMEBConfig,
    vocab: Vocab,
    images: _ImageStore,
    progress: bool = False,
    exclude: frozenset[str] | set[str] = frozenset(),
) -> list[dict]:
    """MMEB-train records of the in-distribution tasks (OOD tasks are test-only); queries in ``exclude``
    (the eval queries' keys) are redrawn."""
    tasks = [t for t in selected_tasks(config) if not t.ood]
    rows: list[dict] = []
    bar = _progress(progress, config.train_pairs, "train")
    for task, count in zip(tasks, _split_counts(config.train_pairs, len(tasks))):
        rng = random.Random(f"{config.seed}/train/{task.name}")
        rows.extend(_train_record(task, sample_excluding(task, rng, vocab, exclude), images) for _ in range(count))
        if bar is not None:
            bar.update(count)
    if bar is not None:
        bar.close()
    return rows


def build_test_rows(
    config: MiniMMEBConfig, vocab: Vocab, images: _ImageStore, progress: bool = False
) -> tuple[list[dict], set[str]]:
    """MMEB-eval rows of every selected task (IND and OOD), and the set of their query keys.

    The eval set depends only on the seed and the eval settings, not on ``train_pairs``.
    """
    tasks = selected_tasks(config)
    rows: list[dict] = []
    keys: set[str] = set()
    bar = _progress(progress, config.eval_queries * len(tasks), "test")
    pool_size = max(3 * config.num_candidates, 64)
    for task in tasks:
        pool = build_pool(task, random.Random(f"{config.seed}/pool/{task.name}"), vocab, pool_size)
        rng = random.Random(f"{config.seed}/test/{task.name}")
        for _ in range(config.eval_queries):
            ex = task.sample(rng, vocab)
            keys.add(query_key(task, ex))
            candidates = assemble_candidates(task, ex, rng, vocab, pool, config.num_candidates)
            rows.append(_test_row(task, ex, candidates, images))
        if bar is not None:
            bar.update(config.eval_queries)
    if bar is not None:
        bar.close()
    return rows, keys


def build_companions(config: MiniMMEBConfig, vocab: Vocab, images: _ImageStore) -> dict[str, list[dict]]:
    """Rows of the three companion sets."""
    cap = caption_retrieval_rows(random.Random(f"{config.seed}/caption_retrieval"), vocab, config.caption_images)
    long = long_caption_rows(random.Random(f"{config.seed}/long_caption"), vocab, config.long_caption_images)
    comp = compositional_rows(random.Random(f"{config.seed}/compositional"), vocab, config.compositional_per_subset)
    return {
        "caption_retrieval": [
            {"image": images.scene(r["scene"]), "captions": r["captions"], "scene": to_json(r["scene"])} for r in cap
        ],
        "long_caption": [
            {"image": images.scene(r["scene"]), "caption": r["caption"], "scene": to_json(r["scene"])} for r in long
        ],
        "compositional": [
            {
                "image": images.scene(r["scene"]),
                "pos_caption": spec_caption(r["pos"]),
                "neg_caption": spec_caption(r["neg"]),
                "subset": r["subset"],
                "scene": to_json(r["scene"]),
                "pos_scene": to_json(r["pos"]),
                "neg_scene": to_json(r["neg"]),
            }
            for r in comp
        ],
    }


def companion_features() -> dict:
    """Features of the three companion sets."""
    from datasets import Features, Image, List, Value

    return {
        "caption_retrieval": Features({"image": Image(), "captions": List(Value("string")), "scene": Value("string")}),
        "long_caption": Features({"image": Image(), "caption": Value("string"), "scene": Value("string")}),
        "compositional": Features(
            {
                "image": Image(),
                "pos_caption": Value("string"),
                "neg_caption": Value("string"),
                "subset": Value("string"),
                "scene": Value("string"),
                "pos_scene": Value("string"),
                "neg_scene": Value("string"),
            }
        ),
    }


def build_info(config: MiniMMEBConfig, vocab: Vocab | None = None) -> dict:
    """Provenance stored in every dataset's ``info.description`` (config, held-out combos, tasks)."""
    vocab = vocab or make_vocab(config)
    return {
        "name": "mini-mmeb",
        "config": config.to_dict(),
        "heldout_combos": [list(p) for p in vocab.heldout],
        "tasks": [{"dataset": t.name, "meta_task": t.meta_task, "ood": t.ood} for t in selected_tasks(config)],
    }


def build_mini_mmeb(config: MiniMMEBConfig | None = None, progress: bool = False) -> dict:
    """Generate Mini-MMEB; returns ``{"mmeb", "caption_retrieval", "long_caption", "compositional"}`` DatasetDicts.

    ``mmeb`` has splits ``train`` and ``test``; the companion sets have split ``test``. Deterministic by
    ``config.seed`` (same seed: byte-equal images and equal texts).
    """
    from datasets import Dataset, DatasetDict, DatasetInfo

    config = config or MiniMMEBConfig()
    config.validate()
    vocab = make_vocab(config)
    images = _ImageStore(config.image_size)
    info = json.dumps(build_info(config, vocab))

    def dataset(rows: list[dict], features) -> Dataset:
        meta = DatasetInfo(description=info, features=features)
        return Dataset.from_dict(_columns(rows, features), features=features, info=meta)

    test_rows, test_keys = build_test_rows(config, vocab, images, progress)
    test = dataset(test_rows, test_features())
    images.renderer.release_images()
    train = dataset(build_train_rows(config, vocab, images, progress, exclude=test_keys), train_features())
    images.renderer.release_images()
    out = {"mmeb": DatasetDict({"train": train, "test": test})}
    feats = companion_features()
    for name, rows in build_companions(config, vocab, images).items():
        out[name] = DatasetDict({"test": dataset(rows, feats[name])})
    return out


# ----------------------------------------------------------------------------------------------- helpers


def eval_candidates(row: Mapping) -> list[dict]:
    """The candidates of one eval row as dicts ``{text, image, kind, scene}`` (``oracle_score(row, cand)`` works)."""
    return [
        {"text": t, "image": i, "kind": k, "scene": s}
        for t, i, k, s in zip(row["tgt_text"], row["tgt_image"], row["tgt_kind"], row["tgt_scene"])
    ]


def summary_rows(built: Mapping) -> list[dict]:
    """Per-task counts: train pairs, eval queries, mean candidates per query."""
    mmeb = built["mmeb"]
    train_names = mmeb["train"]["dataset"] if "train" in mmeb else []
    test = mmeb["test"].select_columns(["dataset", "meta_task", "ood", "tgt_kind"]) if "test" in mmeb else None
    stats: dict[str, dict] = {}
    if test is not None:
        for name, meta, ood, kinds in zip(test["dataset"], test["meta_task"], test["ood"], test["tgt_kind"]):
            s = stats.setdefault(
                name,
                {"dataset": name, "meta_task": meta, "ood": ood, "train": 0, "test": 0, "candidates": 0, "hard": 0},
            )
            s["test"] += 1
            s["candidates"] += len(kinds)
            s["hard"] += sum(1 for k in kinds if k not in ("gt", "random"))
    for name in train_names:
        stats[name]["train"] += 1
    for s in stats.values():
        s["candidates"] = round(s["candidates"] / max(1, s["test"]), 1)
        s["hard"] = round(s["hard"] / max(1, s["test"]), 1)
    return list(stats.values())


def format_summary(rows: Sequence[Mapping]) -> str:
    """A plain-text table of :func:`summary_rows`."""
    head = ["dataset", "meta_task", "ood", "train", "test", "candidates", "hard"]
    cells = [head] + [[str(r[h]) for h in head] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(head))) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
