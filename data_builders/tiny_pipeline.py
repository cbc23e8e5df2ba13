"""The embedded default end to end (judge -> mine -> train), each stage the project's own script in a subprocess.

Used by ``examples/run_tiny_pipeline.py``; every figure in its summary table is read back from the stages' own
output files, never computed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TinyPipelineArguments:
    """Settings of the tiny end-to-end run (``examples/run_tiny_pipeline.py``)."""

    output_dir: str = field(default="runs/tiny", metadata={"help": "Every stage writes under this folder."})
    seed: int = field(default=0, metadata={"help": "Seeds the judge, the mining draws and the embedder training."})
    judge_steps: int = field(default=300, metadata={"help": "Training steps of the tiny judge."})


def run_stage(name: str, command: list[str], done_marker: Path, log_dir: Path) -> float:
    """Run one stage as a subprocess (output streamed and logged); skip it if ``done_marker`` exists."""
    if done_marker.exists():
        print(f"\n=== {name}: reusing {done_marker.parent}", flush=True)
        return 0.0
    print(f"\n=== {name}: {' '.join(command)}", flush=True)
    start = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread per process is fastest on a small CPU
    with open(log_dir / f"{name}.log", "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
        if process.wait() != 0:
            raise SystemExit(f"stage {name!r} failed (exit {process.returncode}); see {log_dir / (name + '.log')}")
    return time.time() - start


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def summary_table(out: Path, seconds: dict[str, float]) -> str:
    """One markdown table of what each stage produced, read back from the stages' own output files."""
    judge = read_json(out / "judge" / "judge_training.json")
    mined = read_json(out / "mined" / "report.json")
    trained = read_json(out / "embedder" / "all_results.json")
    losses = [
        entry["loss"]
        for entry in read_json(out / "embedder" / "trainer_state.json").get("log_history", [])
        if "loss" in entry
    ]
    rows = [("stage", "result", "seconds")]
    before = judge.get("before", {}).get("heldout_in_pool", {})
    after = judge.get("after", {}).get("heldout_in_pool", {})
    if before and after:
        rows.append(
            (
                "judge (tiny Qwen2.5-VL, pairwise Yes/No)",
                f"AUC vs oracle {before.get('auc', float('nan')):.3f} -> {after.get('auc', float('nan')):.3f}",
                f"{seconds.get('judge', 0):.0f}",
            )
        )
    counts = mined.get("counts", {})
    if counts:
        rows.append(
            (
                "mine (tiny embedder + learned judge)",
                f"{counts.get('queries')} queries, {counts.get('false_negatives_removed', '?')} false negatives "
                f"removed, {counts.get('padded', '?')} padded, {counts.get('fallbacks', '?')} fallbacks",
                f"{seconds.get('mine', 0):.0f}",
            )
        )
    if trained and losses:
        rows.append(
            (
                "train (UniME-V2 embedder, LoRA)",
                f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; held-out precision@1 "
                f"{trained['eval_untrained_precision_at_1']:.3f} -> {trained['eval_precision_at_1']:.3f}",
                f"{seconds.get('train', 0):.0f}",
            )
        )
    lines = [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.insert(1, "|---|---|---|")
    return "\n".join(lines)
