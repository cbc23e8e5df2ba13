"""The whole UniME-V2 pipeline, end to end, on the embedded default: tiny offline backbones + mini-MMEB, on a CPU.

    python examples/run_tiny_pipeline.py --output_dir runs/tiny

Stages (each is the project's own command, run as a user would run it; the log shows each command):

1. **judge** — ``examples/train_tiny_judge.py``: a tiny Qwen2.5-VL learns to answer the judge prompt Yes/No on
   mini-MMEB training pairs (the pairwise half of the reranker objective). A random tiny judge would give noise,
   and mini-MMEB's oracle is only a measuring stick, never a training signal.
2. **mine** — ``examples/mine.py`` with ``examples/configs/mine_tiny.yaml``: a tiny embedder retrieves each
   query's top 50 from its dataset's pool (faiss), the learned judge scores every pair (prefix-shared), the
   sampler keeps 10 hard negatives; the result is a mined dataset, its report and the authors' JSON.
3. **train** — ``examples/train.py`` with ``examples/configs/tiny.yaml`` on the mined dataset: the UniME-V2
   embedder (LoRA, symmetric-KL to the judge's soft scores), precision@1 on held-out mini-MMEB before and after.

The final table is also written to ``<output_dir>/summary.md``. Stages whose output already exists are reused
(delete the folder to start over), so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


EXAMPLES = Path(__file__).resolve().parent


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judge_steps", type=int, default=300)
    args = parser.parse_args()
    out = Path(args.output_dir).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    python = sys.executable
    seconds = {
        "judge": run_stage(
            "judge",
            [
                python,
                str(EXAMPLES / "train_tiny_judge.py"),
                "--output_dir",
                str(out / "judge"),
                "--seed",
                str(args.seed),
                "--max_steps",
                str(args.judge_steps),
            ],
            out / "judge" / "judge_training.json",
            out / "logs",
        ),
        "mine": run_stage(
            "mine",
            [
                python,
                str(EXAMPLES / "mine.py"),
                "--config",
                str(EXAMPLES / "configs" / "mine_tiny.yaml"),
                "--output_dir",
                str(out / "mined"),
                "--set",
                f"judge={json.dumps(str(out / 'judge'))}",
                f"seed={args.seed}",
            ],
            out / "mined" / "report.json",
            out / "logs",
        ),
        "train": run_stage(
            "train",
            [
                python,
                str(EXAMPLES / "train.py"),
                str(EXAMPLES / "configs" / "tiny.yaml"),
                "--output_dir",
                str(out / "embedder"),
                "--train_data",
                str(out / "mined" / "dataset"),
                "--seed",
                str(args.seed),
            ],
            out / "embedder" / "all_results.json",
            out / "logs",
        ),
    }
    table = summary_table(out, seconds)
    (out / "summary.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nmined dataset: {out / 'mined' / 'dataset'}   trained embedder: {out / 'embedder'}")


if __name__ == "__main__":
    main()
