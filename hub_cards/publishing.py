"""Stage a trained model or a mined dataset as the exact Hub repository folder, then upload it in one commit.

``examples/push_to_hub.py`` and the trainers' ``push_to_hub`` call :func:`push_artifact` / :func:`stage_model`;
mining's ``MiningResult.push_to_hub`` calls :func:`stage_mined_dataset`. Every check runs before anything is
uploaded (docs/publishing.md):

* a model folder must be a ``save_pretrained`` folder of the named artifact (``config.json`` with its
  ``model_type`` and ``auto_map``, safetensors weights) and must not hold a PEFT adapter at its root (AutoModel
  would load the folder as an adapter); a LoRA adapter travels in ``adapter/``;
* a dataset must be a ``save_to_disk`` folder (or ``mine``'s output folder) with the judge-score columns and its
  mining ``report.json``;
* the repo id must be a valid Hub id.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .model_card import write_model_card


logger = logging.getLogger(__name__)

ARTIFACTS = ("embedder", "reranker", "dataset")
MODEL_TYPES = {"embedder": "unime_v2", "reranker": "unime_v2_reranker"}
ADAPTER_SUBFOLDER = "adapter"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
TRAINER_BOOKKEEPING = (
    "training_args.bin",
    "trainer_state.json",
    "all_results.json",
    "train_results.json",
    "eval_results.json",
)
SCORE_COLUMNS = ("pos_score", "neg_scores")
MINING_FILES = ("report.json", "report.md", "judge_scores.png")
MAX_SHARD_BYTES = 500 * 2**20  # Dataset.push_to_hub's default shard size


@dataclass
class StagedRepo:
    """A folder laid out exactly as the Hub repository will be, and what kind of repository it is."""

    folder: Path
    repo_type: str

    @property
    def files(self) -> list[str]:
        """Paths inside the repository, sorted."""
        return sorted(p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*") if p.is_file())


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a valid Hub id (``name`` or ``owner/name``), else a ``ValueError`` saying why."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"invalid Hub repo id {repo_id!r}: {error}") from error
    return repo_id


def _place(source: Path, target: Path, link: bool) -> None:
    """Copy ``source`` to ``target``, or hard-link it when ``link`` and the filesystem allows (a temporary
    staging folder for an upload: no second copy of multi-GB weights)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copy2(source, target)


@contextmanager
def upload_workspace(near: str | Path) -> Iterator[Path]:
    """A temporary folder for staging an upload, on the filesystem of ``near`` when writable (hard links work),
    removed afterwards."""
    parent = Path(near).resolve().parent
    with tempfile.TemporaryDirectory(
        prefix=".unime_v2_push_", dir=parent if os.access(parent, os.W_OK) else None
    ) as tmp:
        yield Path(tmp) / "repo"


def _empty_folder(staging: str | Path) -> Path:
    staging = Path(staging)
    if staging.exists() and any(staging.iterdir()):
        raise FileExistsError(f"{staging}: the staging folder must be new or empty")
    staging.mkdir(parents=True, exist_ok=True)
    return staging


# --------------------------------------------------------------------------------------------------- models
def check_model_folder(path: str | Path, artifact: str) -> dict[str, Any]:
    """The ``config.json`` of a saved UniME-V2 ``artifact`` folder; a clear error naming the folder otherwise."""
    path = Path(path)
    expected = MODEL_TYPES[artifact]
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path}: not a saved model folder (no config.json); save it with save_pretrained first")
    config = json.loads(config_file.read_text())
    if config.get("model_type") != expected:
        raise ValueError(
            f"{path}: not a saved UniME-V2 {artifact} (config.json model_type={config.get('model_type')!r}, expected "
            f"{expected!r}); wrap a plain backbone with from_backbone(...).save_pretrained(...) first"
        )
    if "AutoModel" not in config.get("auto_map", {}):
        raise ValueError(f"{path}/config.json: no auto_map entry for AutoModel; re-save with save_pretrained")
    if not list(path.glob("*.safetensors")):
        raise ValueError(f"{path}: no safetensors weights (save_pretrained writes model*.safetensors)")
    stray = [name for name in ADAPTER_FILES if (path / name).exists()]
    if stray:
        raise ValueError(
            f"{path}: PEFT adapter files at the root ({', '.join(stray)}): AutoModel would load the folder as an "
            f"adapter. Keep the adapter in {ADAPTER_SUBFOLDER}/ (the trainers' merged save does)"
        )
    return config


