"""What a training run reads: its records and evaluation rows (from spec strings or datasets), and where it resumes."""

from __future__ import annotations

import json
import logging
from typing import Any

import transformers
from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from unime_v2.data_builders.formats.training_records import (
    ORACLE_MINI_MMEB_NAME,
    TrainingRecords,
    load_mined_dataset,
    oracle_mini_mmeb,
)
from unime_v2.data_builders.mini_mmeb.splits import mini_mmeb_splits
from unime_v2.data_builders.recipes import MINI_MMEB, ORACLE_MINI_MMEB

from .training_args import UniMEV2DataArguments, UniMEV2TrainingArguments


logger = logging.getLogger(__name__)


def setup_logging(args: TrainingArguments) -> None:
    """INFO logs from the main process only (one line per event under ``accelerate launch``), warnings from all."""
    level = logging.INFO if args.should_log else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level, force=True)
    transformers.utils.logging.set_verbosity(args.get_process_log_level())


def load_training_data(
    data_args: UniMEV2DataArguments, args: UniMEV2TrainingArguments
) -> tuple[TrainingRecords, list[dict[str, Any]] | None]:
    """The training records and the optional MMEB-eval rows that ``data_args`` names.

    ``train_data`` is a mined dataset (folder, Hub id or the authors' JSON) or ``oracle:mini_mmeb``;
    ``eval_data`` is ``mini_mmeb`` (held-out rows of the same build, disjoint from training), a dataset, or none.
    """
    if (data_args.eval_data or "").lower() in ("", "none"):
        data_args.eval_data = None
    mini_test = None
    if data_args.train_data == ORACLE_MINI_MMEB:
        mined, mini_test = oracle_mini_mmeb(*_mini_mmeb_settings(data_args))
        name = ORACLE_MINI_MMEB_NAME
    else:
        mined = load_mined_dataset(data_args.train_data, data_args.train_split, data_args.train_image_root)
        name = data_args.train_data
    if data_args.eval_data == MINI_MMEB and mini_test is None:
        _, mini_test = mini_mmeb_splits(*_mini_mmeb_settings(data_args))
    if data_args.max_train_records is not None:
        mined = mined.select(range(min(data_args.max_train_records, len(mined))))
    records = TrainingRecords(
        mined,
        num_hard_negatives=args.num_hard_negatives,
        negative_selection=args.negative_selection,
        pad_policy=args.pad_policy,
        seed=args.seed,
        name=name,
    )
    return records, _eval_rows(data_args, mini_test)


def _mini_mmeb_settings(data_args: UniMEV2DataArguments) -> tuple[int, int, int, int, dict[str, Any]]:
    """``(seed, train_per_task, test_per_task, num_candidates, extra)`` of the run's mini-MMEB split."""
    extra = data_args.mini_mmeb_config or {}
    if isinstance(extra, str):
        extra = json.loads(extra)
    return (
        data_args.mini_mmeb_seed,
        data_args.mini_mmeb_train_per_task,
        data_args.mini_mmeb_test_per_task,
        data_args.mini_mmeb_num_candidates,
        extra,
    )


def _eval_rows(data_args: UniMEV2DataArguments, mini_test: Any) -> list[dict[str, Any]] | None:
    if data_args.eval_data == MINI_MMEB:
        rows = mini_test
    elif data_args.eval_data:
        rows = load_mined_dataset(data_args.eval_data, data_args.eval_split)
    else:
        return None
    if data_args.max_eval_rows is not None:
        rows = rows.select(range(min(data_args.max_eval_rows, len(rows))))
    return list(rows)


def resolve_resume_checkpoint(args: TrainingArguments) -> str | None:
    """``resume_from_checkpoint``: a folder, or ``last``/``true`` for the newest ``checkpoint-*`` in ``output_dir``."""
    value = args.resume_from_checkpoint
    if value is None or value.lower() in ("", "false", "none"):
        return None
    if value.lower() in ("last", "true"):
        last = get_last_checkpoint(args.output_dir)
        if last is None:
            raise FileNotFoundError(f"--resume_from_checkpoint {value}: no checkpoint-* folder in {args.output_dir}")
        return last
    return value
