"""Evaluators on a real tiny embedder and a real tiny judge as reranker; cache; broken datasets; the script."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image as PILImage

from unime_v2.data_builders.formats.judge_pairs import judge_text
from unime_v2.modeling_unime_v2 import JudgeScorer, UniMEV2Model, load_item_image
from unime_v2.trainers.arguments import RecipeParser
from unime_v2.trainers.evaluation import (
    MMEBEvaluator,
    RetrievalEvaluator,
    SugarCrepeEvaluator,
    mmeb_dataset,
    retrieval_sources,
    sugarcrepe_sources,
)
from unime_v2.trainers.evaluation.readers import DatasetSource
from unime_v2.trainers.evaluation.run import EvaluationArguments, run_evaluation


REPO = Path(__file__).resolve().parents[3]
EVALUATE = REPO / "examples" / "evaluate.py"
MINI = ["--data", "mini_mmeb", "--mini_mmeb_test_per_task", "3",
        "--mini_mmeb_num_candidates", "6", "--show_progress_bar", "false", "--mini_mmeb_config",
        '{"caption_images": 4, "long_caption_images": 3, "compositional_per_subset": 2, '
        '"tasks": ["MiniImageNet-cls", "MiniCOCO-i2t", "MiniObjectNet-cls", "MiniRefCOCO-grd"]}']  # fmt: skip


@dataclass
class RerankResult:
    order: list[int]
    scores: list[float] | None
    fallback: bool
    answer: str | None


class JudgeReranker:
    """Pairwise reranker over a real tiny judge: candidates ordered by P(Yes), ties by incoming order."""

    def __init__(self, scorer: JudgeScorer) -> None:
        self.scorer = scorer

    def rerank(self, query: dict, candidates: list[dict], mode: str = "listwise") -> RerankResult:
        scores = self.scorer.score(self._item(query), [self._item(c) for c in candidates]).tolist()
        order = sorted(range(len(candidates)), key=lambda j: (-scores[j], j))
        return RerankResult(order, scores, False, None)

    @staticmethod
    def _item(item: dict) -> dict:
        return {"text": judge_text(item["text"]), "image": load_item_image(item["image"], 0)}


@pytest.fixture(scope="module")
def embedder(tiny_backbone_dirs) -> UniMEV2Model:
    return UniMEV2Model.from_backbone(str(tiny_backbone_dirs["qwen2_vl"]))


@pytest.fixture(scope="module")
def reranker(tiny_backbone_dirs) -> JudgeReranker:
    return JudgeReranker(JudgeScorer.from_pretrained(str(tiny_backbone_dirs["qwen2_5_vl"]), device="cpu"))


def image(color: int) -> PILImage.Image:
    return PILImage.new("RGB", (28, 28), (color, 255 - color, (3 * color) % 256))


@pytest.fixture
def mmeb_source() -> DatasetSource:
    rows = [
        {
            "qry_text": f"<|image_1|>\nclassify {i}",
            "qry_image": image(40 * i),
            "tgt_text": ["cat", "dog", "car", "cow"],
        }
        for i in range(4)
    ]
    return DatasetSource("mmeb", "VOC2007", lambda: mmeb_dataset("VOC2007", rows))


def test_mmeb_precision_and_reranked_precision_equal_direct_computation(embedder, reranker, mmeb_source) -> None:
    data = mmeb_source.load()
    evaluator = MMEBEvaluator([mmeb_source], reranker=reranker, top_k=3)
    metrics = evaluator(embedder)
    queries = embedder.encode(data.queries)
    expected, expected_rerank = [], []
    for row, (query, candidates) in enumerate(zip(queries, data.candidates)):
        scores = embedder.encode(candidates) @ query
        expected.append(float(scores[0] > scores[1:].max()))
        top = sorted(range(len(scores)), key=lambda j: (-float(scores[j]), j == 0))[:3]
        p_yes = reranker.scorer.score(JudgeReranker._item(data.queries[row]),
                                      [JudgeReranker._item(candidates[j]) for j in top])  # fmt: skip
        best = top[max(range(len(top)), key=lambda j: (p_yes[j], -j))]
        expected_rerank.append(float(best == 0))
    assert metrics["precision_at_1/VOC2007"] == pytest.approx(sum(expected) / 4)
    assert metrics["rerank/precision_at_1/VOC2007"] == pytest.approx(sum(expected_rerank) / 4)
    assert metrics["precision_at_1/meta/classification"] == metrics["precision_at_1/ind"] == metrics["precision_at_1"]
    assert metrics["rerank/fallbacks"] == 0 and metrics["num_rows"] == 4


def test_cache_reencodes_nothing_on_rerun_and_everything_on_a_new_resolution(embedder, mmeb_source, tmp_path) -> None:
    first = MMEBEvaluator([mmeb_source], cache_dir=str(tmp_path))
    result = first(embedder)
    again = MMEBEvaluator([mmeb_source], cache_dir=str(tmp_path))
    assert again(embedder) == result
    encoded = len(list(tmp_path.glob("*.npy")))
    low = MMEBEvaluator([mmeb_source], cache_dir=str(tmp_path), resolution="low")
    low(embedder)
    assert low.image_resize == 336 and embedder.config.image_resize is None  # restored
    assert len(list(tmp_path.glob("*.npy"))) == 2 * encoded


def test_an_image_that_does_not_open_names_dataset_and_row_and_only_that_dataset_is_skipped(
    embedder, mmeb_source, tmp_path
) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    rows = [{"qry_text": "q", "qry_img_path": "", "tgt_text": ["a", "b"], "tgt_img_path": ["", ""]}] * 2
    rows = rows + [{"qry_text": "<|image_1|> q", "qry_img_path": "broken.png", "tgt_text": ["a", "b"]}]
    broken = DatasetSource("mmeb", "OVEN", lambda: mmeb_dataset("OVEN", rows, str(tmp_path)))
    with pytest.raises(ValueError, match=r"OVEN row 2 query: cannot read image file .*broken.png"):
        MMEBEvaluator([broken], skip_broken=False)(embedder)
    evaluator = MMEBEvaluator([broken, mmeb_source])
    metrics = evaluator(embedder)
    assert "OVEN row 2 query" in evaluator.errors["OVEN"] and list(evaluator.per_dataset) == ["VOC2007"]
    assert metrics["precision_at_1"] == metrics["precision_at_1/VOC2007"]


def test_retrieval_and_sugarcrepe_on_public_layouts_equal_direct_computation(embedder, authors_data) -> None:
    root = authors_data
    sources = retrieval_sources(root)
    retrieval = RetrievalEvaluator(sources)
    metrics = retrieval(embedder)
    data = sources[0].load()
    images = embedder.encode([{"text": "<|image_1|> Find an image caption describing the given image.", "image": i}
                              for i in data.images])  # fmt: skip
    texts = embedder.encode([{"text": c, "image": None} for c in data.captions])
    scores = images @ texts.T
    i2t = [float(max(scores[i, 5 * i : 5 * i + 5]) > max(torch.cat([scores[i, : 5 * i], scores[i, 5 * i + 5 :]])))
           for i in range(3)]  # fmt: skip
    assert metrics["Flickr30K/i2t_R@1"] == pytest.approx(sum(i2t) / 3)
    t2i = [
        float(scores[j // 5, j] > torch.cat([scores[: j // 5, j], scores[j // 5 + 1 :, j]]).max()) for j in range(15)
    ]
    assert metrics["Flickr30K/t2i_R@1"] == pytest.approx(sum(t2i) / 15)
    assert metrics["Flickr30K/i2t_R@10"] == 1.0 and set(retrieval.per_dataset) == {
        "Flickr30K",
        "COCO",
        "ShareGPT4V",
        "Urban1K",
    }
    sugar = SugarCrepeEvaluator(sugarcrepe_sources(root))
    result = sugar(embedder)
    assert len(sugar.per_dataset) == 7 and all(d["num_rows"] == 2 for d in sugar.per_dataset.values())
    replace = [result[f"accuracy/replace-{x}"] for x in ("obj", "att", "rel")]
    assert result["accuracy/replace"] == pytest.approx(sum(replace) / 3)


# ----------------------------------------------------------------------------------------------- the script


@pytest.fixture(scope="module")
def trained_embedder(tmp_path_factory) -> Path:
    """A tiny embedder trained for a few steps by examples/train.py (run in-process through main(argv))."""
    out = tmp_path_factory.mktemp("trained")
    command = [sys.executable, str(REPO / "examples" / "train.py"), "--config", str(REPO / "examples/configs/embedder/tiny.yaml"),
               "--output_dir", str(out), "--max_steps", "2", "--eval_data", "none", "--mini_mmeb_train_per_task", "4",
               "--save_steps", "1000", "--disable_tqdm", "true", "--warmup_steps", "0"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "config.json").exists()
    return out


@pytest.mark.slow
def test_trained_embedder_end_to_end_with_and_without_reranker(trained_embedder, reranker, tmp_path) -> None:
    out = tmp_path / "plain"
    argv = ["--model", str(trained_embedder), "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"), *MINI]
    evaluate(argv)
    results = json.loads((out / "results.json").read_text())
    assert set(results["suites"]) == {"mmeb", "retrieval", "sugarcrepe"} and results["resolution"] == "checkpoint"
    assert not any(s["errors"] for s in results["suites"].values())
    assert {p.name for p in out.glob("*.png")} >= {
        "mmeb.png",
        "mmeb_classification.png",
        "retrieval.png",
        "sugarcrepe.png",
    }
    assert (
        "| Model | Classification | VQA | Retrieval | Grounding | IND | OOD | Overall |"
        in (out / "results.md").read_text()
    )
    assert json.loads((out / "model_index.json").read_text())[0]["results"]
    (args,) = RecipeParser((EvaluationArguments,)).parse([*argv[:2], "--output_dir", str(tmp_path / "rr"), *argv[4:]])
    reranked = run_evaluation(args, reranker=reranker)
    mmeb = reranked["suites"]["mmeb"]["metrics"]
    assert mmeb["precision_at_1"] == results["suites"]["mmeb"]["metrics"]["precision_at_1"]
    assert "rerank/precision_at_1" in mmeb and reranked["suites"]["mmeb"]["top_k"] == 5
    assert "+ JudgeReranker (top-5)" in (tmp_path / "rr" / "results.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["listwise", "pairwise"])
def test_script_with_a_saved_unime_v2_reranker(trained_embedder, tiny_backbone_dirs, mode, tmp_path) -> None:
    """``--reranker DIR``: a saved UniMEV2Reranker (remote code, AutoModel) adds the '+ reranker' rows; listwise
    fallbacks are counted, and the embedder's own numbers do not change."""
    from unime_v2.modeling_unime_v2 import UniMEV2Reranker

    folder = tmp_path / "reranker"
    UniMEV2Reranker.from_backbone(str(tiny_backbone_dirs["qwen2_5_vl"])).save_pretrained(folder)
    common = ["--model", str(trained_embedder), "--cache_dir", str(tmp_path / "cache"), "--suite", "mmeb", *MINI]
    evaluate([*common, "--output_dir", str(tmp_path / "plain")])
    evaluate([*common, "--output_dir", str(tmp_path / "rr"), "--reranker", str(folder), "--rerank_mode", mode])
    plain, reranked = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("plain", "rr"))
    metrics = reranked["suites"]["mmeb"]["metrics"]
    assert metrics["precision_at_1"] == plain["suites"]["mmeb"]["metrics"]["precision_at_1"]
    assert 0.0 <= metrics["rerank/precision_at_1"] <= 1.0
    assert reranked["reranker"] == str(folder)
    assert f"+ {folder} (top-5)" in (tmp_path / "rr" / "results.md").read_text()


def test_reranker_without_rerank_is_a_clear_error(tiny_backbone_dirs, tmp_path) -> None:
    argv = ["--model", "unused", "--reranker", str(tiny_backbone_dirs["qwen2_5_vl"]), "--output_dir", str(tmp_path)]
    with pytest.raises(TypeError, match="has no rerank"):
        evaluate(argv)


def evaluate(argv: list[str]) -> dict:
    """What ``examples/evaluate.py`` does with ``argv``: parse the settings, run the evaluation."""
    (args,) = RecipeParser((EvaluationArguments,)).parse(argv)
    return run_evaluation(args)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_give_exactly_the_single_process_numbers(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "UNIME_V2_CACHE": str(tmp_path)}
    common = ["--model", "tiny:qwen2_vl", "--no_cache", "true", *MINI]
    single = [sys.executable, str(EVALUATE), *common, "--output_dir", str(tmp_path / "one")]
    subprocess.run(single, env=env, check=True, capture_output=True, timeout=240, cwd=REPO)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--main_process_port", str(free_port()), str(EVALUATE), *common, "--output_dir", str(tmp_path / "two")]  # fmt: skip
    run = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["suites"] == one["suites"]
