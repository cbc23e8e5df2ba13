"""Train a UniME-V2 embedder from a YAML recipe (any key can be overridden on the command line).

    accelerate launch examples/train.py examples/configs/tiny.yaml --output_dir runs/tiny
    accelerate launch --cpu --num_processes 2 examples/train.py examples/configs/tiny.yaml --output_dir runs/tiny2 \
        --per_device_train_batch_size 4
    accelerate launch --config_file examples/configs/accelerate_zero2.yaml examples/train.py \
        examples/configs/qwen2vl_2b.yaml --output_dir runs/qwen2vl_2b
    ... --resume_from_checkpoint runs/tiny/checkpoint-20      (or "last": the newest checkpoint in output_dir)

Recipe keys are the fields of ``UniMEV2DataArguments`` (backbone, data) and ``UniMEV2TrainingArguments``
(everything ``TrainingArguments`` has, plus the loss, LoRA and image settings). ``backbone: tiny:qwen2_vl`` builds a
tiny random backbone into ``<output_dir>/tiny_backbone``; ``train_data: oracle:mini_mmeb`` builds mini-MMEB and
uses its distractors with ORACLE scores in place of judge scores (demo data, labelled as such in the logs).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import datasets
import yaml
from transformers import HfArgumentParser
from transformers.trainer_utils import get_last_checkpoint

from unime_v2.data_builders.formats.training_records import TrainingRecords, load_mined_dataset, oracle_mined_dataset
from unime_v2.data_builders.tiny_backbones import build_tiny_backbone
from unime_v2.trainers import (
    UniMEV2Collator,
    UniMEV2DataArguments,
    UniMEV2Trainer,
    UniMEV2TrainingArguments,
    base_embedder,
    build_embedder,
)


logger = logging.getLogger("unime_v2.train")
ORACLE_DATA = "oracle:mini_mmeb"
MINI_MMEB = "mini_mmeb"


def recipe_to_argv(recipe: dict[str, Any]) -> list[str]:
    """``{key: value}`` → ``["--key", "value", ...]`` as HfArgumentParser reads them (lists: several values)."""
    argv: list[str] = []
    for key, value in recipe.items():
        if value is None:
            continue
        if isinstance(value, bool):
            argv += [f"--{key}", str(value).lower()]
        elif isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def parse_args(argv: list[str]) -> tuple[UniMEV2DataArguments, UniMEV2TrainingArguments]:
    """Read ``[recipe.yaml] [--key value ...]``; command-line values override the recipe, and ``--key none``
    drops a recipe key (its default applies: e.g. ``--deepspeed none`` for a single-GPU test of a DeepSpeed recipe)."""
    recipe: dict[str, Any] = {}
    if argv and argv[0].endswith((".yaml", ".yml")):
        recipe, argv = yaml.safe_load(Path(argv[0]).read_text()) or {}, argv[1:]
    rest: list[str] = []
    index = 0
    while index < len(argv):
        key = argv[index][2:] if argv[index].startswith("--") else None
        if key in recipe and index + 1 < len(argv) and argv[index + 1].lower() == "none":
            del recipe[key]
            index += 2
            continue
        rest.append(argv[index])
        index += 1
    parser = HfArgumentParser((UniMEV2DataArguments, UniMEV2TrainingArguments))
    return parser.parse_args_into_dataclasses(args=recipe_to_argv(recipe) + rest)


def resolve_backbone(spec: str, args: UniMEV2TrainingArguments) -> str:
    """A checkpoint path / Hub id as is; ``tiny:<kind>`` is built once into ``<output_dir>/tiny_backbone``."""
    if not spec.startswith("tiny:"):
        return spec
    path = Path(args.output_dir) / "tiny_backbone"
    with args.main_process_first(desc="build the tiny backbone"):
        if not (path / "TINY_BACKBONE.json").exists():
            build_tiny_backbone(spec.split(":", 1)[1], path, seed=0)
    return str(path)


def mini_mmeb_splits(data_args: UniMEV2DataArguments) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Disjoint (train, held-out) mini-MMEB rows from one build: per task, the first ``mini_mmeb_test_per_task``
    rows are held out; the next ``mini_mmeb_train_per_task`` rows of in-distribution tasks are for training."""
    from unime_v2.data_builders.mini_mmeb import MiniMMEBConfig, build_mini_mmeb

    n_test, n_train = data_args.mini_mmeb_test_per_task, data_args.mini_mmeb_train_per_task
    extra = json.loads(data_args.mini_mmeb_config) if data_args.mini_mmeb_config else {}
    config = MiniMMEBConfig(
        **{
            "seed": data_args.mini_mmeb_seed,
            "train_pairs": 0,
            "num_candidates": data_args.mini_mmeb_num_candidates,
            "caption_images": 0,
            "long_caption_images": 0,
            "compositional_per_subset": 0,
            **extra,
            "eval_queries": n_test + n_train,
        }
    )
    rows = build_mini_mmeb(config)["mmeb"]["test"]
    position: dict[str, int] = {}
    test_index, train_index = [], []
    for index, (name, ood) in enumerate(zip(rows["dataset"], rows["ood"])):
        rank = position[name] = position.get(name, -1) + 1
        if rank < n_test:
            test_index.append(index)
        elif not ood:
            train_index.append(index)
    return rows.select(train_index), rows.select(test_index)


