"""The paper's Table 4 and Table 6 in miniature, on a finished quickstart (docs/quickstart.md).

    python examples/quickstart.py --output_dir runs/quickstart
    python examples/ablation.py --quickstart_dir runs/quickstart --output_dir runs/ablation --seeds 0 1 2

Variants: InfoNCE with in-batch negatives only; + judge-mined hard negatives with hard labels; the same hard labels
on each query's own 1 + k candidates only (UniME-V2's candidate set); + the judge's soft scores (UniME-V2);
k in {4, 6, 8, 10}; Jensen-Shannon and the authors' loss arithmetic; the judge's quality (the untrained VLM as
judge, the fine-tuned judge, mini-MMEB's oracle as judge: an upper bound). Writes results.json, RESULTS.md (mean ±
std over seeds) and ablation.png; resumable like the quickstart.
"""

from __future__ import annotations

import sys
from pathlib import Path

from unime_v2.data_builders.ablation import AblationArguments, results_markdown, run_ablation
from unime_v2.data_builders.recipes import RecipeParser


def main(argv: list[str] | None = None) -> dict:
    (args,) = RecipeParser(AblationArguments).parse(argv)
    results = run_ablation(args, Path(__file__).resolve().parent)
    print("\n" + results_markdown(results))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
