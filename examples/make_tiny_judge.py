"""Make the shipped tiny instruct judge: the miniature of the paper's Qwen2.5-VL-7B judge (docs/tiny_judge.md).

    python examples/make_tiny_judge.py --output_dir runs/tiny_judge                       # the shipped judge's recipe
    python examples/make_tiny_judge.py --output_dir runs/tiny_judge --ship true           # ... and replace the asset
    python examples/make_tiny_judge.py --output_dir /tmp/j --size small                   # a smoke run (the test's)

Stages, each the project's own script, deterministic by seed (same machine, same thread count):

1. ``pretrained``: generative pretraining of a tiny Qwen2.5-VL about three times the shipped tiny VLM's parameters
   (``examples/pretrain_tiny_vlm.py``: image -> caption / answer / label, text LM, all on mini-MMEB TRAINING facts);
2. ``judge``: instruction-style judging (``examples/train_reranker.py --config
   examples/configs/reranker/tiny_instruct_judge.yaml``): the authors' judge prompt, "Yes" for the positive, "No"
   for one-edit hard distractors and in-pool targets, and the listwise answer format, on training facts' labels;
3. ``measure``: the judge against mini-MMEB's oracle on held-out rows (facts never in any training data), in-pool
   and on one-edit hard distractors, before and after stage 2 (``heldout_judge_quality``): ``TINY_JUDGE.json``.

The oracle only measures; nothing here trains on it. ``--ship true`` copies the judge's files into
``data_builders/assets/tiny_judge_qwen25vl`` (what ``shipped_tiny_judge()`` loads and the quickstart mines with).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quickstart import run_stage  # the sibling script (examples/ is the script's sys.path[0])

from unime_v2.data_builders.tiny_backbones import ASSETS, shipped_tiny_vlm
from unime_v2.trainers.arguments import RecipeParser
from unime_v2.trainers.run_folder import claim_output_dir, run_settings


SIZES: dict[str, dict[str, Any]] = {
    "default": {
        "hidden_size": 256,
        "num_layers": 4,
        "vision_embed_dim": 96,
        "vision_depth": 2,
        "pretrain_records": 6000,
        "pretrain_steps": 1200,
        "judge_records_per_task": 1000,
        "judge_steps": 1500,
        "eval_rows": 32,
    },
    "small": {
        "hidden_size": 64,
        "num_layers": 2,
        "vision_embed_dim": 32,
        "vision_depth": 1,
        "pretrain_records": 200,
        "pretrain_steps": 10,
        "judge_records_per_task": 16,
        "judge_steps": 4,
        "eval_rows": 3,
    },
}
TASKS = ("MiniImageNet-cls", "MiniCOCO-i2t", "MiniCOCO-t2i")
RUN_FILES = ("trainer_state.json", "training_args.bin", "train_results.json", "all_results.json", "unime_v2_run.json",
             "modules.json", "config_sentence_transformers.json", "README.md", ".done")  # fmt: skip
"""Files of the judge folder the shipped asset leaves out: the training run's own (its record is ``TINY_JUDGE.json``)
and the remote-code loaders; with the ``.py`` files they would be stale copies of ``modeling_unime_v2/``, so the
asset is loaded by the installed package (``UniMEV2Reranker.from_pretrained``)."""


@dataclass
class TinyJudgeArguments:
    """Settings of ``examples/make_tiny_judge.py``."""

    output_dir: str = field(default="runs/tiny_judge", metadata={"help": "Every stage writes under this folder."})
    seed: int = field(default=0, metadata={"help": "Seeds the corpus, the init, the data order and the draws."})
    size: str = field(default="default", metadata={"help": f"Preset: {' | '.join(SIZES)} (small: a smoke run)."})
    threads: int = field(
        default=1, metadata={"help": "torch threads per stage (1: robust on a shared 2-core machine)."}
    )
    ship: bool = field(default=False, metadata={"help": "Copy the judge into data_builders/assets afterwards."})
    overwrite: bool = field(default=False, metadata={"help": "Start over instead of reusing finished stages."})

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"--size {self.size!r}; choose one of {tuple(SIZES)}")
        if self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")


def stage_commands(args: TinyJudgeArguments, examples: Path) -> dict[str, list[str]]:
    """The command line of the two training stages."""
    out, size, python = Path(args.output_dir).resolve(), SIZES[args.size], sys.executable
    return {
        "pretrained": [python, str(examples / "pretrain_tiny_vlm.py"), "--output_dir", str(out / "pretrained"),
                       "--kind", "qwen2_5_vl", "--seed", str(args.seed), "--hidden_size", str(size["hidden_size"]),
                       "--num_layers", str(size["num_layers"]), "--vision_embed_dim", str(size["vision_embed_dim"]),
                       "--vision_depth", str(size["vision_depth"]), "--records", str(size["pretrain_records"]),
                       "--max_steps", str(size["pretrain_steps"]), "--threads", str(args.threads),
                       "--eval_rows", "0"],
        "judge": [python, str(examples / "train_reranker.py"), "--config",
                  str(examples / "configs" / "reranker" / "tiny_instruct_judge.yaml"),
                  "--backbone", str(out / "pretrained"), "--output_dir", str(out / "judge"),
                  "--seed", str(args.seed), "--data_seed", str(args.seed), "--mini_mmeb_seed", str(args.seed),
                  "--mini_mmeb_train_per_task", str(size["judge_records_per_task"]),
                  "--max_steps", str(size["judge_steps"])],
    }  # fmt: skip


def parameters(path: str | Path) -> int:
    """Parameters of a checkpoint folder's safetensors weights (read from the file headers, no model built)."""
    from safetensors import safe_open

    with safe_open(str(Path(path) / "model.safetensors"), framework="pt") as weights:
        return sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())


