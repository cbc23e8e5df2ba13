"""Training on mined rows with several positives (docs/mining.md, "Several positives"): each step uses one of a
record's positives with its judge score, drawn from (seed, record, epoch): deterministic, varying by epoch."""

from __future__ import annotations

import pytest
import torch
from accelerate.data_loader import prepare_data_loader
from datasets import Dataset, Features

from unime_v2.data_builders.formats.mined import MINED_FEATURES
from unime_v2.data_builders.formats.training_records import TrainingRecords
from unime_v2.data_builders.mining.pipeline import MORE_POSITIVE_FEATURES
from unime_v2.trainers.data import SeveralPositives


def mined(n: int = 4) -> Dataset:
    rows = [
        {
            "query_id": f"q{i}",
            "source": "A",
            "query_text": f"query {i}",
            "query_image": None,
            "query_image_path": "",
            "pos_text": f"p{i}-0",
            "pos_image": None,
            "pos_image_path": "",
            "pos_score": 0.9,
            "neg_texts": [f"n{i}"],
            "neg_images": [None],
            "neg_image_paths": [""],
            "neg_scores": [0.1],
            "neg_similarities": [0.5],
            "more_pos_texts": [f"p{i}-1", f"p{i}-2"],
            "more_pos_images": [None, None],
            "more_pos_image_paths": ["", ""],
            "more_pos_scores": [0.8, 0.7],
        }
        for i in range(n)
    ]
    return Dataset.from_list(rows, features=Features({**MINED_FEATURES, **MORE_POSITIVE_FEATURES}))


def test_each_item_uses_one_positive_with_its_score():
    records = SeveralPositives(TrainingRecords(mined(), 1), seed=0)
    scores = {"0": 0.9, "1": 0.8, "2": 0.7}
    for index in range(len(records)):
        item = records[index]
        text = item["positive"]["text"]
        assert text.startswith(f"p{index}-") and item["scores"] == pytest.approx([scores[text[-1]], 0.1])
    assert records.num_padded == 0 and len(records) == 4  # the records' own attributes


def test_the_draw_is_deterministic_per_seed_and_epoch_and_varies_by_epoch():
    first, second = (SeveralPositives(TrainingRecords(mined(), 1), seed=0) for _ in range(2))
    draws = []
    for epoch in range(12):
        first.set_epoch(epoch)
        second.set_epoch(epoch)
        draws.append([first[i]["positive"]["text"] for i in range(4)])
        assert draws[-1] == [second[i]["positive"]["text"] for i in range(4)]
    assert len({text for epoch in draws for text in epoch}) == 12  # every positive is used over the epochs
    reseeded = [SeveralPositives(TrainingRecords(mined(), 1), seed=s) for s in range(1, 4)]
    assert any([r[i]["positive"]["text"] for i in range(4)] != draws[0] for r in reseeded)  # the seed matters


def test_a_one_process_data_loader_gives_the_records_its_epoch():
    records = SeveralPositives(TrainingRecords(mined(), 1), seed=0)
    loader = prepare_data_loader(
        torch.utils.data.DataLoader(records, batch_size=2, shuffle=True, collate_fn=list), put_on_device=False
    )
    loader.set_epoch(3)
    assert records.epoch == 3


def test_load_training_data_draws_positives_for_a_parquet_folder_with_several(tmp_path):
    from unime_v2.trainers.data import load_training_data
    from unime_v2.trainers.training_args import UniMEV2DataArguments, UniMEV2TrainingArguments

    mined().to_parquet(str(tmp_path / "data-00000-of-00001.parquet"))
    data_args = UniMEV2DataArguments(train_data=str(tmp_path), eval_data="none")
    args = UniMEV2TrainingArguments(output_dir=str(tmp_path / "out"), num_hard_negatives=1)
    records, _ = load_training_data(data_args, args)
    assert isinstance(records, SeveralPositives) and len(records) == 4
    assert records[0]["positive"]["text"].startswith("p0-")


def test_the_trainer_callback_gives_the_records_each_epoch(tmp_path):
    """On several processes accelerate does not pass the epoch to the dataset; UniMEV2Trainer's callback does."""
    from unime_v2.trainers.trainer import DatasetEpochCallback, UniMEV2Trainer
    from unime_v2.trainers.training_args import UniMEV2TrainingArguments

    records = SeveralPositives(TrainingRecords(mined(), 1), seed=0)
    args = UniMEV2TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=2
    )
    trainer = UniMEV2Trainer(model=torch.nn.Linear(1, 1), args=args, train_dataset=records, data_collator=list)
    assert any(isinstance(c, DatasetEpochCallback) for c in trainer.callback_handler.callbacks)
    trainer.callback_handler.train_dataloader = trainer.get_train_dataloader()  # as Trainer's training loop does
    draws = []
    for epoch in (0.0, 1.0, 1.5, 2.0):  # state.epoch: 1.5 when resuming in the middle of epoch 1
        trainer.state.epoch = epoch
        trainer.callback_handler.on_epoch_begin(trainer.args, trainer.state, trainer.control)
        assert records.epoch == int(epoch)
        draws.append([records[i]["positive"]["text"] for i in range(len(records))])
    assert draws[1] == draws[2] and len({tuple(d) for d in draws}) == 3
