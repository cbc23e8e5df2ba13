"""Hub cards and publishing: model cards (embedder, reranker), the mined dataset's card, rendered with
``huggingface_hub``, and the one-commit upload of a staged repository folder (docs/publishing.md)."""

from .dataset_card import build_mined_dataset_card
from .eval_results import eval_results, load_eval_results
from .markdown import markdown_grid, markdown_rows, markdown_table
from .model_card import (
    CITATION,
    TRAINING_RECORD,
    build_embedder_card,
    build_reranker_card,
    library_versions,
    mining_summary,
    training_record,
    write_model_card,
)
from .publishing import (
    ARTIFACTS,
    PushArguments,
    StagedRepo,
    check_repo_id,
    push,
    push_artifact,
    stage_artifact,
    stage_dataset,
    stage_mined_dataset,
    stage_model,
    upload_staged,
)


__all__ = [
    "ARTIFACTS",
    "CITATION",
    "PushArguments",
    "TRAINING_RECORD",
    "StagedRepo",
    "build_embedder_card",
    "build_mined_dataset_card",
    "build_reranker_card",
    "check_repo_id",
    "eval_results",
    "library_versions",
    "load_eval_results",
    "markdown_grid",
    "markdown_rows",
    "markdown_table",
    "mining_summary",
    "push",
    "push_artifact",
    "stage_artifact",
    "stage_dataset",
    "stage_mined_dataset",
    "stage_model",
    "training_record",
    "upload_staged",
    "write_model_card",
]