def measure(args: TinyJudgeArguments) -> dict[str, Any]:
    """The judge before (the pretrained stage read as a judge) and after instruction tuning, on held-out rows."""
    import torch

    from unime_v2.modeling_unime_v2 import UniMEV2Reranker
    from unime_v2.trainers.evaluation.judge_quality import measure_heldout_judge

    out, rows = Path(args.output_dir).resolve(), SIZES[args.size]["eval_rows"]
    before = UniMEV2Reranker.from_backbone(str(out / "pretrained"), pair_format="judge", dtype=torch.float32)
    return {
        "before": measure_heldout_judge(before, args.seed, rows, TASKS),
        "after": measure_heldout_judge(out / "judge", args.seed, rows, TASKS),
    }


def write_record(args: TinyJudgeArguments, seconds: dict[str, float], quality: dict[str, Any]) -> dict[str, Any]:
    """``TINY_JUDGE.json`` in the judge folder: settings, sizes, the stages' own figures, held-out quality."""
    out = Path(args.output_dir).resolve()
    pretrain = json.loads((out / "pretrained" / "TINY_PRETRAIN.json").read_text())
    train = json.loads((out / "judge" / "train_results.json").read_text())
    judge_params, vlm_params = parameters(out / "judge"), parameters(shipped_tiny_vlm())
    record = {
        "args": asdict(args),
        "recipe": SIZES[args.size],
        "tasks": list(TASKS),
        "parameters": judge_params,
        "shipped_vlm_parameters": vlm_params,
        "parameter_ratio": round(judge_params / vlm_params, 2),
        "pretrain": {k: pretrain.get(k) for k in ("lm_loss_before", "lm_loss_after", "train_seconds", "corpus_train")},
        "judge_training": {k: train.get(k) for k in ("train_loss", "train_runtime")},
        "seconds": seconds,
        "heldout_rows_per_task": SIZES[args.size]["eval_rows"],
        **quality,
    }
    (out / "judge" / "TINY_JUDGE.json").write_text(json.dumps(record, indent=2, default=str))
    return record


def ship(judge_dir: Path, target: Path = ASSETS / "tiny_judge_qwen25vl") -> Path:
    """Copy the judge folder (weights, config, processor, card, ``TINY_JUDGE.json``) into ``target``, leaving out
    :data:`RUN_FILES`, the code files and sub-folders (a LoRA ``adapter/``)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path in sorted(judge_dir.iterdir()):
        if path.is_file() and path.name not in RUN_FILES and path.suffix != ".py":
            shutil.copy2(path, target / path.name)
    (target / "README.md").write_text(ASSET_CARD)
    return target


ASSET_CARD = """# The shipped tiny instruct judge of unime-v2

The miniature of UniME-V2's Qwen2.5-VL-7B judge: a tiny Qwen2.5-VL in the judge layout (a UniME-V2 reranker), made
from mini-MMEB training facts by `examples/make_tiny_judge.py`; how, its size and its measured agreement with the
oracle: `docs/tiny_judge.md` and `TINY_JUDGE.json`. The folder holds no code; the installed package loads it:

```python
from unime_v2.data_builders.tiny_backbones import shipped_tiny_judge
from unime_v2.modeling_unime_v2 import UniMEV2Reranker

judge = UniMEV2Reranker.from_pretrained(str(shipped_tiny_judge()))  # or the spec "tiny:judge" in a recipe
```
"""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    (args,) = RecipeParser(TinyJudgeArguments, description=__doc__.split("\n\n")[0]).parse(argv)
    out = Path(args.output_dir).resolve()
    if args.overwrite and out.exists():
        shutil.rmtree(out)
    settings = {k: v for k, v in run_settings(args).items() if k not in ("ship", "threads")}
    claim_output_dir(out, "tiny_judge", "examples/make_tiny_judge.py", settings)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the stages' subprocesses inherit it
    commands = stage_commands(args, Path(__file__).resolve().parent)
    seconds = {name: round(run_stage(name, command, out), 1) for name, command in commands.items()}
    start = time.time()
    quality = measure(args)
    seconds["measure"] = round(time.time() - start, 1)
    record = write_record(args, seconds, quality)
    for key in ("heldout_in_pool", "heldout_hard_distractors"):
        print(f"{key}: AUC {record['before'][key]['all']['auc']:.4f} -> {record['after'][key]['all']['auc']:.4f}")
    if args.ship:
        print(f"shipped: {ship(out / 'judge')}")
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
