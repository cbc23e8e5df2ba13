"""examples/make_tiny_judge.py at its smallest size: both stages run, the record holds the held-out measurements,
and what it ships loads as the judge it measured (docs/tiny_judge.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unime_v2.modeling_unime_v2 import UniMEV2Reranker


REPO = Path(__file__).resolve().parents[2]
QUERY = {"text": "Find me an everyday image that matches the given caption: a red circle\n", "image": None}
CANDIDATES = [{"text": "a small red circle", "image": None}, {"text": "a large blue square", "image": None}]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_judge")
    command = [
        sys.executable,
        str(REPO / "examples" / "make_tiny_judge.py"),
        "--output_dir",
        str(out),
        "--size",
        "small",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_the_record_holds_both_stages_and_the_held_out_measurements(made: Path) -> None:
    record = json.loads((made / "judge" / "TINY_JUDGE.json").read_text())
    assert set(record["seconds"]) == {"pretrained", "judge", "measure"}
    assert record["pretrain"]["lm_loss_after"]["all"] < record["pretrain"]["lm_loss_before"]["all"]
    for when in ("before", "after"):
        for key in ("heldout_in_pool", "heldout_hard_distractors"):
            figures = record[when][key]["all"]
            assert 0.0 <= figures["auc"] <= 1.0 and figures["num_queries"] == 3 * record["heldout_rows_per_task"]
    judge = UniMEV2Reranker.from_pretrained(str(made / "judge"))
    assert record["parameters"] == sum(p.numel() for p in judge.parameters())
    settings = json.loads((made / "judge" / "unime_v2_run.json").read_text())
    assert "labels:mini_mmeb" in json.dumps(settings) and "oracle:mini_mmeb" not in json.dumps(settings)


@pytest.mark.slow
def test_what_it_ships_loads_without_code_and_scores_as_the_judge(made: Path, tmp_path: Path, example_script) -> None:
    target = example_script("make_tiny_judge").ship(made / "judge", tmp_path / "asset")
    assert not list(target.glob("*.py")) and not (target / "trainer_state.json").exists()
    assert (target / "TINY_JUDGE.json").exists()
    original = UniMEV2Reranker.from_pretrained(str(made / "judge"), dtype=torch.float32)
    shipped = UniMEV2Reranker.from_pretrained(str(target), dtype=torch.float32)
    assert shipped.config.pair_format == "judge"
    torch.testing.assert_close(
        torch.as_tensor(shipped.score(QUERY, CANDIDATES)), torch.as_tensor(original.score(QUERY, CANDIDATES))
    )
