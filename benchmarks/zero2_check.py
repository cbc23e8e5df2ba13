"""DeepSpeed ZeRO-2 against the plain run: the tiny recipe's loss curve, a checkpoint, a resume (docs/training.md).

    python benchmarks/zero2_check.py --device cpu --out zero2_cpu.json                 # 2 processes, gloo (the test)
    python benchmarks/zero2_check.py --device cuda --processes 1 --precisions bf16 \
        --routes accelerate,recipe --out zero2_gpu.json                                # one GPU (the device script)

Every run is ``examples/train.py`` on ``examples/configs/embedder/tiny.yaml`` (few records, no evaluation, no warmup,
``--logging_steps 1``), launched as a user would, from the repository root:

* ``plain_<precision>``: ``python examples/train.py`` (one process, no DeepSpeed, the whole batch of 8);
* ``zero2_<precision>``: ``accelerate launch --config_file examples/configs/accelerate/zero2_2proc.yaml`` (accelerate's
  DEEPSPEED type, ``examples/configs/accelerate/deepspeed_zero2.json``; 8 = processes x per-device batch), saving a
  checkpoint at ``--save_step``;
* ``resumed_<precision>`` (first precision only): the ZeRO-2 command again in a new folder with
  ``--resume_from_checkpoint <zero2>/checkpoint-<save_step>``;
* ``recipe_<precision>`` (``--routes ...,recipe``): the README's route, a DDP accelerate config
  (``accelerate/8gpu.yaml`` on a GPU, ``accelerate/cpu_2proc.yaml`` on the CPU) with the recipe key
  ``--deepspeed examples/configs/accelerate/deepspeed_zero2.json``, as the ``*_paper.yaml`` recipes set it.

Checks (``checks`` in the JSON, ``ok`` overall): each ZeRO-2 curve equals the plain curve of its precision within
``--tolerance`` (relative, per logged step; default 1e-4 in fp32, 3e-2 in bf16); the checkpoint holds DeepSpeed's ZeRO
stage-2 state (``global_step<k>/[bf16_]zero_pp_rank_<r>_mp_rank_00_optim_states.pt`` for every rank, stage 2 and the
data-parallel world size in ``mp_rank_00_model_states.pt``); the resumed run trains only the steps after the
checkpoint, ends at the same global step and logs the uninterrupted run's losses for them. On the CPU, DeepSpeed's CPU
accelerator runs over gloo (no oneCCL, no CPUAdam: Trainer's torch AdamW under ``zero_allow_untested_optimizer``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


REPO = Path(__file__).resolve().parents[1]
TRAIN = "examples/train.py"
TINY = "examples/configs/embedder/tiny.yaml"
ZERO2_ACCELERATE = "examples/configs/accelerate/zero2_2proc.yaml"
ZERO2_JSON = "examples/configs/accelerate/deepspeed_zero2.json"
DDP_ACCELERATE = {"cpu": "examples/configs/accelerate/cpu_2proc.yaml", "cuda": "examples/configs/accelerate/8gpu.yaml"}
GLOBAL_BATCH = 8
DEFAULT_TOLERANCE = {"fp32": 1e-4, "bf16": 3e-2}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def short_overrides(steps: int, device: str, precision: str) -> list[str]:
    """The tiny recipe cut to a few steps: few records, no evaluation, no warmup, a loss every step."""
    overrides = [
        "--eval_data", "none", "--mini_mmeb_train_per_task", "16", "--warmup_steps", "0",
        "--logging_steps", "1", "--disable_tqdm", "true", "--max_steps", str(steps),
    ]  # fmt: skip
    if device == "cuda":
        overrides += ["--use_cpu", "false"]  # the tiny recipe says use_cpu: true
    if precision == "bf16":
        overrides += ["--bf16", "true"]
    return overrides


def train_args(output_dir: Path, overrides: Sequence[str]) -> list[str]:
    return [TRAIN, "--config", TINY, "--output_dir", str(output_dir), *overrides]


def launch(config_file: str, processes: int) -> list[str]:
    """``accelerate launch`` through this interpreter (the same environment, with or without a console script)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config_file,
            "--num_processes", str(processes), "--main_process_port", str(free_port())]  # fmt: skip


