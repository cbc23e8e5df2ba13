"""examples/train.py end to end: the tiny recipe learns, 1 vs 2 processes, kill and resume, AutoModel reload."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "examples" / "train.py"
TINY = REPO / "examples" / "configs" / "embedder" / "tiny.yaml"
pytestmark = pytest.mark.slow  # training runs of the script in subprocesses
# Short runs for the equivalence tests: few records, no evaluation, no warmup (so step 1 already moves weights).
SHORT = [
    "--eval_data",
    "none",
    "--mini_mmeb_train_per_task",
    "16",
    "--logging_steps",
    "1",
    "--disable_tqdm",
    "true",
    "--warmup_steps",
    "0",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_command(output_dir: Path, *overrides: str, processes: int = 1) -> list[str]:
    """``python train.py`` for one process; ``accelerate launch --multi_gpu`` for several (on CPU: gloo).

    ``accelerate launch --cpu --num_processes N`` would start only ONE process (accelerate's CPU launcher expects
    mpirun), so the multi-process CPU run goes through torchrun via ``--multi_gpu``.
    """
    script = [str(TRAIN), "--config", str(TINY), "--output_dir", str(output_dir), *overrides]
    if processes == 1:
        return [sys.executable, *script]
    launcher = ["accelerate", "launch", "--multi_gpu", "--num_processes", str(processes)]
    return [*launcher, "--main_process_port", str(free_port()), *script]


def _env() -> dict[str, str]:
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def start(command: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: int = 600) -> str:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"{' '.join(process.args)}\n{stdout[-2000:]}\n{stderr[-4000:]}"
    return stdout


def run(command: list[str], cwd: Path, timeout: int = 600) -> str:
    return finish(start(command, cwd), timeout)


def logged_losses(output_dir: Path) -> list[float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def summary(stdout: str) -> dict:
    line = next(line for line in stdout.splitlines() if line.startswith('{"unime_v2_summary"'))
    return json.loads(line)["unime_v2_summary"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The tiny recipe exactly as shipped (only the output folder changes)."""
    out = tmp_path_factory.mktemp("tiny_recipe")
    stdout = run(train_command(out / "run", "--disable_tqdm", "true"), cwd=out)
    return out / "run", summary(stdout)


def test_tiny_recipe_lowers_the_loss_and_raises_held_out_precision(tiny_run: tuple[Path, dict]) -> None:
    output_dir, result = tiny_run
    losses = logged_losses(output_dir)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert result["eval_num_rows"] == result["eval_untrained_num_rows"] == 160
    assert result["eval_precision_at_1"] > result["eval_untrained_precision_at_1"]


def test_saved_model_loads_with_automodel_in_a_new_process(tiny_run: tuple[Path, dict], tmp_path: Path) -> None:
    output_dir, _ = tiny_run
    assert not (output_dir / "adapter_config.json").exists()  # merged weights at the top, adapter in adapter/
    script = (
        "import json, torch\nfrom PIL import Image\nfrom transformers import AutoModel\n"
        f"model = AutoModel.from_pretrained({str(output_dir)!r}, trust_remote_code=True)\n"
        "image = Image.new('RGB', (64, 64), (200, 30, 30))\n"
        "emb = model.encode([{'text': '<|image_1|>\\nRepresent the given image.\\n', 'image': image},\n"
        "                    {'text': 'a large red circle', 'image': None}])\n"
        "print(json.dumps({'shape': list(emb.shape), 'norms': emb.norm(dim=-1).tolist(),\n"
        "                  'format': model.config.prompt_format}))\n"
    )
    result = json.loads(run([sys.executable, "-c", script], cwd=tmp_path).strip().splitlines()[-1])
    assert result["shape"] == [2, 64] and result["format"] == "official"
    assert all(abs(norm - 1) < 1e-4 for norm in result["norms"])


@pytest.mark.parametrize(
    ("loss_type", "layout"),
    [
        ("symmetric_kl", ["--length_buckets", "0"]),
        ("infonce", ["--length_buckets", "0"]),
        ("symmetric_kl", ["--length_buckets", "2"]),
        ("symmetric_kl", ["--pack_text_tokens", "48"]),
    ],
    ids=["symmetric_kl", "infonce", "buckets", "packed"],
)
def test_two_processes_follow_the_single_process_loss_curve(loss_type: str, layout: list[str], tmp_path: Path) -> None:
    """Same global batch (8 = 1 x 8 = 2 x 4), same seed: the first 5 logged losses agree. For InfoNCE this needs
    the cross-process gather of in-batch candidates with gradients for the local shard; with length buckets or
    packing, DDP sees several forward calls of the model before one backward (the two processes run bucketed or
    packed, the reference padded)."""
    overrides = [*SHORT, "--max_steps", "5", "--save_strategy", "no", "--loss_type", loss_type]
    one = start(train_command(tmp_path / "one", *overrides, "--per_device_train_batch_size", "8"), cwd=tmp_path)
    overrides += layout
    two = start(
        train_command(tmp_path / "two", *overrides, "--per_device_train_batch_size", "4", processes=2), tmp_path
    )
    finish(one), finish(two)
    one, two = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "two")
    assert len(one) == len(two) == 5
    assert len(set(one)) == 5  # the weights move: later losses depend on earlier gradients
    for a, b in zip(one, two):
        assert b == pytest.approx(a, rel=1e-4)


def test_length_buckets_and_packing_follow_the_padded_loss_curve(tmp_path: Path) -> None:
    """``--length_buckets 2`` (image items in one forward, text items in two length runs) and ``--pack_text_tokens
    48`` (text items packed padding-free) train the same model as the one padded batch: the first 5 logged losses
    agree, so the options only change the padding computed."""
    overrides = [*SHORT, "--max_steps", "5", "--save_strategy", "no", "--per_device_train_batch_size", "8"]
    variants = {"padded": [], "bucketed": ["--length_buckets", "2"], "packed": ["--pack_text_tokens", "48"]}
    runs = [
        start(train_command(tmp_path / name, *overrides, *extra), cwd=tmp_path) for name, extra in variants.items()
    ]
    for process in runs:
        finish(process)
    padded, *others = [logged_losses(tmp_path / name) for name in variants]
    assert len(padded) == 5 and len(set(padded)) == 5
    for losses in others:
        assert len(losses) == 5
        for a, b in zip(padded, losses):
            assert b == pytest.approx(a, rel=1e-4)


def test_killed_run_resumes_to_the_same_final_weights(tmp_path: Path) -> None:
    """Kill (SIGKILL) once a checkpoint is complete, resume from it, and end with the same weights as a run that
    was never interrupted. LoRA dropout and random negative selection are on, so RNG state must be restored too."""
    overrides = [
        *SHORT,
        "--max_steps",
        "12",
        "--save_steps",
        "3",
        "--save_total_limit",
        "10",
        "--lora_dropout",
        "0.1",
        "--negative_selection",
        "random",
    ]
    straight_run = start(train_command(tmp_path / "straight", *overrides), cwd=tmp_path)

    interrupted = tmp_path / "interrupted"
    checkpoint = interrupted / "checkpoint-3"
    process = subprocess.Popen(
        train_command(interrupted, *overrides),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (checkpoint / "trainer_state.json").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (checkpoint / "trainer_state.json").exists()
    assert not (interrupted / "adapter").exists() or process.returncode == 0  # killed before the end (normally)

    run(train_command(interrupted, *overrides, "--resume_from_checkpoint", str(checkpoint)), cwd=tmp_path)
    finish(straight_run)
    straight = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    resumed = load_file(interrupted / "adapter" / "adapter_model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=1e-7)
