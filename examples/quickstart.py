"""The whole of UniME-V2 on the embedded default, on a CPU: the README's first command.

    python examples/quickstart.py --output_dir runs/quickstart                 # default size (see docs/quickstart.md)
    python examples/quickstart.py --output_dir runs/qs_small --size small      # a few minutes: the CI test's size
    python examples/quickstart.py --output_dir runs/quickstart --overwrite     # start over (else: resume)

Stages, each the project's own script on the shipped pretrained tiny Qwen2-VL (data_builders/assets):
data (training queries, disjoint in facts from the held-out rows) -> seed embedder (InfoNCE, the VLM2Vec role) ->
judge (pairwise Yes/No fine-tuning; agreement with mini-MMEB's oracle reported, never trained on) -> mining
(global retrieval, judge scores, sampling) -> UniME-V2 and the reranker on the mined data -> evaluation of the
untrained VLM, the seed embedder, UniME-V2 and UniME-V2 + reranker. Writes ``summary.md`` / ``summary.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from unime_v2.data_builders.quickstart import QuickstartArguments, run_quickstart, summary_markdown
from unime_v2.data_builders.recipes import RecipeParser


def main(argv: list[str] | None = None) -> dict:
    (args,) = RecipeParser(QuickstartArguments).parse(argv)
    summary = run_quickstart(args, Path(__file__).resolve().parent)
    print("\n" + summary_markdown(summary))
    print(f"\nartifacts: {Path(args.output_dir).resolve()}  (summary.md, summary.json)")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
