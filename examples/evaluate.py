"""Evaluate an embedder (and optionally a reranker): the paper's MMEB, retrieval and SugarCrepe tables.

    python examples/evaluate.py --model DIR_OR_HUB_ID [--reranker DIR_OR_HUB_ID] --suite mmeb|retrieval|sugarcrepe|all \
        --data mini_mmeb | --mmeb_eval MMEB_EVAL_CLONE | --mmeb_eval TIGER-Lab/MMEB-eval --image_root DIR \
        | --retrieval_dir DIR --output_dir OUT
    accelerate launch --num_processes N examples/evaluate.py ...     # the same, shared over processes / GPUs

Every setting: ``--help``; a YAML recipe: ``--config recipe.yaml``. Outputs and layouts: docs/evaluation.md. When no
dataset could be scored the script exits with status 1 and each dataset's error; an output folder holding another
evaluation is refused unless ``--overwrite true``.
"""

from __future__ import annotations

from unime_v2.trainers.arguments import RecipeParser
from unime_v2.trainers.evaluation.run import EvaluationArguments, NothingEvaluatedError, run_evaluation


def main(argv: list[str] | None = None) -> dict:
    (args,) = RecipeParser((EvaluationArguments,), description=__doc__.split("\n\n")[0]).parse(argv)
    try:
        return run_evaluation(args)
    except NothingEvaluatedError as error:  # exit status 1 and the datasets' errors, not an empty table
        raise SystemExit(f"evaluate.py: {error}") from error


if __name__ == "__main__":
    main()
