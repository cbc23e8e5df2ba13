"""Exports for sentence-transformers and FlagEmbedding, each read back the way that tool reads it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import datasets
import pytest
import torch
from PIL import Image

from unime_v2.data_builders.formats.exports import (
    export_mined,
    main,
    parse_formats,
    sentence_transformers_features,
    to_flagembedding,
    to_sentence_transformers,
)
from unime_v2.data_builders.formats.mined import (
    MINED_FEATURES,
    MORE_POSITIVE_FEATURES,
    fallback_rows,
    is_fallback_row,
    make_mined_row,
)


K = 3


def _row(index: int, neg_scores: list[float], image: bool = False) -> dict:
    return make_mined_row(
        query_id=f"q{index}",
        source="toy",
        query_text=f"query {index}",
        query_image=Image.new("RGB", (4, 4), (index, 0, 0)) if image else None,
        query_image_path=f"images/q{index}.png" if image else "",
        pos_text=f"positive {index}",
        pos_score=0.9,
        neg_texts=[f"negative {index}.{j}" for j in range(K)],
        neg_scores=neg_scores,
        num_negatives=K,
    )


@pytest.fixture
def mined() -> datasets.Dataset:
    rows = [_row(0, [0.5, 0.4, 0.1]), _row(1, [1.0] * K), _row(2, [0.2, 0.3, 0.0], image=True), _row(3, [0.8] * K)]
    return datasets.Dataset.from_list(rows, features=MINED_FEATURES)


def test_fallback_rows_are_those_with_every_negative_at_one(mined: datasets.Dataset) -> None:
    assert fallback_rows(mined) == [1]
    assert is_fallback_row([1.0, 1.0]) and not is_fallback_row([1.0, 0.99]) and not is_fallback_row([])


def test_sentence_transformers_export_feeds_distill_kl_div_loss(mined: datasets.Dataset, tmp_path: Path) -> None:
    summary = to_sentence_transformers(mined, tmp_path / "st")
    assert (summary.rows, summary.skipped_fallback_rows, summary.skipped_image_rows) == (2, 1, 1)
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "st" / "train.parquet"), split="train")
    assert loaded.column_names == ["query", "positive", "negative_1", "negative_2", "negative_3", "label"]
    assert loaded.features == sentence_transformers_features(K)
    assert loaded[0]["query"] == "query 0" and loaded[1]["negative_3"] == "negative 3.2"
    assert loaded[0]["label"] == pytest.approx([0.9, 0.5, 0.4, 0.1])

    st = pytest.importorskip("sentence_transformers", minversion="6")
    from sentence_transformers.losses import DistillKLDivLoss
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

    def tokenize(texts: list[str], **_: object) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor([[len(t)] for t in texts])}

    batch = SentenceTransformerDataCollator(preprocess_fn=tokenize)(list(loaded))
    inputs = [name for name in loaded.column_names if name != "label"]
    assert all(f"{name}_input_ids" in batch for name in inputs) and batch["label"].shape == (2, K + 1)
    embeddings = [torch.randn(2, 8) for _ in inputs]
    loss = DistillKLDivLoss(model=None).compute_loss_from_embeddings(embeddings, batch["label"])
    assert torch.isfinite(loss) and st.__version__


def test_flagembedding_export_reads_as_its_train_dataset_does(mined: datasets.Dataset, tmp_path: Path) -> None:
    summary = to_flagembedding(mined, tmp_path / "fe", images="text", prompt="Retrieve the answer: ")
    assert (summary.rows, summary.skipped_fallback_rows, summary.skipped_image_rows) == (3, 1, 0)
    # FlagEmbedding's AbsEmbedderTrainDataset: load_dataset('json', split='train'), then per item data['query'],
    # data['prompt'], one of data['pos'] with its pos_scores entry, negatives from data['neg'] with neg_scores.
    data = datasets.load_dataset("json", data_files=str(tmp_path / "fe" / "train.jsonl"), split="train")
    item = data[2]
    assert isinstance(item["pos"], list) and isinstance(item["neg"], list)
    pos_idx = random.choice(range(len(item["pos"])))
    neg_idxs = random.sample(range(len(item["neg"])), K)
    teacher = [item["pos_scores"][pos_idx], *(item["neg_scores"][j] for j in neg_idxs)]
    assert all(isinstance(score, (int, float)) for score in teacher)
    assert item["query"] == "query 3" and item["prompt"] == "Retrieve the answer: "
    assert data[1]["query_image"] == "images/q2.png" and data[1]["neg_images"] == [""] * K
    assert data[0]["pos_scores"] == pytest.approx([0.9]) and data[0]["neg_scores"] == pytest.approx([0.5, 0.4, 0.1])


def test_export_mined_writes_each_format_and_keeps_fallbacks_on_request(
    mined: datasets.Dataset, tmp_path: Path
) -> None:
    summaries = export_mined(mined, tmp_path, "sentence_transformers,flagembedding", keep_fallback_rows=True)
    assert summaries["flagembedding"]["rows"] == 3 and summaries["sentence_transformers"]["skipped_fallback_rows"] == 0
    lines = (tmp_path / "flagembedding" / "train.jsonl").read_text().splitlines()
    assert [json.loads(line)["query"] for line in lines] == ["query 0", "query 1", "query 3"]
    assert "prompt" not in json.loads(lines[0]) and "query_image" not in json.loads(lines[0])
    with pytest.raises(ValueError, match="unknown export format"):
        parse_formats("sentence_transformer")
    assert parse_formats("none") == [] and parse_formats(None) == []


def test_command_line_exports_an_existing_mined_dataset(mined: datasets.Dataset, tmp_path: Path) -> None:
    mined.save_to_disk(str(tmp_path / "dataset"))
    summaries = main([str(tmp_path / "dataset"), str(tmp_path / "out"), "--formats", "flagembedding"])
    assert list(summaries) == ["flagembedding"] and (tmp_path / "out" / "flagembedding" / "train.jsonl").exists()


def _several_positives() -> datasets.Dataset:
    """Query 0 has three positives (0.9, 0.8, 0.7), query 1 one, query 2 a further positive with an image."""
    rows = [_row(0, [0.5, 0.4, 0.1]), _row(1, [0.2, 0.3, 0.0]), _row(2, [0.2, 0.1, 0.0])]
    more = [
        (["positive 0.1", "positive 0.2"], [None, None], ["", ""], [0.8, 0.7]),
        ([], [], [], []),
        (["positive 2.1"], [Image.new("RGB", (4, 4))], ["images/p2.png"], [0.6]),
    ]
    for row, (texts, images, paths, scores) in zip(rows, more):
        row.update(more_pos_texts=texts, more_pos_images=images, more_pos_image_paths=paths, more_pos_scores=scores)
    return datasets.Dataset.from_list(rows, features=datasets.Features({**MINED_FEATURES, **MORE_POSITIVE_FEATURES}))


def test_sentence_transformers_export_writes_one_row_per_positive(tmp_path: Path) -> None:
    summary = to_sentence_transformers(_several_positives(), tmp_path / "st")
    assert (summary.rows, summary.queries, summary.skipped_image_rows) == (4, 2, 1)
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "st" / "train.parquet"), split="train")
    assert loaded.column_names == ["query", "positive", "negative_1", "negative_2", "negative_3", "label"]
    assert loaded["query"] == ["query 0"] * 3 + ["query 1"]
    assert loaded["positive"] == ["positive 0", "positive 0.1", "positive 0.2", "positive 1"]
    assert [row["label"][0] for row in loaded] == pytest.approx([0.9, 0.8, 0.7, 0.9])
    assert all(row["label"][1:] == pytest.approx([0.5, 0.4, 0.1]) for row in loaded.select(range(3)))
    assert len({(row["negative_1"], row["negative_2"], row["negative_3"]) for row in loaded.select(range(3))}) == 1


def test_flagembedding_export_lists_every_positive_with_its_score(tmp_path: Path) -> None:
    summary = to_flagembedding(_several_positives(), tmp_path / "fe", images="text")
    assert (summary.rows, summary.queries, summary.skipped_image_rows) == (3, 3, 0)
    data = datasets.load_dataset("json", data_files=str(tmp_path / "fe" / "train.jsonl"), split="train")
    assert data[0]["pos"] == ["positive 0", "positive 0.1", "positive 0.2"]
    assert data[0]["pos_scores"] == pytest.approx([0.9, 0.8, 0.7]) and data[0]["pos_images"] == ["", "", ""]
    assert data[1]["pos"] == ["positive 1"] and data[1]["pos_scores"] == pytest.approx([0.9])
    assert data[2]["pos_images"] == ["", "images/p2.png"] and data[2]["pos_scores"] == pytest.approx([0.9, 0.6])
    skipped = to_flagembedding(_several_positives(), tmp_path / "fe-skip")
    assert (skipped.rows, skipped.skipped_image_rows) == (2, 1)  # the image of a further positive counts
