"""The output-folder guard through the scripts: the same training command resumes its own run; another run, or a
reranker, is refused; push_to_hub refuses a folder holding another artifact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "examples" / "configs" / "embedder" / "tiny.yaml"
RERANKER_TINY = REPO / "examples" / "configs" / "reranker" / "tiny.yaml"
SHORT = ["--eval_data", "none", "--mini_mmeb_train_per_task", "4", "--logging_steps", "1", "--disable_tqdm", "true"]
pytestmark = pytest.mark.slow  # training runs of the scripts in subprocesses


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=900)


def test_the_same_command_resumes_its_own_run_and_other_runs_are_refused(tmp_path):
    out = tmp_path / "run"
    train = [str(REPO / "examples" / "train.py"), "--config", str(TINY), "--output_dir", str(out), *SHORT]
    first = _run(*train, "--max_steps", "2", "--save_steps", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.rmtree(out / "checkpoint-2")  # as if interrupted after step 1
    again = _run(*train, "--max_steps", "2", "--save_steps", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from checkpoint-1 of this run ({out})" in again.stdout
    results = json.loads((out / "all_results.json").read_text())
    assert results["train_resumed_from_step"] == 1 and "train_loss_since_resume" in results

    other = _run(*train, "--max_steps", "3", "--save_steps", "1")
    assert other.returncode != 0 and "other settings (max_steps: 2 -> 3)" in other.stderr, other.stderr[-2000:]
    reranker = [str(REPO / "examples" / "train_reranker.py"), "--config", str(RERANKER_TINY), "--output_dir", str(out)]
    refused = _run(*reranker, "--max_steps", "1")
    assert refused.returncode != 0 and "holds an embedder run" in refused.stderr, refused.stderr[-2000:]
    push = [str(REPO / "examples" / "push_to_hub.py"), "--artifact", "reranker", "--path", str(out)]
    staged = _run(*push, "--repo_id", "me/rr", "--dry_run", str(tmp_path / "staged"))
    assert staged.returncode != 0 and "holds an embedder" in staged.stderr, staged.stderr[-2000:]


def test_mining_resumes_its_shards_and_refuses_another_config(tmp_path):
    """A run killed after its 2nd judge shard says what it resumes; other settings in the same folder are refused."""
    recipe = tmp_path / "mine.yaml"
    config = yaml.safe_load((REPO / "examples" / "configs" / "mining" / "tiny.yaml").read_text())
    config["mini_mmeb"].update(train_pairs=18)
    recipe.write_text(yaml.safe_dump({**config, "shard_size": 4, "progress": False}))
    mine = [str(REPO / "examples" / "mine.py"), "--config", str(recipe), "--output_dir", str(tmp_path / "out")]
    env = {**os.environ, "UNIME_V2_MINE_KILL_AFTER_SHARDS": "2", "ACCELERATE_USE_CPU": "true"}
    killed = subprocess.run([sys.executable, *mine], capture_output=True, text=True, env=env, timeout=900)
    assert killed.returncode != 0, killed.stderr[-2000:]
    resumed = _run(*mine)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming mining: 2 of 5 judge shards done" in resumed.stdout, resumed.stdout[-2000:]
    other = _run(*mine, "--beta", "0.5")
    assert other.returncode != 0 and "other settings (beta: 0.001 -> 0.5)" in other.stderr, other.stderr[-2000:]
