"""The output-folder guard of every script: one run per folder, recorded in ``unime_v2_run.json``.

A script that writes an output folder calls :func:`claim_output_dir` before it writes anything. The folder's
``unime_v2_run.json`` records the run: the artifact kind (``embedder``, ``reranker``, ``mined_dataset``,
``evaluation``, ``mini_mmeb``, ``tiny_vlm``, ``quickstart``, ``ablation``, ``backbone_export``), the resolved
settings and their fingerprint. Settings that do not change what is produced (logging, progress bars, the output
folder itself, resumption, Hub upload) are left out (:data:`HARMLESS_KEYS`).

* an empty or new folder is claimed for the run;
* a folder recorded for the same kind and settings is the same run: it continues (training resumes from its own
  newest checkpoint, mining from its judge shards);
* a folder recorded for another kind or other settings, or holding outputs of an unrecorded run, is refused with an
  error naming the folder, both kinds and the differing settings;
* ``--overwrite true`` deletes what a run of this kind writes there (:data:`OUTPUTS`) and the record, and claims the
  folder; any other file in it stays (docs/training.md). Mining's ``cache/`` stays too: its embeddings, retrieval
  and judge shards are keyed by their own settings and reused only where those match.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unime_v2.data_builders.storage import content_hash


RUN_FILE = "unime_v2_run.json"
HARMLESS_KEYS = frozenset(
    {
        "output_dir",
        "overwrite",
        "overwrite_output_dir",
        "resume_from_checkpoint",
        "logging_dir",
        "logging_steps",
        "logging_strategy",
        "logging_first_step",
        "logging_nan_inf_filter",
        "log_level",
        "log_level_replica",
        "log_on_each_node",
        "report_to",
        "run_name",
        "disable_tqdm",
        "show_progress_bar",
        "progress",
        "push_to_hub",
        "hub_model_id",
        "hub_strategy",
        "hub_token",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
        "save_total_limit",
        "local_rank",
        "local_process_index",
        "process_index",
        "world_size",
        "n_gpu",
        "dataloader_num_workers",
        "cache_dir",
        "no_cache",
        "batch_size",
    }
)
"""Settings that do not change what a run produces; they may differ between the runs of one folder."""
OUTPUTS: dict[str, tuple[str, ...]] = {
    "embedder": ("checkpoint-*", "adapter", "*.safetensors", "*.safetensors.index.json", "config.json", "*.py",
                 "*_config.json", "tokenizer*", "vocab.json", "merges.txt", "chat_template.*", "special_tokens_map.json",
                 "added_tokens.json", "generation_config.json", "README.md", "*results.json", "trainer_state.json",
                 "training_args.bin", "runs", "unime_v2_training.json", "*.jinja"),
    "mined_dataset": ("dataset", "report.json", "report.md", "judge_scores.png", "mined.json", "authors_json",
                      "exports"),
    "evaluation": ("results.json", "results.md", "*.png", "model_index.json"),
}  # fmt: skip
OUTPUTS["reranker"] = OUTPUTS["embedder"] + ("judge_training.json",)
OUTPUTS["tiny_vlm"] = ("*.safetensors", "*.safetensors.index.json", "config.json", "*_config.json", "tokenizer*",
                       "vocab.json", "merges.txt", "chat_template.*", "special_tokens_map.json", "added_tokens.json",
                       "generation_config.json", "*.jinja", "TINY_PRETRAIN.json")  # fmt: skip
OUTPUTS["backbone_export"] = OUTPUTS["tiny_vlm"][:-1] + ("modules.json", "1_Pooling", "2_Normalize")
OUTPUTS["mini_mmeb"] = ("hf", "mmeb")
OUTPUTS["quickstart"] = ("data", "seed", "judge", "mine", "unime_v2", "reranker", "eval_pretrained", "eval_seed",
                         "eval_unime_v2", "eval_pairwise", "eval_cache", "logs", "summary.json", "summary.md")  # fmt: skip
OUTPUTS["ablation"] = ("mine_untrained_judge", "*-seed*", "curve_data", "eval_cache", "logs", "results.json",
                       "RESULTS.md", "ablation.png", "judge_curve.png")  # fmt: skip
OUTPUTS["tiny_judge"] = ("pretrained", "judge", "logs")
"""What a run of each kind writes in its folder (glob patterns): what ``--overwrite`` deletes."""


@dataclass
class OutputFolderArguments:
    """The output-folder guard's switch (docs/training.md)."""

    overwrite: bool = field(
        default=False,
        metadata={"help": "Let this run replace another run's outputs in output_dir: deletes what a run of this kind "
                  "writes there (checkpoints, weights, results, …) and keeps any other file."},
    )  # fmt: skip


