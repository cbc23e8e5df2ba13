"""examples/push_to_hub.py: --dry_run stages the repository folder, an upload is one commit, bad input fails first."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from unime_v2.data_builders.formats.mined import MINED_FEATURES, make_mined_row
from unime_v2.data_builders.mining.report import write_report
from unime_v2.modeling_unime_v2 import UniMEV2Model


REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "push_to_hub.py"


def _run(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *argv], cwd=REPO, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def saved_embedder(tiny_qwen2_vl_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("saved")
    UniMEV2Model.from_backbone(str(tiny_qwen2_vl_dir)).save_pretrained(out)
    return out


@pytest.mark.slow
def test_help_lists_every_setting():
    done = _run("--help")
    assert done.returncode == 0
    for name in ("--artifact", "--path", "--repo_id", "--private", "--dry_run", "--eval_results", "--config"):
        assert name in done.stdout, name


@pytest.mark.slow
def test_dry_run_stages_the_embedder_repository(saved_embedder, tmp_path):
    done = _run(
        "--artifact", "embedder", "--path", str(saved_embedder), "--repo_id", "me/x", "--dry_run", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    staged = sorted(p.name for p in tmp_path.iterdir())
    assert staged == sorted({*(p.name for p in saved_embedder.iterdir()), "README.md"})
    assert f"staged {len(staged)} files in {tmp_path}" in done.stdout


def test_dataset_upload_is_one_commit(tmp_path, mining_report, recording_hub, capsys):
    row = make_mined_row(
        query_text="q", pos_text="p", pos_score=0.9, neg_texts=[f"n{i}" for i in range(10)], neg_scores=[0.2] * 10
    )
    Dataset.from_list([row] * 3, features=MINED_FEATURES).save_to_disk(str(tmp_path / "mined" / "dataset"))
    write_report(mining_report, tmp_path / "mined")
    main = runpy.run_path(str(SCRIPT), run_name="not_main")["main"]
    main(["--artifact", "dataset", "--path", str(tmp_path / "mined"), "--repo_id", "me/mined", "--private", "true"])
    (commit,) = recording_hub.commits
    assert recording_hub.repos[0]["repo_type"] == "dataset" and recording_hub.repos[0]["private"] is True
    assert "data/train-00000-of-00001.parquet" in commit["files"] and "README.md" in commit["files"]
    assert "pushed" in capsys.readouterr().out and commit["commit_message"] == "Upload with unime-v2"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--artifact", "embedder", "--repo_id", "me/x"], "--path required"),
        (["--artifact", "model", "--path", ".", "--repo_id", "me/x"], "unknown artifact 'model'"),
        (["--artifact", "embedder", "--path", "examples", "--repo_id", "me/x"], "not a saved model folder"),
    ],
)
@pytest.mark.slow
def test_bad_arguments_name_the_problem(argv, message):
    done = _run(*argv)
    assert done.returncode != 0 and message in done.stderr, done.stderr[-2000:]
