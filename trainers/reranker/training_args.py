"""Settings of reranker training (``examples/train_reranker.py``), next to the trainer that reads them (trl's
``Config`` beside each ``Trainer``): :class:`UniMEV2RerankerTrainingArguments` (the objective, the prompt layout,
the tiny model's initialisation; everything else is ``TrainingArguments``) and :class:`UniMEV2RerankerDataArguments`
(the training data). The backbone, its dtype, LoRA and the vision tower are the shared
:class:`~unime_v2.trainers.arguments.UniMEV2ModelArguments`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from unime_v2.data_builders.formats.judge_pairs import JUDGE_PAIRS_MINI_MMEB
from unime_v2.data_builders.recipes import ORACLE_MINI_MMEB


PAIR_FORMATS = ("reranker", "judge")
RERANKER_MODEL_DEFAULTS = {
    "backbone_dtype": "bfloat16",
    "lora_r": 128,
    "lora_alpha": 256,
    "lora_dropout": 0.05,
    "use_dora": False,
}
"""The paper's reranker values of the shared model arguments (docs/reranker.md): ``examples/train_reranker.py``
starts from them, a recipe or the command line overrides them."""


@dataclass
class UniMEV2RerankerTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the reranker objective ``L = pair_weight · L_pair + list_weight · L_list``
    (docs/reranker.md): :class:`~unime_v2.trainers.reranker.UniMEV2RerankerTrainer` reads its loss settings here
    and nowhere else. ``remove_unused_columns`` defaults to ``False``: the collator reads whole records."""

    # ---- the objective
    pair_weight: float = field(default=1.0, metadata={"help": "Weight of L_pair (paper: 1)."})
    list_weight: float = field(default=1.0, metadata={"help": "Weight of L_list (paper: 1; 0: pairwise only)."})
    num_list_negatives: int = field(default=5, metadata={"help": "x: top negatives by judge score per listwise row."})
    num_pair_negatives: int = field(
        default=1,
        metadata={
            "help": "'No' pairs per query (paper: 1): a record's hardest negatives by judge score; with "
            "judge_pairs:mini_mmeb, positives of other queries of the same task."
        },
    )
    candidate_lm_weight: float = field(
        default=0.0,
        metadata={"help": "Auxiliary LM loss on the positive's text (not the paper's; models trained from scratch)."},
    )
    # ---- the model built from the backbone
    pair_format: str = field(
        default="reranker", metadata={"help": "Pairwise layout: reranker (released) or judge (mining judge)."}
    )
    released_typo: bool = field(
        default=False, metadata={"help": "Use the released training data's pairwise prompt ('responed')."}
    )
    tiny_init: bool = field(
        default=False, metadata={"help": "Re-draw weights at 1/sqrt(fan_in) (tiny backbones trained from scratch)."}
    )
    image_side: int = field(
        default=0, metadata={"help": "Resize images to this square side, a multiple of 28 (Qwen-VL; 0: keep)."}
    )
    centre_images: bool = field(
        default=False,
        metadata={
            "help": "Shift and scale the vision merger's output to zero mean, unit std on training images "
            "(a tiny Qwen-VL trained from scratch; docs/judge_training.md)."
        },
    )
    # ---- TrainingArguments defaults changed for this trainer
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep every column: the collator reads whole records."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("pair_weight", "list_weight", "candidate_lm_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("num_list_negatives", "num_pair_negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pair_format not in PAIR_FORMATS:
            raise ValueError(f"pair_format={self.pair_format!r}; choose one of {PAIR_FORMATS}")
        if self.image_side % 28:
            raise ValueError(f"image_side must be a multiple of 28 (one merged Qwen-VL patch), got {self.image_side}")


@dataclass
class UniMEV2RerankerDataArguments:
    """What to train on: a mined dataset, mini-MMEB with ORACLE scores (demo records), or mini-MMEB judge pairs."""

    train_data: str = field(
        default=ORACLE_MINI_MMEB,
        metadata={
            "help": "A mined dataset (save_to_disk folder, Hub id or authors' .json), oracle:mini_mmeb (training "
            "records with ORACLE scores; demo data), labels:mini_mmeb (training records scored by their labels "
            "only, hard distractors first: the tiny judge's instruction data) or judge_pairs:mini_mmeb (Yes/No "
            "pairs of mini-MMEB train facts: pairwise training only)."
        },
    )
    train_image_root: str | None = field(default=None, metadata={"help": "Image root of an authors' .json."})
    train_split: str = field(default="train", metadata={"help": "Split of a Hub / on-disk dataset dict."})
    max_train_records: int | None = field(default=None, metadata={"help": "Use only the first N records."})
    stored_negatives: int = field(
        default=10, metadata={"help": "Negatives read per record (ranked by judge score in the collator)."}
    )
    drop_fallback_rows: bool = field(
        default=False,
        metadata={
            "help": "Leave out the mined dataset's fallback rows (random negatives scored 1.0, counted and logged "
            "either way; docs/training.md)."
        },
    )
    mini_mmeb_seed: int = field(default=0, metadata={"help": "Seed of the generated mini-MMEB."})
    mini_mmeb_train_per_task: int = field(
        default=64, metadata={"help": "mini-MMEB training queries per task (oracle:mini_mmeb, judge_pairs:mini_mmeb)."}
    )
    mini_mmeb_config: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "More MiniMMEBConfig fields as JSON (a mapping in YAML), e.g. tasks (default: the in-distribution "
            "tasks, the only ones with training rows)."
        },
    )
    heldout_fraction: float = field(
        default=0.0,
        metadata={"help": "judge_pairs:mini_mmeb: training queries held out of the pairs (0: none)."},
    )
    mini_mmeb_test_per_task: int = field(
        default=0,
        metadata={"help": "judge_pairs:mini_mmeb: test rows per task of the same build (judge quality; 0: none)."},
    )
    mini_mmeb_num_candidates: int = field(
        default=4,
        metadata={"help": "judge_pairs:mini_mmeb: candidates per judged query, its positive included."},
    )
    judge_quality: bool = field(
        default=False,
        metadata={
            "help": "judge_pairs:mini_mmeb: score the held-out queries and the test rows before and after training "
            "against mini-MMEB's oracle (it measures, it never trains); figures in judge_training.json."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.mini_mmeb_config, str):
            self.mini_mmeb_config = json.loads(self.mini_mmeb_config)
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.judge_quality and self.train_data != JUDGE_PAIRS_MINI_MMEB:
            raise ValueError(f"judge_quality needs train_data={JUDGE_PAIRS_MINI_MMEB} (its held-out queries)")
        if self.judge_quality and not self.heldout_fraction:
            raise ValueError("judge_quality needs heldout_fraction > 0: the queries it scores are held out")