class OutputFolderError(ValueError):
    """An output folder that holds another run."""


def run_settings(*configs: Any) -> dict[str, Any]:
    """The settings of dataclasses / ``TrainingArguments`` / mappings as one JSON-able mapping, harmless keys left
    out."""
    merged: dict[str, Any] = {}
    for config in configs:
        items = config.to_dict() if hasattr(config, "to_dict") else dict(_asdict(config))
        merged.update(items)
    return {key: _jsonable(value) for key, value in sorted(merged.items()) if key not in HARMLESS_KEYS}


def _asdict(config: Any) -> Mapping[str, Any]:
    if isinstance(config, Mapping):
        return config
    from dataclasses import fields

    return {f.name: getattr(config, f.name) for f in fields(config)}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def fingerprint(settings: Mapping[str, Any]) -> str:
    """A short hash of ``settings`` (order-independent)."""
    return content_hash(json.dumps(settings, sort_keys=True, default=str))[:16]


def read_run(folder: str | Path) -> dict[str, Any] | None:
    """The run record of ``folder``, or ``None`` when it has none."""
    path = Path(folder) / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def differing_keys(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: stored -> new`` for every setting that differs (``<unset>`` for a missing one)."""
    keys = sorted(k for k in set(stored) | set(new) if stored.get(k, "<unset>") != new.get(k, "<unset>"))
    return [f"{k}: {stored.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in keys]


def _written(folder: Path, kind: str) -> list[Path]:
    return sorted({p for pattern in OUTPUTS[kind] for p in folder.glob(pattern)})


def clear_outputs(folder: str | Path, kind: str) -> list[Path]:
    """Delete what a run of ``kind`` writes in ``folder`` and the run record; returns the deleted paths."""
    folder = Path(folder)
    deleted = _written(folder, kind) + [p for p in (folder / RUN_FILE,) if p.exists()]
    for path in deleted:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return deleted


def check_output_dir(folder: str | Path, kind: str, settings: Mapping[str, Any]) -> bool:
    """``True`` when ``folder`` holds this very run (same kind and settings), ``False`` when it holds no run.

    Raises:
        OutputFolderError: the folder holds another kind of artifact, a run with other settings, or outputs of an
            unrecorded run.
    """
    folder = Path(folder)
    record = read_run(folder)
    hint = "pass --overwrite true to replace it (see --help), or choose another --output_dir"
    if record is None:
        found = [p.name for p in _written(folder, kind)] if folder.is_dir() else []
        if found:
            raise OutputFolderError(
                f"{folder}: holds outputs of a run with no {RUN_FILE} ({', '.join(found[:6])}); {hint}"
            )
        return False
    if record.get("kind") != kind:
        raise OutputFolderError(
            f"{folder}: holds {_an(record.get('kind'))} run (from {record.get('script')}); this run writes {_an(kind)}; "
            f"{hint}"
        )
    if record.get("fingerprint") != fingerprint(settings):
        changes = differing_keys(record.get("settings", {}), settings)
        raise OutputFolderError(
            f"{folder}: holds a {kind} run with other settings ({'; '.join(changes) or 'fingerprint differs'}); {hint}"
        )
    return True


def claim_output_dir(
    folder: str | Path, kind: str, script: str, settings: Mapping[str, Any], overwrite: bool = False, write=True
) -> bool:
    """Check ``folder`` for this run (:func:`check_output_dir`) and record the run there; with ``overwrite`` first
    delete what a run of ``kind`` writes. ``write=False`` (processes other than the main one) only checks.

    Returns ``True`` when the folder already held this run (continue it), ``False`` for a fresh run.
    """
    folder = Path(folder)
    if overwrite and write and folder.is_dir():
        clear_outputs(folder, kind)
    same = check_output_dir(folder, kind, settings)
    if write and not same:
        folder.mkdir(parents=True, exist_ok=True)
        record = {"kind": kind, "script": script, "fingerprint": fingerprint(settings), "settings": dict(settings)}
        (folder / RUN_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return same


def check_artifact(folder: str | Path, kind: str) -> None:
    """Refuse ``folder`` when its run record says it holds another kind of artifact than ``kind``."""
    record = read_run(folder)
    if record is not None and record.get("kind") != kind:
        raise OutputFolderError(
            f"{folder}: holds {_an(record.get('kind'))} (from {record.get('script')}), not {_an(kind)}"
        )


def _an(kind: Any) -> str:
    """``an embedder``, ``a reranker``."""
    return f"{'an' if str(kind)[:1] in 'aeiou' else 'a'} {kind}"


def claim_training_folder(args: Any, kind: str, script: str, settings: Mapping[str, Any], overwrite: bool) -> bool:
    """:func:`claim_output_dir` for a training run under ``accelerate``: the main process claims first, the others
    then check; returns whether ``args.output_dir`` already held this run."""
    from accelerate import PartialState

    state = PartialState()
    with state.main_process_first():
        return claim_output_dir(args.output_dir, kind, script, settings, overwrite, write=state.is_main_process)


def resume_checkpoint(args: Any, same_run: bool) -> str | None:
    """The checkpoint a training run resumes from, announced on stdout.

    ``--resume_from_checkpoint`` wins (a folder, or ``last``: the newest ``checkpoint-*`` of this run). Without it,
    a folder that already holds this run resumes from its newest checkpoint: the same command again continues the
    run instead of starting at step 0 beside the old checkpoints.
    """
    from transformers.trainer_utils import get_last_checkpoint

    from .data import resolve_resume_checkpoint

    checkpoint = resolve_resume_checkpoint(args)
    if checkpoint is None and same_run and Path(args.output_dir).is_dir():
        checkpoint = get_last_checkpoint(args.output_dir)
    if checkpoint is not None and args.should_log:
        origin = (
            "of this run" if Path(checkpoint).parent == Path(args.output_dir) else "given by --resume_from_checkpoint"
        )
        print(f"resuming from {Path(checkpoint).name} {origin} ({args.output_dir})")
    return checkpoint


def checkpoint_step(checkpoint: str | None) -> int:
    """The global step ``checkpoint`` was saved at (0 for none)."""
    if checkpoint is None:
        return 0
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])


def whole_run_metrics(metrics: Mapping[str, Any], log_history: list[dict[str, Any]], start_step: int) -> dict:
    """Train metrics of a resumed run over the whole run: ``train_loss`` weighs the logged losses up to
    ``start_step`` with the steps they cover and this call's loss with its steps; ``train_loss_since_resume`` and
    ``train_resumed_from_step`` keep this call's view (``train_runtime`` covers this call only)."""
    out = dict(metrics)
    if start_step <= 0 or "train_loss" not in metrics:
        return out
    end = max((int(e["step"]) for e in log_history if "step" in e), default=start_step)
    previous, before = 0, 0.0
    for entry in sorted((e for e in log_history if "loss" in e and e.get("step", 0) <= start_step), key=_step):
        before += float(entry["loss"]) * (entry["step"] - previous)
        previous = entry["step"]
    if previous == 0:
        return {**out, "train_resumed_from_step": start_step}
    after_steps = max(end - start_step, 0)
    total = before / previous * start_step + float(metrics["train_loss"]) * after_steps
    out.update(
        train_loss=total / max(start_step + after_steps, 1),
        train_loss_since_resume=float(metrics["train_loss"]),
        train_resumed_from_step=start_step,
    )
    return out


def _step(entry: Mapping[str, Any]) -> int:
    return int(entry["step"])
