"""Session-wide fixtures: tiny offline backbones are built once and shared by every test."""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from huggingface_hub import CommitInfo, HfApi, RepoUrl

from unime_v2.data_builders.tiny_backbones import BACKBONE_KINDS, build_tiny_backbone


# Tiny models on a 2-core machine: one intra-op thread was ~10x faster than two (64 items encoded in
# 0.12 s vs 1.2 s, with other jobs on the machine); subprocesses started by tests inherit OMP_NUM_THREADS.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built ``tiny:`` backbones go to a cache of this test session (subprocesses inherit it), not the user's."""
    path = tmp_path_factory.mktemp("unime_v2_cache")
    os.environ["UNIME_V2_CACHE"] = str(path)
    return path


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> ModuleType:
    """The script ``examples/<name>.py`` as a module named ``name`` (what ``python examples/<name>.py`` runs; not
    installed, so loaded by path). ``examples/`` is on ``sys.path`` only while it loads, so that a script can import
    its siblings and nothing else is shadowed (``examples/evaluate.py`` vs the ``evaluate`` package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.append(str(EXAMPLES))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


@pytest.fixture(scope="session")
def example_script() -> Callable[[str], ModuleType]:
    """:func:`load_example`: an ``examples/`` script as a module."""
    return load_example


@pytest.fixture(scope="session")
def tiny_backbone_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{kind: folder}`` for the tiny Qwen2-VL, Qwen2.5-VL and LLaVA-OneVision checkpoints (saved like Hub ones)."""
    root = tmp_path_factory.mktemp("tiny_backbones")
    return {kind: build_tiny_backbone(kind, root / kind, seed=0) for kind in BACKBONE_KINDS}


@pytest.fixture(scope="session")
def tiny_qwen2_vl_dir(tiny_backbone_dirs: dict[str, Path]) -> Path:
    """The tiny Qwen2-VL checkpoint folder (the backbone most tests use)."""
    return tiny_backbone_dirs["qwen2_vl"]


# ------------------------------------------------------------------------------------ publishing (docs/publishing.md)
_REPORT = {
    "settings": {
        "embedder": "TIGER-Lab/VLM2Vec-Qwen2VL-7B",
        "embedder_prompt_format": "official",
        "judge": "Qwen/Qwen2.5-VL-7B-Instruct",
        "judge_dtype": "bfloat16",
        "pool": "dataset",
        "delta": 0.95,
        "top_k": 50,
        "beta": 0.1,
        "num_negatives": 10,
        "interval": 5,
        "seed": 7,
        "prefix_sharing": True,
        "on_empty_pool": "skip",
        "data": "TIGER-Lab/MMEB-train",
        "data_split": "original",
    },
    "counts": {
        "records": 1200,
        "queries": 1198,
        "skipped_empty_pool": 2,
        "pairs_judged": 61098,
        "false_negatives_removed": 5123,
        "padded": 17,
        "fallbacks": 3,
        "pools_smaller_than_top_k": 40,
        "duplicate_candidates": 311,
        "duplicate_queries": 4,
    },
    "timings_s": {"embed": 12.5, "retrieve": 0.8, "judge": 301.25},
    "scores": {"positives": {"count": 1198, "mean": 0.81}},
}


@pytest.fixture(scope="session")
def mining_report() -> dict[str, Any]:
    """A mining ``report.json`` as ``mine`` writes it (settings, counts, timings, score summary)."""
    return copy.deepcopy(_REPORT)


class RecordingHub:
    """A local stand-in for the Hub: records create_repo and each commit's operations (no network)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.repos: list[dict] = []
        self.commits: list[dict] = []
        hub = self

        def create_repo(self, repo_id, **kwargs):
            hub.repos.append({"repo_id": repo_id, **kwargs})
            return RepoUrl(
                f"https://huggingface.co/{'datasets/' if kwargs.get('repo_type') == 'dataset' else ''}{repo_id}"
            )

        def create_commit(self, repo_id, operations, **kwargs):
            files = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}
            inodes = {op.path_in_repo: Path(op.path_or_fileobj).stat().st_ino for op in operations}
            hub.commits.append({"repo_id": repo_id, "files": files, "inodes": inodes, **kwargs})
            message = kwargs["commit_message"]
            return CommitInfo(f"https://huggingface.co/{repo_id}/commit/{len(hub.commits)}", message, "", "0" * 40)

        def refuse(self, *args, **kwargs):
            raise AssertionError("only create_repo + one create_commit may reach the Hub")

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        for name in ("upload_file", "upload_folder"):
            monkeypatch.setattr(HfApi, name, refuse)


@pytest.fixture
def recording_hub(monkeypatch: pytest.MonkeyPatch) -> RecordingHub:
    """The Hub replaced by a recorder for the test (``HfApi.create_repo`` / ``create_commit``)."""
    return RecordingHub(monkeypatch)