def _model_files(path: Path) -> list[Path]:
    """What ``save_pretrained`` wrote (weights, config, remote code, processor, …) plus the ``adapter/`` folder;
    not checkpoints, logs, Trainer bookkeeping or an old card."""
    keep = [
        p
        for p in path.iterdir()
        if p.is_file() and p.name not in TRAINER_BOOKKEEPING and p.name != "README.md" and not p.name.startswith(".")
    ]
    adapter = path / ADAPTER_SUBFOLDER
    if adapter.is_dir():
        keep += [p for p in adapter.rglob("*") if p.is_file() and p.name not in TRAINER_BOOKKEEPING]
    return keep


def stage_model(
    path: str | Path,
    staging: str | Path,
    repo_id: str,
    artifact: str = "embedder",
    eval_results: str | Path | None = None,
    link: bool = False,
) -> StagedRepo:
    """Copy the saved ``artifact`` in ``path`` into the empty folder ``staging`` and write its card there.

    The card comes from the folder itself (config, training record) and, when given, the evaluation
    ``results.json`` ``eval_results`` (``model-index``; a reranker's card takes the reranked figures). ``link``:
    hard-link the files instead of copying them where possible (for a staging folder that only lives until the
    upload).
    """
    from .eval_results import load_eval_results

    check_repo_id(repo_id)
    path = Path(path)
    check_model_folder(path, artifact)
    evals = load_eval_results(eval_results, reranked=artifact == "reranker") if eval_results else None
    staging = _empty_folder(staging)
    for file in _model_files(path):
        _place(file, staging / file.relative_to(path), link)
    write_model_card(staging, artifact, repo_id, evals=evals)
    return StagedRepo(staging, "model")


# --------------------------------------------------------------------------------------------------- datasets
def check_mined_dataset(dataset: Any, name: str) -> None:
    """A mined dataset needs the judge's scores (``pos_score``, ``neg_scores``) in every row."""
    missing = [column for column in SCORE_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{name}: no judge scores (missing columns {missing}); only a mined dataset (examples/mine.py) is published"
        )
    for index, score in enumerate(dataset["pos_score"]):
        if score is None:
            raise ValueError(f"{name}: row {index} has no judge score for its positive (pos_score is null)")


def write_parquet_shards(dataset: Any, folder: Path, split: str, num_shards: int | None = None) -> list[Path]:
    """``data/<split>-0000i-of-0000N.parquet`` as ``Dataset.push_to_hub`` writes them, image bytes embedded."""
    from datasets.table import embed_table_storage

    if num_shards is None:  # Dataset.push_to_hub's estimate: it counts the image files that get embedded
        estimate = getattr(dataset, "_estimate_nbytes", lambda: dataset.data.nbytes)()
        num_shards = int(estimate / MAX_SHARD_BYTES) + 1
    (folder / "data").mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(num_shards):
        shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True).with_format("arrow")
        shard = shard.map(embed_table_storage, batched=True, keep_in_memory=True)
        path = folder / "data" / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
        shard.to_parquet(str(path))
        paths.append(path)
    return paths


def stage_mined_dataset(
    dataset: Any,
    report: dict[str, Any],
    staging: str | Path,
    repo_id: str,
    report_dir: str | Path | None = None,
    num_shards: int | None = None,
) -> StagedRepo:
    """Stage a mined ``Dataset`` (or ``DatasetDict``) with its card (from the mining ``report``), the parquet
    shards and the report files of ``report_dir`` under ``mining/``."""
    from datasets import DatasetDict

    from .dataset_card import build_mined_dataset_card

    check_repo_id(repo_id)
    splits = dict(dataset) if isinstance(dataset, DatasetDict) else {"train": dataset}
    for split, part in splits.items():
        check_mined_dataset(part, f"{repo_id} ({split} split)")
    card = build_mined_dataset_card(report, repo_id, splits=list(splits))
    staging = _empty_folder(staging)
    for split, part in splits.items():
        write_parquet_shards(part, staging, split, num_shards)
    card.save(staging / "README.md")
    for name in MINING_FILES:
        source = Path(report_dir) / name if report_dir else None
        if source is not None and source.is_file():
            (staging / "mining").mkdir(exist_ok=True)
            shutil.copy2(source, staging / "mining" / name)
    return StagedRepo(staging, "dataset")


