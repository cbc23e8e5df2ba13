"""What a training run reads: its records and evaluation rows (from spec strings or datasets), and where it resumes."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import transformers
from datasets import Dataset, Features
from datasets.exceptions import DatasetNotFoundError
from torch.utils.data import Dataset as TorchDataset
from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from unime_v2.data_builders.formats.mined import MINED_FEATURES, MORE_POSITIVE_FEATURES
from unime_v2.data_builders.formats.training_records import (
    ORACLE_MINI_MMEB_NAME,
    TrainingRecords,
    load_mined_dataset,
    oracle_mini_mmeb,
)
from unime_v2.data_builders.mini_mmeb.splits import mini_mmeb_splits
from unime_v2.data_builders.recipes import MINI_MMEB, ORACLE_MINI_MMEB
from unime_v2.data_builders.sources import ACCEPTED_FORMS, UnreadableSourceError, is_user_files, read_dataset

from .training_args import UniMEV2DataArguments, UniMEV2TrainingArguments


logger = logging.getLogger(__name__)


def setup_logging(args: TrainingArguments) -> None:
    """INFO logs from the main process only (one line per event under ``accelerate launch``), warnings from all."""
    level = logging.INFO if args.should_log else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level, force=True)
    transformers.utils.logging.set_verbosity(args.get_process_log_level())


def load_training_data(
    data_args: UniMEV2DataArguments, args: UniMEV2TrainingArguments
) -> tuple[TrainingRecords | SeveralPositives, list[dict[str, Any]] | None]:
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
        mined = _read_mined(data_args.train_data, data_args.train_split, data_args.train_image_root)
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
        drop_fallback_rows=args.drop_fallback_rows,
    )
    if set(MORE_POSITIVE_FEATURES) <= set(mined.column_names):
        records = SeveralPositives(records, args.seed)
    return records, _eval_rows(data_args, mini_test)


class SeveralPositives(TorchDataset):
    """Training records whose mined rows carry further positives (``more_pos_*``, docs/mining.md "Several
    positives"): each item's positive, with its judge score, is one of the row's positives, drawn from
    ``(seed, record, epoch)``: the same draw for the same seed and step, another one each epoch. The epoch comes
    from ``set_epoch``, which ``UniMEV2Trainer`` calls at each epoch's start on every process
    (``trainers/trainer.py``, ``DatasetEpochCallback``)."""

    def __init__(self, records: TrainingRecords, seed: int):
        self.records = records
        self.seed = seed
        self.epoch = 0
        self.more = records.mined.select_columns(list(MORE_POSITIVE_FEATURES))

    def __getattr__(self, name: str) -> Any:  # num_padded, name, mined, …: those of the records
        if name in ("records", "__setstate__"):
            raise AttributeError(name)
        return getattr(self.records, name)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.records[index]
        more = self.more[int(index)]
        options = [(item["positive"], item["scores"][0])]
        options += [
            ({"text": text, "image": image}, float(score))
            for text, image, score in zip(more["more_pos_texts"], more["more_pos_images"], more["more_pos_scores"])
        ]
        draw = int(np.random.default_rng([self.seed, int(index), self.epoch]).integers(len(options)))
        positive, score = options[draw]
        return {**item, "positive": positive, "scores": [score, *item["scores"][1:]], "positive_drawn": draw}


def _read_mined(source: str, split: str, image_root: str | None = None) -> Dataset:
    """A dataset in the mined format: JSONL, CSV or Parquet files or folders of them (image columns hold image
    paths, relative to ``image_root`` when given; :func:`~unime_v2.data_builders.sources.read_dataset`), or what
    :func:`load_mined_dataset` reads (the authors' ``.json``, a mined ``save_to_disk`` or Parquet folder, a Hub id)."""
    if not is_user_files(source, split):
        if os.path.exists(source) or source.endswith(".json"):
            return load_mined_dataset(source, split, image_root)
        try:  # a Hub id
            return load_mined_dataset(source, split, image_root)
        except (FileNotFoundError, ConnectionError, DatasetNotFoundError) as error:
            accepted = f"accepted: {ACCEPTED_FORMS}, or the authors' .json"
            raise UnreadableSourceError(f"{source}: not found locally nor on the Hub ({error}); {accepted}") from error
    rows = read_dataset(source, split)
    known = {**MINED_FEATURES, **MORE_POSITIVE_FEATURES}
    images = [c for c in ("query_image", "pos_image", "neg_images", "more_pos_images") if c in rows.column_names]
    if image_root and images:
        rows = rows.map(lambda row: {c: _under(row[c], image_root) for c in images}, desc="image paths")
    features = {name: known[name] for name in rows.column_names if name in known}
    return rows.cast(Features({**rows.features, **features}))


def _under(value: Any, root: str) -> Any:
    """An image path cell (or a list of them) with relative paths joined to ``root``."""
    if isinstance(value, list):
        return [_under(v, root) for v in value]
    return os.path.join(root, value) if isinstance(value, str) and value and not os.path.isabs(value) else value


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
        rows = _read_mined(data_args.eval_data, data_args.eval_split)
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
