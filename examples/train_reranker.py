"""Train the UniME-V2-Reranker (L_pair + L_list) on a mined dataset; the saved folder loads with ``AutoModel``.

    accelerate launch examples/train_reranker.py examples/configs/reranker_tiny.yaml --output_dir runs/reranker_tiny
    accelerate launch --config_file examples/configs/accelerate_8gpu.yaml examples/train_reranker.py \
        examples/configs/reranker_qwen25vl7b.yaml --output_dir runs/reranker_7b

Settings: ``UniMEV2RerankerDataArguments`` and ``UniMEV2RerankerTrainingArguments`` (``--help``); a recipe is
given as the first argument or with ``--config``, and any field can be overridden on the command line.
"""

from __future__ import annotations

import sys

from accelerate import PartialState

from unime_v2.data_builders.recipes import RecipeParser, resolve_backbone
from unime_v2.trainers.reranker_trainer import UniMEV2RerankerTrainer
from unime_v2.trainers.reranker_training_args import (
    UniMEV2RerankerDataArguments,
    UniMEV2RerankerTrainingArguments,
    build_reranker,
    reranker_records,
)


def main(argv: list[str] | None = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        argv = ["--config", *argv]
    data_args, args = RecipeParser((UniMEV2RerankerDataArguments, UniMEV2RerankerTrainingArguments)).parse(argv)
    path = resolve_backbone(data_args.backbone, main_process_first=PartialState().main_process_first)
    model, processor = build_reranker(data_args, args, path)
    records = reranker_records(data_args, seed=args.seed)
    trainer = UniMEV2RerankerTrainer(
        model=model,
        args=args,
        train_dataset=records,
        processing_class=processor,
        pair_weight=args.pair_weight,
        list_weight=args.list_weight,
        candidate_lm_weight=args.candidate_lm_weight,
        num_list_negatives=args.num_list_negatives,
        num_pair_negatives=args.num_pair_negatives,
        backbone=data_args.backbone,
        train_data=data_args.train_data,
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_state()  # trainer_state.json: the logged pair and list losses
    trainer.save_model()  # merged reranker, adapter/, card; with push_to_hub: one commit (docs/publishing.md)
    return args.output_dir


if __name__ == "__main__":
    main()
