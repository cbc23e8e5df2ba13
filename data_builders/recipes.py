"""The embedded defaults' grammar (spec strings) and the cache; the parser of every script's recipe is
:class:`~unime_v2.trainers.arguments.RecipeParser`.

Spec strings name the embedded defaults wherever a checkpoint or a dataset is expected:

* ``tiny:<kind>[:<seed>]`` — a tiny random backbone (``qwen2_vl``, ``qwen2_5_vl``, ``llava_onevision``), built once
  into ``<cache>/tiny_backbones/<kind>-seed<seed>``;
* ``tiny:pretrained`` — the pretrained tiny Qwen2-VL shipped in ``data_builders/assets`` (docs/tiny_pretrained_vlm.md);
* ``mini_mmeb`` — the generated benchmark's held-out rows (evaluation data);
* ``oracle:mini_mmeb`` — mini-MMEB training records with ORACLE scores standing in for judge scores (demo only);
* ``judge_pairs:mini_mmeb`` — Yes/No judge pairs of mini-MMEB train facts
  (:func:`~unime_v2.data_builders.formats.judge_pairs.mini_mmeb_judge_pairs`).

The cache is ``$UNIME_V2_CACHE`` or ``~/.cache/unime_v2``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from .storage import atomic_directory
from .tiny_backbones import BACKBONE_KINDS, build_tiny_backbone, shipped_tiny_judge, shipped_tiny_vlm


TINY_PREFIX = "tiny:"
PRETRAINED_TINY = "tiny:pretrained"
TINY_JUDGE = "tiny:judge"
MINI_MMEB = "mini_mmeb"
ORACLE_MINI_MMEB = "oracle:mini_mmeb"
LABELS_MINI_MMEB = "labels:mini_mmeb"
CACHE_ENV = "UNIME_V2_CACHE"


def default_cache_dir() -> Path:
    """Where built tiny backbones and other reusable artifacts live: ``$UNIME_V2_CACHE`` or ``~/.cache/unime_v2``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "unime_v2")


def parse_tiny_spec(spec: str) -> tuple[str, int] | None:
    """``tiny:<kind>[:<seed>]`` → ``(kind, seed)``; ``None`` for anything else (a folder or a Hub id)."""
    if not spec.startswith(TINY_PREFIX):
        return None
    kind, _, seed = spec[len(TINY_PREFIX) :].partition(":")
    if kind not in BACKBONE_KINDS:
        raise ValueError(f"{spec!r}: unknown tiny backbone kind {kind!r}; choose one of {BACKBONE_KINDS}")
    if seed and not seed.isdigit():
        raise ValueError(f"{spec!r}: the seed after the kind must be a whole number, got {seed!r}")
    return kind, int(seed or 0)


def resolve_backbone(
    spec: str, cache_dir: str | Path | None = None, main_process_first: Callable | None = None
) -> str:
    """A checkpoint folder or Hub id for ``spec``: as is, or a ``tiny:`` backbone built once into the cache.

    Args:
        spec: a folder, a Hub id, ``tiny:<kind>[:<seed>]``, ``tiny:pretrained`` (the shipped tiny VLM) or
            ``tiny:judge`` (the shipped tiny judge).
        cache_dir: the cache root (default :func:`default_cache_dir`).
        main_process_first: a context-manager factory (``PartialState().main_process_first``) so that only the
            main process builds under a multi-process launch; the others wait and reuse the folder.
    """
    if spec == PRETRAINED_TINY:
        return str(shipped_tiny_vlm())
    if spec == TINY_JUDGE:
        return str(shipped_tiny_judge())
    parsed = parse_tiny_spec(spec)
    if parsed is None:
        return spec
    kind, seed = parsed
    target = Path(cache_dir or default_cache_dir()) / "tiny_backbones" / f"{kind}-seed{seed}"
    with main_process_first() if main_process_first else nullcontext():
        if not target.exists():
            with atomic_directory(target) as tmp:
                build_tiny_backbone(kind, tmp, seed=seed)
    return str(target)