def load_data(
    data_args: UniMEV2DataArguments, args: UniMEV2TrainingArguments
) -> tuple[TrainingRecords, list[dict[str, Any]] | None]:
    """Training records and the optional MMEB-eval rows named by the recipe."""
    if (data_args.eval_data or "").lower() in ("", "none"):
        data_args.eval_data = None
    needs_mini = data_args.train_data == ORACLE_DATA or data_args.eval_data == MINI_MMEB
    mini_train, mini_test = mini_mmeb_splits(data_args) if needs_mini else (None, None)
    if data_args.train_data == ORACLE_DATA:
        logger.warning(
            "train_data=oracle:mini_mmeb: the 'judge scores' are mini-MMEB ORACLE scores (exact match fractions from "
            "the generator), NOT MLLM-judge scores: demo data for the tiny recipe only"
        )
        mined, name = oracle_mined_dataset(mini_train), "mini-MMEB (ORACLE scores)"
    else:
        mined = load_mined_dataset(data_args.train_data, data_args.train_split, data_args.train_image_root)
        name = data_args.train_data
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
    eval_rows = None
    if data_args.eval_data == MINI_MMEB:
        eval_rows = mini_test
    elif data_args.eval_data:
        eval_rows = load_mined_dataset(data_args.eval_data, data_args.eval_split)
    if eval_rows is not None and data_args.max_eval_rows is not None:
        eval_rows = eval_rows.select(range(min(data_args.max_eval_rows, len(eval_rows))))
    return records, (list(eval_rows) if eval_rows is not None else None)


def resume_checkpoint(args: UniMEV2TrainingArguments) -> str | None:
    """``--resume_from_checkpoint``: a folder, or ``last``/``true`` for the newest checkpoint in ``output_dir``."""
    value = args.resume_from_checkpoint
    if value is None or value.lower() in ("", "false", "none"):
        return None
    if value.lower() in ("last", "true"):
        last = get_last_checkpoint(args.output_dir)
        if last is None:
            raise FileNotFoundError(f"--resume_from_checkpoint {value}: no checkpoint-* folder in {args.output_dir}")
        return last
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    data_args, args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    records, eval_rows = load_data(data_args, args)
    model = build_embedder(resolve_backbone(data_args.backbone, args), args)
    processor = base_embedder(model).processor
    trainer = UniMEV2Trainer(
        model=model,
        args=args,
        train_dataset=records,
        data_collator=UniMEV2Collator(processor),
        processing_class=processor,
        mmeb_eval_rows=eval_rows,
        mmeb_image_root=data_args.eval_image_root,
    )
    checkpoint = resume_checkpoint(args)
    summary: dict[str, Any] = {"padded_records": records.num_padded, "train_records": len(records)}
    if eval_rows is not None and data_args.eval_before_training and checkpoint is None:
        summary.update(trainer.evaluate(metric_key_prefix="eval_untrained"))
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    trainer.save_state()
    summary.update(result.metrics)
    if eval_rows is not None:
        summary.update(trainer.evaluate())
    trainer.save_metrics("all", summary)
    if args.should_log:
        print(json.dumps({"unime_v2_summary": summary}))
    return summary


if __name__ == "__main__":
    main()