def stage_dataset(path: str | Path, staging: str | Path, repo_id: str, num_shards: int | None = None) -> StagedRepo:
    """Stage a mined dataset saved by ``mine``: its output folder, or the ``save_to_disk`` folder in it (the
    mining ``report.json`` sits in that folder or next to it)."""
    from datasets import load_from_disk

    from .model_card import mining_report_file

    check_repo_id(repo_id)
    path = Path(path)
    data = path / "dataset" if (path / "dataset").is_dir() else path
    try:
        dataset = load_from_disk(str(data))
    except FileNotFoundError as error:
        raise ValueError(f"{data}: not a saved dataset (save_to_disk folder or mine's output): {error}") from error
    report_file = mining_report_file(data)
    report = json.loads(report_file.read_text()) if report_file else None
    if report is None or "settings" not in report:
        raise ValueError(f"{data}: no mining report.json in it or next to it; the card records the mining settings")
    return stage_mined_dataset(dataset, report, staging, repo_id, report_file.parent, num_shards)


# --------------------------------------------------------------------------------------------------- upload
def upload_staged(
    staged: StagedRepo,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload with unime-v2",
    revision: str | None = None,
) -> Any:
    """Create the repository if needed and upload every staged file in ONE commit; returns its ``CommitInfo``."""
    check_repo_id(repo_id)
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type=staged.repo_type, private=private, exist_ok=True)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(staged.folder / name)) for name in staged.files
    ]
    logger.info(f"Uploading {len(operations)} files to {url.repo_id} in one commit")
    return api.create_commit(
        url.repo_id,
        operations=operations,
        repo_type=staged.repo_type,
        commit_message=commit_message,
        revision=revision,
    )


def stage_artifact(
    artifact: str,
    path: str | Path,
    staging: str | Path,
    repo_id: str,
    eval_results: str | Path | None = None,
    num_shards: int | None = None,
    link: bool = False,
) -> StagedRepo:
    """Stage ``path`` as the ``artifact`` (embedder, reranker or dataset) repository ``repo_id`` (``link``: see
    :func:`stage_model`)."""
    if artifact not in ARTIFACTS:
        raise ValueError(f"unknown artifact {artifact!r}; choose one of {ARTIFACTS}")
    if artifact == "dataset":
        if eval_results:
            raise ValueError("eval_results belong to a model card, not to a dataset")
        return stage_dataset(path, staging, repo_id, num_shards)
    return stage_model(path, staging, repo_id, artifact, eval_results, link)


def push_artifact(
    artifact: str,
    path: str | Path,
    repo_id: str,
    private: bool | None = None,
    dry_run: str | Path | None = None,
    eval_results: str | Path | None = None,
    token: str | None = None,
    commit_message: str = "Upload with unime-v2",
) -> StagedRepo | Any:
    """Stage ``path`` (into ``dry_run``, or a temporary folder of hard links) and upload it in one commit; with
    ``dry_run`` stop after staging and return the :class:`StagedRepo`."""
    if dry_run is not None:
        return stage_artifact(artifact, path, dry_run, repo_id, eval_results)
    with upload_workspace(path) as staging:
        staged = stage_artifact(artifact, path, staging, repo_id, eval_results, link=True)
        return upload_staged(staged, repo_id, private=private, token=token, commit_message=commit_message)


@dataclass
class PushArguments:
    """What ``examples/push_to_hub.py`` publishes, where, and whether it only stages."""

    artifact: str = field(default=None, metadata={"help": f"What DIR holds: one of {ARTIFACTS}."})
    path: str = field(
        default=None,
        metadata={"help": "A saved embedder / reranker folder (save_pretrained, e.g. a training run's output_dir) or "
                  "a mined dataset (mine's output folder, or its dataset/ save_to_disk folder)."},
    )  # fmt: skip
    repo_id: str = field(default=None, metadata={"help": "The Hub repository, owner/name (created if missing)."})
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})
    dry_run: str | None = field(
        default=None, metadata={"help": "Stage the repository folder into this (new or empty) folder and stop."}
    )
    eval_results: str | None = field(
        default=None,
        metadata={"help": "Models: an evaluation results.json (examples/evaluate.py) or its folder, for model-index."},
    )
    commit_message: str = field(default="Upload with unime-v2", metadata={"help": "The message of the one commit."})

    def __post_init__(self) -> None:
        missing = [name for name in ("artifact", "path", "repo_id") if getattr(self, name) is None]
        if missing:
            raise ValueError(f"--{' --'.join(missing)} required (see --help)")


def push(args: PushArguments) -> StagedRepo | Any:
    """``examples/push_to_hub.py``: :func:`push_artifact` with the script's arguments."""
    return push_artifact(
        args.artifact,
        args.path,
        args.repo_id,
        private=args.private or None,
        dry_run=args.dry_run,
        eval_results=args.eval_results,
        commit_message=args.commit_message,
    )
