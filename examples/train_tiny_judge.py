"""Train a tiny learned judge on mini-MMEB, on a CPU, in a minute or two (the reranker trainer, pairwise only).

    python examples/train_tiny_judge.py --output_dir /tmp/tiny_judge --seed 0 --max_steps 900 --mini_mmeb_seed 0

Settings: ``unime_v2.trainers.tiny_judge.TinyJudgeArguments`` (``--help``; ``--config recipe.yaml`` works too).
About 2.5 minutes on 2 CPU cores; figures and the recipe's reasons in docs/judge_training.md.
"""

from __future__ import annotations

import logging
import os

import torch

from unime_v2.data_builders.recipes import RecipeParser
from unime_v2.trainers.tiny_judge import TinyJudgeArguments, train_tiny_judge


def main(argv: list[str] | None = None) -> dict:
    (args,) = RecipeParser((TinyJudgeArguments,)).parse(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return train_tiny_judge(args)


if __name__ == "__main__":
    main()
