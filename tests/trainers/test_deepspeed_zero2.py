"""DeepSpeed ZeRO-2 on the CPU: ``accelerate launch --config_file examples/configs/accelerate/zero2_2proc.yaml
examples/train.py`` trains the tiny recipe on 2 processes (DeepSpeed's CPU accelerator, gloo), its loss curve equals
the plain 1-process run's, its checkpoint holds the ZeRO-2 shards of both ranks, and a run resumed from it continues
the uninterrupted run. The runs and checks are ``benchmarks/zero2_check.py`` (the GPU device script runs the same
harness in bf16); this test reads its JSON. ~1 min 50 s on 2 shared cores; DeepSpeed's first use from an install
also compiles its shared-memory communication op (1–2.5 min more, cached in ~/.cache/torch_extensions)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "benchmarks" / "zero2_check.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("deepspeed") is None,
        reason="deepspeed is not installed (pip install -e '.[dev]' brings it; '.[deepspeed]' alone too)",
    ),
]


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("zero2")
    out = work / "zero2_cpu.json"
    command = [sys.executable, str(CHECK), "--device", "cpu", "--processes", "2", "--precisions", "fp32"]
    done = subprocess.run(
        [*command, "--workdir", str(work), "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert out.exists(), done.stdout[-3000:] + done.stderr[-5000:]
    return json.loads(out.read_text())


def test_every_run_finished(result: dict) -> None:
    assert set(result["runs"]) == {"plain_fp32", "zero2_fp32", "resumed_fp32"}
    for name, run in result["runs"].items():
        assert run["returncode"] == 0, f"{name}: {run['command']}\n{run.get('log_tail', '')}"
    assert result["versions"]["deepspeed"][0].isdigit()


def test_zero2_loss_curve_equals_the_plain_run(result: dict) -> None:
    """Same global batch (8 = 1 x 8 = 2 x 4), same seed, fp32: the 6 logged losses agree to 1e-4 (measured: ~3e-7)."""
    plain, zero2 = result["runs"]["plain_fp32"]["losses"], result["runs"]["zero2_fp32"]["losses"]
    assert list(plain) == list(zero2) == [str(step) for step in range(1, 7)]
    assert len(set(plain.values())) == 6  # the weights move: later losses depend on earlier updates
    for step, loss in plain.items():
        assert zero2[step] == pytest.approx(loss, rel=1e-4), step


def test_checkpoint_holds_zero2_state_of_both_ranks(result: dict) -> None:
    saved = result["checks"]["zero2_fp32_checkpoint"]
    assert saved["global_step_folder"] == "global_step3"
    assert saved["zero_stage"] == 2 and saved["dp_world_size"] == 2 and saved["train_batch_size"] == 8
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= set(
        saved["files"]
    )


def test_resumed_run_continues_the_uninterrupted_one(result: dict) -> None:
    """Resumed from checkpoint-3: trains steps 4-6 only, and logs the uninterrupted run's losses for them (the Adam
    moments come back from the ZeRO shards: with fresh moments, step 5 would differ)."""
    resumed, uninterrupted = result["runs"]["resumed_fp32"], result["runs"]["zero2_fp32"]
    assert resumed["global_step"] == 6 and resumed["steps_logged_by_this_run"] == 3
    for step in ("4", "5", "6"):
        assert resumed["losses"][step] == pytest.approx(uninterrupted["losses"][step], rel=1e-4), step
    assert result["failures"] == [] and result["ok"]
