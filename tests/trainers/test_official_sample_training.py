"""Training on the authors' released 50-record sample, end to end (images stood in by generated files at its paths).

Read both from the file and through ``load_dataset("json")`` (how the Hub copy,
``TianchengGu/UniME-V2-Training-Datasets``, is downloaded). The sample holds WebQA queries whose text carries ``<|image_1|>`` but no image; by default they are fed as the
backbone's image token without pixels (docs/method.md §5), so the whole sample trains.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from datasets import load_dataset
from PIL import Image

from unime_v2.data_builders.formats import from_authors_dataset
from unime_v2.data_builders.formats.training_records import TrainingRecords
from unime_v2.trainers import (
    UniMEV2Collator,
    UniMEV2ModelArguments,
    UniMEV2Trainer,
    UniMEV2TrainingArguments,
    base_embedder,
    build_embedder,
)


SAMPLE = Path(__file__).parents[1] / "fixtures" / "official-mined-negatives-example.json"


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """A PNG at every image path of the sample, its colour derived from the path."""
    root = tmp_path_factory.mktemp("mmeb_train")
    records = json.loads(SAMPLE.read_text())
    paths = {r["query_image"] for r in records} | {r["pos_image"] for r in records}
    paths |= {image for r in records for _, image in r["hard_negatives"]}
    for relative in sorted(p for p in paths if p):
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shade = sum(relative.encode()) % 256
        Image.new("RGB", (40, 32), (shade, 255 - shade, 96)).save(target)
    return root


def _records(reader: str, image_root: Path, cache: Path) -> TrainingRecords:
    """The sample read from the file (``json``), or as users get it from the Hub (``load_dataset("json")``)."""
    if reader == "json":
        return TrainingRecords.from_authors_json(SAMPLE, image_root, num_hard_negatives=2)
    raw = load_dataset("json", data_files=str(SAMPLE), split="train", cache_dir=str(cache))
    mined = from_authors_dataset(raw, image_root, name=SAMPLE.name, show_progress_bar=False)
    return TrainingRecords(mined, num_hard_negatives=2, name=SAMPLE.name)


@pytest.mark.parametrize(
    ("loss_type", "reader"),
    [("symmetric_kl", "json"), ("symmetric_kl_authors", "json"), ("symmetric_kl", "load_dataset")],
)
def test_whole_sample_trains_and_counts_markers_without_image(
    loss_type, reader, image_root, tiny_qwen2_vl_dir, tmp_path
):
    records = _records(reader, image_root, tmp_path / "hf_cache")
    assert records.markers_without_image.get("WebQA", 0) >= 1
    args = UniMEV2TrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
        per_device_train_batch_size=10,
        num_train_epochs=1,
        learning_rate=1e-3,
        loss_type=loss_type,
        seed=0,
    )
    model_args = UniMEV2ModelArguments(backbone=str(tiny_qwen2_vl_dir), use_dora=False)
    model = build_embedder(str(tiny_qwen2_vl_dir), model_args, args)
    processor = base_embedder(model).processor
    trainer = UniMEV2Trainer(model=model, args=args, train_dataset=records, data_collator=UniMEV2Collator(processor))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 5 and len(losses) == 5  # every record of the sample was fed
    assert all(math.isfinite(loss) for loss in losses)


def test_strict_marker_policy_still_names_the_record(image_root, tiny_qwen2_vl_dir, tmp_path):
    records = TrainingRecords.from_authors_json(SAMPLE, image_root, num_hard_negatives=2)
    args = UniMEV2TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", marker_without_image="error"
    )
    model_args = UniMEV2ModelArguments(backbone=str(tiny_qwen2_vl_dir), use_dora=False)
    processor = base_embedder(build_embedder(str(tiny_qwen2_vl_dir), model_args, args)).processor
    with pytest.raises(ValueError, match=r"record 23 \(.*\), query: text has 1 image marker"):
        UniMEV2Collator(processor)([records[23]])
