"""A judge against mini-MMEB's oracle on held-out rows: in-pool and on one-edit hard distractors (docs/tiny_judge.md).

    python examples/measure_judge.py --judge data_builders/assets/tiny_judge_qwen25vl --output_dir runs/judge

Writes ``judge_quality.json`` (``after``: ``heldout_in_pool`` and ``heldout_hard_distractors``, each with ``all``,
``per_meta_task``, ``per_dataset``: AUC, per-query AUC, Spearman, the share of queries where a negative out-scores
the positive) and ``judge_quality.md``. The quickstart's judge stage; the oracle measures, it never trains.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from unime_v2.data_builders.tiny_backbones import shipped_tiny_judge
from unime_v2.hub_cards.markdown import markdown_grid
from unime_v2.trainers.arguments import RecipeParser
from unime_v2.trainers.evaluation.judge_quality import HELDOUT_HEADER, format_heldout_table, measure_heldout_judge


@dataclass
class MeasureJudgeArguments:
    """Settings of ``examples/measure_judge.py``."""

    output_dir: str = field(metadata={"help": "Where judge_quality.json / .md are written."})
    judge: str = field(default="", metadata={"help": "A saved judge folder (default: the shipped tiny judge)."})
    mini_mmeb_seed: int = field(default=0, metadata={"help": "Seed of the held-out mini-MMEB rows."})
    rows_per_task: int = field(default=32, metadata={"help": "Held-out rows per task (the evaluation's first rows)."})
    tasks: list[str] = field(
        default_factory=lambda: ["MiniImageNet-cls", "MiniCOCO-i2t", "MiniCOCO-t2i"],
        metadata={"help": "mini-MMEB tasks (the in-distribution tasks a judge scores during mining)."},
    )
    num_candidates: int = field(default=10, metadata={"help": "Negatives per query in each measurement."})


def main(argv: list[str] | None = None) -> dict:
    (args,) = RecipeParser(MeasureJudgeArguments, description=__doc__.split("\n\n")[0]).parse(argv)
    judge = args.judge or str(shipped_tiny_judge())
    start = time.time()
    quality = measure_heldout_judge(judge, args.mini_mmeb_seed, args.rows_per_task, args.tasks, args.num_candidates)
    record = {"judge": judge, "args": asdict(args), "seconds": round(time.time() - start, 1), "after": quality}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "judge_quality.json").write_text(json.dumps(record, indent=2))
    table = markdown_grid(HELDOUT_HEADER, format_heldout_table(quality))
    (out / "judge_quality.md").write_text(f"# Judge vs oracle on held-out rows\n\n{judge}\n\n{table}\n")
    print(table)
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
