"""Mini-MMEB: a generated, offline MMEB with every meta-task, companion sets and an oracle (docs/mini_mmeb.md)."""

from .builder import (
    MiniMMEBConfig,
    build_mini_mmeb,
    companion_features,
    eval_candidates,
    format_summary,
    make_vocab,
    summary_rows,
    task_table,
    test_features,
    train_features,
)
from .companion import COMPOSITIONAL_SUBSETS
from .export import export_companion_files, export_mmeb_files, load_mmeb_files
from .scenes import SceneRenderer, match_score, oracle_score, render_scene
from .tasks import META_TASKS, ONE_EDIT_KINDS, TASK_NAMES, MiniTask


__all__ = [
    "COMPOSITIONAL_SUBSETS",
    "META_TASKS",
    "MiniMMEBConfig",
    "MiniTask",
    "ONE_EDIT_KINDS",
    "SceneRenderer",
    "TASK_NAMES",
    "build_mini_mmeb",
    "companion_features",
    "eval_candidates",
    "export_companion_files",
    "export_mmeb_files",
    "format_summary",
    "load_mmeb_files",
    "make_vocab",
    "match_score",
    "oracle_score",
    "render_scene",
    "summary_rows",
    "task_table",
    "test_features",
    "train_features",
]