def run(name: str, command: list[str], output_dir: Path, timeout: float) -> dict[str, Any]:
    """One training run from the repository root; its losses and global step from ``trainer_state.json``."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TOKENIZERS_PARALLELISM": "false"}
    log = output_dir.parent / f"{name}.log"
    start = time.perf_counter()
    with log.open("w") as handle:
        try:
            done = subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout)
            returncode = done.returncode
        except subprocess.TimeoutExpired:
            returncode = "timeout"
    result: dict[str, Any] = {"command": " ".join(command), "seconds": round(time.perf_counter() - start, 1)}
    result["returncode"] = returncode
    state_file = output_dir / "trainer_state.json"
    if returncode == 0 and state_file.exists():
        state = json.loads(state_file.read_text())
        result["global_step"] = state["global_step"]
        result["losses"] = {str(e["step"]): e["loss"] for e in state["log_history"] if "loss" in e}
        result["steps_logged_by_this_run"] = log.read_text().count("{'loss':")
    else:
        result["log_tail"] = log.read_text()[-4000:]
    print(json.dumps({name: {k: v for k, v in result.items() if k != "log_tail"}}), flush=True)
    if "log_tail" in result:
        print(result["log_tail"], file=sys.stderr, flush=True)
    return result


def max_rel_diff(reference: dict[str, float], other: dict[str, float], steps: Sequence[str]) -> float | None:
    if not all(step in reference and step in other for step in steps):
        return None
    return max(abs(other[s] - reference[s]) / max(abs(reference[s]), 1e-12) for s in steps)


def zero_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """What DeepSpeed saved in a Trainer checkpoint: the ZeRO files, the stage and the data-parallel world size."""
    import torch

    folders = sorted(checkpoint.glob("global_step*"))
    if not folders:
        return {"global_step_folder": None}
    folder = folders[-1]
    model_states = torch.load(folder / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    config = model_states.get("ds_config", {})
    return {
        "global_step_folder": folder.name,
        "files": sorted(p.name for p in folder.iterdir()),
        "zero_stage": config.get("zero_optimization", {}).get("stage"),
        "bf16": config.get("bf16", {}).get("enabled"),
        "train_batch_size": config.get("train_batch_size"),
        "dp_world_size": model_states.get("dp_world_size"),
        "ds_version": model_states.get("ds_version"),
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("torch", "transformers", "accelerate", "peft", "trl", "datasets", "deepspeed"):
        try:
            found[name] = __import__(name).__version__
        except Exception as error:  # noqa: BLE001 - recorded, not raised
            found[name] = f"unavailable: {error!r}"
    return found


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--processes", type=int, default=None, help="ZeRO-2 world size (default: 2 on cpu, 1 on cuda)")
    parser.add_argument("--precisions", default="fp32", help="comma-separated, of fp32 and bf16")
    parser.add_argument("--routes", default="accelerate", help="accelerate (zero2_2proc.yaml), recipe (--deepspeed)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--save_step", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=None, help="relative; default 1e-4 fp32, 3e-2 bf16")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per run")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    args = parser.parse_args(argv)
    processes = args.processes or (2 if args.device == "cpu" else 1)
    if GLOBAL_BATCH % processes:
        parser.error(f"--processes must divide the global batch {GLOBAL_BATCH}")
    precisions = [p for p in args.precisions.split(",") if p]
    routes = [r for r in args.routes.split(",") if r]
    with tempfile.TemporaryDirectory(prefix="zero2_check_") as scratch:
        work = args.workdir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        result = check(work, args, processes, precisions, routes)
    print(json.dumps({"zero2_check_ok": result["ok"], "checks": result["checks"]}), flush=True)
    return result


def check(work: Path, args: argparse.Namespace, processes: int, precisions: list[str], routes: list[str]) -> dict:
    """The runs and checks; the JSON (``--out``) is rewritten after every run, so a killed check keeps what ran."""
    per_device = ["--per_device_train_batch_size", str(GLOBAL_BATCH // processes)]
    runs: dict[str, dict[str, Any]] = {}
    checks: dict[str, Any] = {}
    failures: list[str] = []
    settings = {**vars(args), "processes": processes, "workdir": str(work), "out": str(args.out)}
    report = {"settings": settings, "versions": versions(), "runs": runs, "checks": checks, "failures": failures}
    report["ok"] = None  # not finished

    def write() -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1, default=str))

    save = ["--save_steps", str(args.save_step), "--save_total_limit", "10"]
    for index, precision in enumerate(precisions):
        tolerance = args.tolerance if args.tolerance is not None else DEFAULT_TOLERANCE[precision]
        short = short_overrides(args.steps, args.device, precision)
        steps = [str(s) for s in range(1, args.steps + 1)]
        plain_dir = work / f"plain_{precision}"
        whole_batch = ["--per_device_train_batch_size", str(GLOBAL_BATCH)]
        command = [sys.executable, *train_args(plain_dir, [*short, "--save_strategy", "no", *whole_batch])]
        runs[f"plain_{precision}"] = plain = run(f"plain_{precision}", command, plain_dir, args.timeout)
        write()
        variants: dict[str, tuple[list[str], list[str]]] = {}  # name: (launcher, extra recipe fields)
        if "accelerate" in routes:
            variants[f"zero2_{precision}"] = (launch(ZERO2_ACCELERATE, processes), [])
        if "recipe" in routes:
            variants[f"recipe_{precision}"] = (
                launch(DDP_ACCELERATE[args.device], processes),
                ["--deepspeed", ZERO2_JSON],
            )
        for name, (launcher, extra) in variants.items():
            out_dir = work / name
            command = [*launcher, *train_args(out_dir, [*short, *extra, *per_device, *save])]
            runs[name] = zero2 = run(name, command, out_dir, args.timeout)
            diff = max_rel_diff(plain.get("losses", {}), zero2.get("losses", {}), steps)
            checks[f"{name}_vs_plain_max_rel_diff"] = diff
            checks[f"{name}_tolerance"] = tolerance
            if diff is None or diff > tolerance:
                failures.append(f"{name}: loss curve vs plain_{precision}: {diff} (tolerance {tolerance})")
            saved = zero_checkpoint(out_dir / f"checkpoint-{args.save_step}") if zero2["returncode"] == 0 else {}
            checks[f"{name}_checkpoint"] = saved
            shard = (
                "bf16_zero_pp_rank_{}_mp_rank_00_optim_states.pt"
                if precision == "bf16"
                else "zero_pp_rank_{}_mp_rank_00_optim_states.pt"
            )
            ranks = {shard.format(rank) for rank in range(processes)}
            if saved.get("zero_stage") != 2 or saved.get("dp_world_size") != processes:
                failures.append(f"{name}: checkpoint is not ZeRO stage 2 over {processes} processes: {saved}")
            elif not ranks <= set(saved.get("files", [])):
                failures.append(f"{name}: checkpoint lacks the per-rank optimizer shards {sorted(ranks)}")
            write()
        if index == 0 and f"zero2_{precision}" in runs and runs[f"zero2_{precision}"]["returncode"] == 0:
            name, source = f"resumed_{precision}", work / f"zero2_{precision}" / f"checkpoint-{args.save_step}"
            out_dir = work / name
            resume = ["--resume_from_checkpoint", str(source)]
            command = [
                *launch(ZERO2_ACCELERATE, processes),
                *train_args(out_dir, [*short, *per_device, *save, *resume]),
            ]
            runs[name] = resumed = run(name, command, out_dir, args.timeout)
            after = steps[args.save_step :]
            diff = max_rel_diff(runs[f"zero2_{precision}"]["losses"], resumed.get("losses", {}), after)
            resumed_tolerance = 1e-4 if precision == "fp32" else 1e-2
            checks[f"{name}_vs_uninterrupted_max_rel_diff"] = diff
            checks[f"{name}_global_step"] = resumed.get("global_step")
            checks[f"{name}_steps_trained"] = resumed.get("steps_logged_by_this_run")
            if diff is None or diff > resumed_tolerance:
                failures.append(f"{name}: losses after the checkpoint differ from the uninterrupted run: {diff}")
            if resumed.get("global_step") != args.steps or resumed.get("steps_logged_by_this_run") != len(after):
                failures.append(f"{name}: expected {len(after)} steps trained up to {args.steps}: {resumed}")
            write()
    for name, result in runs.items():
        if result["returncode"] != 0:
            failures.append(f"{name}: exit status {result['returncode']}")
    report["ok"] = not failures
    write()
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
