"""Train the UniME-V2-Reranker (L_pair + L_list) on a mined dataset; the saved folder loads with ``AutoModel``.

    accelerate launch examples/train_reranker.py --config examples/configs/reranker/tiny.yaml \
        --output_dir runs/reranker_tiny
    accelerate launch --config_file examples/configs/accelerate/8gpu.yaml examples/train_reranker.py \
        --config examples/configs/reranker/qwen25vl7b.yaml --output_dir runs/reranker_7b --train_data MINED_DATASET
    OMP_NUM_THREADS=1 python examples/train_reranker.py --config examples/configs/reranker/tiny_judge.yaml \
        --output_dir runs/tiny_judge          # the tiny judge of the demos: pairwise only, on mini-MMEB pairs

Settings: ``UniMEV2ModelArguments`` (backbone, dtype, LoRA; the reranker's paper values by default),
``UniMEV2RerankerDataArguments`` and ``UniMEV2RerankerTrainingArguments`` (``--help``); a recipe is given with
``--config``, and any field can be overridden on the command line. With ``--judge_quality true`` (judge pairs only) the judge is
scored against mini-MMEB's oracle before and after training, into ``judge_training.json`` (docs/judge_training.md).
One run per folder, as in ``examples/train.py``: another run's folder (an embedder's too) is refused unless
``--overwrite true``; the same command again resumes from the run's newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

import torch
from accelerate import PartialState

from unime_v2.data_builders.formats.judge_pairs import JUDGE_PAIRS_MINI_MMEB
from unime_v2.data_builders.recipes import resolve_backbone
from unime_v2.modeling_unime_v2 import UniMEV2Reranker
from unime_v2.trainers.arguments import RecipeParser, UniMEV2ModelArguments
from unime_v2.trainers.reranker import (
    RERANKER_MODEL_DEFAULTS,
    UniMEV2RerankerDataArguments,
    UniMEV2RerankerTrainer,
    UniMEV2RerankerTrainingArguments,
    build_reranker,
    judge_pair_data,
    reranker_records,
)
from unime_v2.trainers.reranker.build import training_images
from unime_v2.trainers.reranker.evaluation import JudgeQualityEvaluator, quality_report, write_judge_training
from unime_v2.trainers.run_folder import (
    OutputFolderArguments,
    checkpoint_step,
    claim_training_folder,
    resume_checkpoint,
    run_settings,
    whole_run_metrics,
)


DESCRIPTION = "Train the UniME-V2 reranker (docs/reranker.md): a YAML recipe (--config) and command-line overrides."


def parse_run(argv: list[str] | None = None) -> tuple[UniMEV2ModelArguments, UniMEV2RerankerDataArguments, Any, Any]:
    """The model, data and training arguments and the output-folder switch from ``--config`` and the command line."""
    groups = (UniMEV2ModelArguments, UniMEV2RerankerDataArguments, OutputFolderArguments,
              UniMEV2RerankerTrainingArguments)  # fmt: skip
    parser = RecipeParser(groups, defaults=RERANKER_MODEL_DEFAULTS, description=DESCRIPTION)
    model_args, data_args, folder, args = parser.parse(argv)
    return model_args, data_args, args, folder


def parse(argv: list[str] | None = None) -> tuple[UniMEV2ModelArguments, UniMEV2RerankerDataArguments, Any]:
    """The script's three argument groups from ``--config`` and the command line."""
    return parse_run(argv)[:3]


def main(argv: list[str] | None = None) -> str:
    """Train, save (merged reranker + adapter + card), and with ``judge_quality`` measure; returns ``output_dir``."""
    start = time.time()
    model_args, data_args, args, folder = parse_run(argv)
    settings = run_settings(model_args, data_args, args)
    same_run = claim_training_folder(args, "reranker", "examples/train_reranker.py", settings, folder.overwrite)
    path = resolve_backbone(model_args.backbone, main_process_first=PartialState().main_process_first)
    judge_data = judge_pair_data(data_args, args) if data_args.train_data == JUDGE_PAIRS_MINI_MMEB else None
    train_dataset = judge_data.pairs if judge_data is not None else reranker_records(data_args, args.seed)
    images = training_images(train_dataset) if args.centre_images else None
    model, processor = build_reranker(model_args, args, path, images=images)
    evaluator = None
    if data_args.judge_quality:
        test_rows = data_args.mini_mmeb_test_per_task > 0
        evaluator = JudgeQualityEvaluator(judge_data, data_args.mini_mmeb_num_candidates - 1, test_rows, args.seed)
        before = evaluator(model)
    trainer = UniMEV2RerankerTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        processing_class=processor,
        backbone=model_args.backbone,
        train_data=data_args.train_data,
    )
    train_start = time.time()
    checkpoint = resume_checkpoint(args, same_run)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = whole_run_metrics(result.metrics, trainer.state.log_history, checkpoint_step(checkpoint))
    trainer.save_metrics("train", metrics)  # train_results.json: the whole run's loss after a resume
    train_seconds = time.time() - train_start
    trainer.save_state()  # trainer_state.json: the logged pair and list losses
    trainer.save_model()  # merged reranker, adapter/, card; with push_to_hub: one commit (docs/publishing.md)
    if evaluator is not None and args.should_save:
        after = evaluator(UniMEV2Reranker.from_pretrained(args.output_dir, dtype=torch.float32))  # what mining loads
        print(quality_report(before, after))
        settings = {**dataclasses.asdict(model_args), **dataclasses.asdict(data_args), **args.to_dict()}
        figures = {
            "train_seconds": round(train_seconds, 1),
            "total_seconds": round(time.time() - start, 1),
            "train_loss": metrics["train_loss"],
        }
        write_judge_training(args.output_dir, before, after, settings, figures)
    return args.output_dir


if __name__ == "__main__":
    main(sys.argv[1:])
