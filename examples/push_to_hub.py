"""Publish a trained embedder / reranker or a mined dataset to the Hugging Face Hub in one commit.

    python examples/push_to_hub.py --artifact embedder --path runs/tiny --repo_id you/UniME-V2-tiny \
        --eval_results runs/tiny-eval/results.json            # the card's model-index from an evaluation
    python examples/push_to_hub.py --artifact reranker --path runs/reranker_tiny --repo_id you/UniME-V2-Reranker-tiny
    python examples/push_to_hub.py --artifact dataset --path runs/mined --repo_id you/UniME-V2-mined --private true
    python examples/push_to_hub.py ... --dry_run staged/      # stage the exact repository folder, upload nothing

The staged folder is the repository as it will be: safetensors weights, remote code, config and processor with
their ``auto_map``, ``adapter/`` when there is one, and the card (docs/publishing.md); for a dataset the parquet
shards ``data/<split>-0000i-of-0000N.parquet``, the card with its ``configs:`` and the mining report. Settings:
``PushArguments`` (``--help``).
"""

from __future__ import annotations

import sys
from typing import Any

from unime_v2.hub_cards import PushArguments, StagedRepo, push
from unime_v2.trainers.arguments import RecipeParser
from unime_v2.trainers.run_folder import check_artifact


ARTIFACT_KINDS = {"dataset": "mined_dataset"}
"""``--artifact`` names whose run-record kind differs (unime_v2_run.json, docs/publishing.md)."""


def main(argv: list[str] | None = None) -> Any:
    """Stage (and, without ``--dry_run``, upload) the artifact; prints the staged files or the commit URL."""
    (args,) = RecipeParser((PushArguments,), description=__doc__.split("\n\n")[0]).parse(argv)
    check_artifact(args.path, ARTIFACT_KINDS.get(args.artifact, args.artifact))  # e.g. a reranker push of an embedder
    result = push(args)
    if isinstance(result, StagedRepo):
        print(f"staged {len(result.files)} files in {result.folder}:", *result.files, sep="\n  ")
    else:
        print(f"pushed {args.path} to {args.repo_id} in one commit: {result.commit_url}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
