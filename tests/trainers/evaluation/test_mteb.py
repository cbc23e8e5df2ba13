"""The MTEB entry (docs/evaluation.md, "MTEB"): ``mteb.evaluate`` on a local image–text retrieval task equals the
retrieval suite of ``examples/evaluate.py`` on the same data."""

from __future__ import annotations

from pathlib import Path

import mteb
import pytest
import pytrec_eval
from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.task_metadata import TaskMetadata

from unime_v2.data_builders.checkpoints import load_embedder
from unime_v2.modeling_unime_v2 import UniMEV2Model
from unime_v2.trainers.arguments import RecipeParser
from unime_v2.trainers.evaluation.mteb_model import mteb_encoder, mteb_item, unime_v2_model_meta
from unime_v2.trainers.evaluation.readers import (
    IMAGE_QUERY_TEXT,
    read_caption_folder,
)
from unime_v2.trainers.evaluation.run import EvaluationArguments, run_evaluation


def task_metadata(name: str, category: str) -> TaskMetadata:
    return TaskMetadata(
        name=name,
        description="Generated images and captions (a test task, built in memory).",
        reference=None,
        dataset={"path": "local/unime-v2-test", "revision": "local"},
        type="Any2AnyRetrieval",
        category=category,
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10",
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        modalities=["text", "image"],
        sample_creation=None,
        bibtex_citation="",
    )


class LocalRetrieval(AbsTaskRetrieval):
    """An image–text retrieval task over a :class:`RetrievalSet`, in one direction (``i2t`` or ``t2i``)."""

    direction = ""

    def __init__(self, data, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data = data

    def load_data(self, num_proc=None, **kwargs) -> None:
        images = Dataset.from_dict({"id": [f"image{i}" for i in range(len(self.data.images))],
                                    "image": list(self.data.images)})  # fmt: skip
        texts = Dataset.from_dict({"id": [f"caption{j}" for j in range(len(self.data.captions))],
                                   "text": list(self.data.captions)})  # fmt: skip
        pairs = [(f"image{i}", f"caption{j}") for j, i in enumerate(self.data.caption_image)]
        relevant: dict[str, dict[str, int]] = {}
        for image_id, caption_id in pairs:
            query, document = (image_id, caption_id) if self.direction == "i2t" else (caption_id, image_id)
            relevant.setdefault(query, {})[document] = 1
        queries, corpus = (images, texts) if self.direction == "i2t" else (texts, images)
        split = {"queries": queries, "corpus": corpus, "relevant_docs": relevant, "top_ranked": None}
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


class LocalI2T(LocalRetrieval):
    metadata = task_metadata("UniMEV2LocalI2T", "i2t")
    direction = "i2t"


class LocalT2I(LocalRetrieval):
    metadata = task_metadata("UniMEV2LocalT2I", "t2i")
    direction = "t2i"


def evaluate_cli(argv: list[str]) -> dict:
    (args,) = RecipeParser((EvaluationArguments,)).parse(argv)
    return run_evaluation(args)


@pytest.mark.parametrize("kind", ["qwen2_vl", "llava_onevision", "saved_unime_v2"])
def test_mteb_evaluate_equals_the_retrieval_suite_on_the_same_data(
    kind: str, tiny_backbone_dirs, authors_data: Path, tmp_path: Path
) -> None:
    """The authors' Qwen2-VL (official format: 1-D positions) and a saved UniME-V2 checkpoint through
    ``ModelMeta.load_model``; LLaVA-OneVision loaded here and wrapped with ``mteb_encoder``."""
    root = authors_data
    if kind == "saved_unime_v2":
        model = str(tmp_path / "saved")
        UniMEV2Model.from_backbone(str(tiny_backbone_dirs["qwen2_5_vl"])).save_pretrained(model)
    else:
        model = str(tiny_backbone_dirs[kind])
    ours = evaluate_cli(
        ["--model", model, "--suite", "retrieval", "--retrieval_dir", str(root), "--output_dir", str(tmp_path / "out"),
         "--no_cache", "--show_progress_bar", "false"]
    )["suites"]["retrieval"]["metrics"]  # fmt: skip
    data = read_caption_folder(root / "flickr30k_test", "Flickr30K")
    entry = unime_v2_model_meta(model) if kind != "llava_onevision" else mteb_encoder(load_embedder(model), name=model)
    result = mteb.evaluate(entry, [LocalI2T(data), LocalT2I(data)], cache=None, show_progress_bar=False)
    scores = {r.task_name: r.scores["test"][0] for r in result.task_results}
    assert ours["Flickr30K/i2t_R@1"] not in (0.0, 1.0)
    for direction in ("i2t", "t2i"):
        mine = scores[f"UniMEV2Local{direction.upper()}"]
        for k in (1, 5, 10):
            assert mine[f"hit_rate_at_{k}"] == pytest.approx(ours[f"Flickr30K/{direction}_R@{k}"], abs=1e-5)


def test_items_follow_the_retrieval_suite() -> None:
    image = object()
    assert mteb_item(None, image) == {"text": IMAGE_QUERY_TEXT, "image": image}
    assert mteb_item("a caption", None) == {"text": "a caption", "image": None}
    assert mteb_item("a caption", None, "Find it.") == {"text": "Find it. a caption\n", "image": None}
    assert mteb_item(None, image, "Find it.") == {"text": "<|image_1|>\nFind it.\n", "image": image}
    with pytest.raises(ValueError, match="neither text nor image"):
        mteb_item("", None)


def test_pytrec_eval_breaks_score_ties_by_descending_document_id() -> None:
    """The tie rule of MTEB's retrieval metrics (docs/evaluation.md, "MTEB"): the larger id ranks first."""
    evaluator = pytrec_eval.RelevanceEvaluator({"q": {"b": 1}}, {"success.1"})
    assert evaluator.evaluate({"q": {"a": 0.5, "b": 0.5}})["q"]["success_1"] == 1.0
    assert evaluator.evaluate({"q": {"b": 0.5, "c": 0.5}})["q"]["success_1"] == 0.0
