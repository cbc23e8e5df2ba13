"""Train a UniME-V2 embedder from a YAML recipe; any field can be overridden on the command line.

    accelerate launch examples/train.py --config examples/configs/embedder/tiny.yaml --output_dir runs/tiny
    accelerate launch --multi_gpu --num_processes 2 examples/train.py --config examples/configs/embedder/tiny.yaml \
        --output_dir runs/tiny2 --per_device_train_batch_size 4          # two processes (CPU: gloo)
    accelerate launch --config_file examples/configs/accelerate/8gpu.yaml examples/train.py \
        --config examples/configs/embedder/qwen2vl_2b_paper.yaml --output_dir runs/qwen2vl_2b
    ... --resume_from_checkpoint runs/tiny/checkpoint-20      (or "last": the newest checkpoint in output_dir)

One run per folder (``unime_v2_run.json``, docs/training.md): a folder holding another run (other settings, or a
reranker) is refused unless ``--overwrite true``; the same command again resumes from the run's newest checkpoint.

The fields are those of ``UniMEV2ModelArguments`` (backbone, dtype, LoRA, vision tower), ``UniMEV2DataArguments``
(data) and ``UniMEV2TrainingArguments`` (everything ``TrainingArguments`` has, plus the loss, prompt and image
settings); ``--help`` lists them. Spec strings:
``backbone: tiny:qwen2_vl`` builds a tiny random backbone once into the cache; ``train_data: oracle:mini_mmeb``
builds mini-MMEB and uses its distractors with ORACLE scores in place of judge scores (demo data, labelled as such
in the logs); ``eval_data: mini_mmeb`` evaluates on held-out rows of the same build.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from unime_v2.data_builders.recipes import resolve_backbone
from unime_v2.trainers import (
    RecipeParser,
    UniMEV2Collator,
    UniMEV2DataArguments,
    UniMEV2ModelArguments,
    UniMEV2Trainer,
    UniMEV2TrainingArguments,
    base_embedder,
    build_embedder,
)
from unime_v2.trainers.data import load_training_data, setup_logging
from unime_v2.trainers.run_folder import (
    OutputFolderArguments,
    checkpoint_step,
    claim_training_folder,
    resume_checkpoint,
    run_settings,
    whole_run_metrics,
)


DESCRIPTION = "Train a UniME-V2 embedder (docs/training.md): a YAML recipe (--config) and command-line overrides."


def parse_run(argv: list[str] | None = None) -> tuple[UniMEV2ModelArguments, UniMEV2DataArguments, Any, Any]:
    """The model, data and training arguments and the output-folder switch from ``--config`` and the command line."""
    groups = (UniMEV2ModelArguments, UniMEV2DataArguments, OutputFolderArguments, UniMEV2TrainingArguments)
    model_args, data_args, folder, args = RecipeParser(groups, description=DESCRIPTION).parse(argv)
    return model_args, data_args, args, folder


def parse(argv: list[str] | None = None) -> tuple[UniMEV2ModelArguments, UniMEV2DataArguments, Any]:
    """The script's three argument groups from ``--config`` and the command line."""
    return parse_run(argv)[:3]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, save (merged model + adapter + card), evaluate; returns the run's summary metrics."""
    model_args, data_args, args, folder = parse_run(argv)
    setup_logging(args)
    settings = run_settings(model_args, data_args, args)
    same_run = claim_training_folder(args, "embedder", "examples/train.py", settings, folder.overwrite)
    records, eval_rows = load_training_data(data_args, args)
    backbone = resolve_backbone(model_args.backbone, main_process_first=args.main_process_first)
    model = build_embedder(backbone, model_args, args)
    processor = base_embedder(model).processor
    trainer = UniMEV2Trainer(
        model=model,
        args=args,
        train_dataset=records,
        data_collator=UniMEV2Collator(processor, args.length_buckets, args.pack_text_tokens),
        processing_class=processor,
        mmeb_eval_rows=eval_rows,
        mmeb_image_root=data_args.eval_image_root,
    )
    checkpoint = resume_checkpoint(args, same_run)
    summary: dict[str, Any] = {"padded_records": records.num_padded, "train_records": len(records)}
    if eval_rows is not None and data_args.eval_before_training and checkpoint is None:
        summary.update(trainer.evaluate(metric_key_prefix="eval_untrained"))
    start_step = checkpoint_step(checkpoint)
    metrics = trainer.train(resume_from_checkpoint=checkpoint).metrics
    summary.update(whole_run_metrics(metrics, trainer.state.log_history, start_step))
    if eval_rows is not None:
        summary.update(trainer.evaluate())
    trainer.card_metrics = summary  # the card (the pushed one too) shows the evaluations before and after training
    trainer.save_model()  # merged model, adapter/, card; with push_to_hub: one commit (docs/publishing.md)
    trainer.save_state()
    trainer.save_metrics("all", summary)
    if args.should_log:
        print(json.dumps({"unime_v2_summary": summary}))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
