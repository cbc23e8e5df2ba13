"""Publishing: staged repository folders load like the Hub ones, cards carry the artifact's numbers, one commit."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, load_dataset
from huggingface_hub import DatasetCard, ModelCard
from PIL import Image

from unime_v2.data_builders.formats.mined import MINED_FEATURES, make_mined_row
from unime_v2.data_builders.mining import MiningConfig
from unime_v2.data_builders.mining.pipeline import MiningResult
from unime_v2.data_builders.mining.report import write_report
from unime_v2.hub_cards import (
    TRAINING_RECORD,
    push_artifact,
    stage_dataset,
    stage_model,
    training_record,
    write_model_card,
)
from unime_v2.modeling_unime_v2 import UniMEV2Model, UniMEV2Reranker


ITEMS_CODE = """
from PIL import Image
image = Image.new("RGB", (40, 32), (200, 30, 30))
items = [{"text": "a red square", "image": None}, {"text": "<|image_1|>\\nRepresent the given image.", "image": image}]
"""


def _items() -> list[dict]:
    scope: dict = {}
    exec(ITEMS_CODE, scope)
    return scope["items"]


def _mined_dataset(rows: int = 5) -> Dataset:
    image = Image.new("RGB", (8, 8), (0, 128, 255))
    return Dataset.from_list(
        [
            make_mined_row(
                query_text=f"q{i}",
                query_image=image if i % 2 else None,
                pos_text=f"p{i}",
                pos_score=0.9 - i / 100,
                neg_texts=[f"n{i}-{j}" for j in range(10)],
                neg_scores=[0.1 * (j % 3) for j in range(10)],
                neg_similarities=[0.5 - j / 100 for j in range(10)],
                source="A",
                query_id=f"A-{i}",
            )
            for i in range(rows)
        ],
        features=MINED_FEATURES,
    )


@pytest.fixture(scope="module")
def mined_dir(tmp_path_factory, mining_report) -> Path:
    """``mine``'s output layout: ``dataset/`` (save_to_disk) and ``report.json`` next to it."""
    out = tmp_path_factory.mktemp("mined")
    _mined_dataset().save_to_disk(str(out / "dataset"))
    write_report(mining_report, out)
    return out


@pytest.fixture(scope="module")
def embedder_dir(tiny_qwen2_vl_dir, mined_dir, tmp_path_factory) -> Path:
    """A saved embedder with the training record a trainer writes, and an adapter in adapter/."""
    out = tmp_path_factory.mktemp("embedder")
    UniMEV2Model.from_backbone(str(tiny_qwen2_vl_dir)).save_pretrained(out)
    (out / "adapter").mkdir()
    (out / "adapter" / "adapter_config.json").write_text("{}")
    (out / "trainer_state.json").write_text("{}")
    record = training_record({"loss": "symmetric_kl", "LoRA": "r=8"}, str(mined_dir / "dataset"), base_model="Qwen/x")
    write_model_card(out, "embedder", "me/tiny", record)
    return out


def _evaluate(embedder: Path, out: Path, reranker: Path | None = None) -> Path:
    """A real evaluation on mini-MMEB (examples/evaluate.py's package call); its results.json."""
    from unime_v2.trainers.arguments import RecipeParser
    from unime_v2.trainers.evaluation.run import EvaluationArguments, run_evaluation

    argv = ["--model", str(embedder), "--output_dir", str(out), "--no_cache", "true", "--data", "mini_mmeb"]
    argv += ["--mini_mmeb_test_per_task", "2", "--mini_mmeb_num_candidates", "4", "--show_progress_bar", "false"]
    argv += ["--suite", "mmeb", "--mini_mmeb_config", '{"tasks": ["MiniImageNet-cls", "MiniCOCO-i2t"]}']
    argv += ["--reranker", str(reranker), "--mmeb_top_k", "2"] if reranker else []
    (args,) = RecipeParser((EvaluationArguments,)).parse(argv)
    run_evaluation(args)
    return out / "results.json"


@pytest.fixture(scope="module")
def results_json(embedder_dir, tmp_path_factory) -> Path:
    return _evaluate(embedder_dir, tmp_path_factory.mktemp("eval"))


@pytest.fixture(scope="module")
def reranker_dir(tiny_backbone_dirs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reranker")
    UniMEV2Reranker.from_backbone(str(tiny_backbone_dirs["qwen2_5_vl"]), dtype=torch.float32).save_pretrained(out)
    return out


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _card_snippet(readme: Path, repo_id: str, local: Path) -> str:
    """The card's first Python block, with the repository id replaced by the local folder (nothing else)."""
    snippet = re.search(r"```python\n(.*?)```", readme.read_text(), re.S).group(1)
    assert f'"{repo_id}"' in snippet
    return snippet.replace(f'"{repo_id}"', repr(str(local)))


def _shadowed_python(code: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter where ``import unime_v2`` fails (a shadowing package comes first)."""
    shadow = cwd / "shadow" / "unime_v2"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('unime_v2 is not installed here')\n")
    prelude = f"import sys\nsys.path.insert(0, {str(shadow.parent)!r})\n"
    check = "try:\n    import unime_v2\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('not shadowed')\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + check + textwrap.dedent(code)],
        cwd=cwd,
        env={**_clean_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


# ------------------------------------------------------------------------------------------------ embedder
@pytest.mark.slow
def test_staged_embedder_loads_without_the_package_and_embeds_like_the_source(embedder_dir, tmp_path):
    staged = stage_model(embedder_dir, tmp_path / "staged", "me/unime-v2-tiny")
    assert "README.md" in staged.files and "model.safetensors" in staged.files and TRAINING_RECORD in staged.files
    assert "adapter/adapter_config.json" in staged.files and "adapter_config.json" not in staged.files
    assert "trainer_state.json" not in staged.files
    assert {"modeling_unime_v2.py", "configuration_unime_v2.py", "processor_config.json"} <= set(staged.files)
    copy = shutil.copytree(staged.folder, tmp_path / "elsewhere" / "repo")
    script = f"""
import numpy as np
import torch
from transformers import AutoModel, AutoProcessor
model = AutoModel.from_pretrained({str(copy)!r}, trust_remote_code=True)
processor = AutoProcessor.from_pretrained({str(copy)!r}, trust_remote_code=True)
assert "unime_v2" not in sys.modules and type(processor).__name__ == "UniMEV2Processor"
np.save("encode.npy", model.encode(items).float().numpy())
with torch.no_grad():
    np.save("forward.npy", model(**processor(items)).embeddings.float().numpy())
"""
    _shadowed_python(ITEMS_CODE + script, tmp_path / "elsewhere")
    expected = UniMEV2Model.from_pretrained(str(embedder_dir)).encode(_items())
    for route in ("encode", "forward"):  # model.encode, and the AutoProcessor + model(**inputs) route
        loaded = torch.from_numpy(np.load(tmp_path / "elsewhere" / f"{route}.npy"))
        torch.testing.assert_close(loaded, expected.float(), atol=1e-5, rtol=1e-4, msg=route)


@pytest.mark.slow
def test_embedder_card_usage_snippet_runs_as_written(embedder_dir, tmp_path):
    staged = stage_model(embedder_dir, tmp_path / "staged", "someone/unime-v2-tiny")
    output = _shadowed_python(
        _card_snippet(staged.folder / "README.md", "someone/unime-v2-tiny", staged.folder), tmp_path
    )
    assert output.startswith("tensor([[") and output.count("[") == 2, output  # one query ...
    assert len(re.findall(r"-?\d+\.\d+", output)) == 2, output  # ... against two documents


@pytest.mark.slow
def test_reranker_card_usage_snippet_runs_as_written(reranker_dir, tmp_path):
    staged = stage_model(reranker_dir, tmp_path / "staged", "someone/rr", "reranker")
    card = ModelCard.load(staged.folder / "README.md")
    assert card.data.pipeline_tag == "image-text-to-text" and "reranker" in card.data.tags
    output = _shadowed_python(_card_snippet(staged.folder / "README.md", "someone/rr", staged.folder), tmp_path)
    lines = output.strip().splitlines()
    assert lines[0].startswith("tensor([") and len(lines) == 3, output  # scores, listwise order, pairwise result


def test_card_carries_the_training_record_mining_report_and_evaluation(
    embedder_dir, results_json, mining_report, tmp_path
):
    staged = stage_model(embedder_dir, tmp_path / "staged", "me/unime-v2-tiny", eval_results=results_json)
    card = ModelCard.load(staged.folder / "README.md")
    results = json.loads(results_json.read_text())
    mmeb = results["suites"]["mmeb"]
    expected = {(name, round(100 * d["precision_at_1"], 2)) for name, d in mmeb["per_dataset"].items()}
    expected.add(("overall", round(100 * mmeb["metrics"]["precision_at_1"], 2)))
    got = {(e.dataset_config, e.metric_value) for e in card.data.eval_results}
    assert got == expected and len(expected) == 3
    assert card.data.to_dict()["model-index"][0]["name"] == "unime-v2-tiny"
    assert card.data.base_model == "Qwen/x" and card.data.library_name == "transformers"
    settings = mining_report["settings"]
    for key in ("delta", "beta", "top_k", "seed", "judge"):
        assert f"| {key} | {settings[key]} |" in card.text, key
    for key, value in mining_report["counts"].items():
        assert f"| count: {key} | {value} |" in card.text, key
    assert "| loss | symmetric_kl |" in card.text and "| transformers |" in card.text
    assert "eprint={2510.13515}" in card.text


def test_reranker_card_takes_the_reranked_figures(embedder_dir, reranker_dir, results_json, tmp_path):
    reranked = _evaluate(embedder_dir, tmp_path / "eval", reranker_dir)
    staged = stage_model(reranker_dir, tmp_path / "staged", "me/rr", "reranker", eval_results=reranked)
    mmeb = json.loads(reranked.read_text())["suites"]["mmeb"]
    expected = {(name, round(100 * d["rerank/precision_at_1"], 2)) for name, d in mmeb["per_dataset"].items()}
    expected.add(("overall", round(100 * mmeb["metrics"]["rerank/precision_at_1"], 2)))
    card = ModelCard.load(staged.folder / "README.md")
    assert {(e.dataset_config, e.metric_value) for e in card.data.eval_results} == expected
    assert all(e.metric_name.endswith("(reranked top-k)") for e in card.data.eval_results)
    with pytest.raises(ValueError, match="ran without a reranker"):
        stage_model(reranker_dir, tmp_path / "staged2", "me/rr", "reranker", eval_results=results_json)


def test_a_card_from_a_bad_results_file_names_it(embedder_dir, tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"model": "x"}))
    with pytest.raises(ValueError, match="not an evaluation results.json"):
        stage_model(embedder_dir, tmp_path / "staged", "me/x", eval_results=bad)


# ------------------------------------------------------------------------------------------------ datasets
def test_staged_dataset_loads_with_load_dataset_and_equals_the_source(mined_dir, mining_report, tmp_path):
    staged = stage_dataset(mined_dir, tmp_path / "staged", "me/mined", num_shards=2)
    assert [f for f in staged.files if f.startswith("data/")] == [
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
    ]
    assert {"mining/report.json", "mining/report.md", "README.md"} <= set(staged.files)
    card = DatasetCard.load(staged.folder / "README.md")
    assert card.data.to_dict()["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}
    ]
    assert card.data.to_dict()["unime_v2_mining"]["delta"] == mining_report["settings"]["delta"]
    copy = shutil.copytree(staged.folder, tmp_path / "copy")
    snippet = _card_snippet(copy / "README.md", "me/mined", copy) + "\nprint(len(mined), mined.column_names)\n"
    output = _shadowed_python(snippet, tmp_path, {"HF_DATASETS_CACHE": str(tmp_path / "snippet_cache")})
    assert output.strip() == f"5 {list(MINED_FEATURES)}"
    loaded = load_dataset(str(copy), split="train", cache_dir=str(tmp_path / "hf_cache"))
    source = _mined_dataset()
    assert loaded.features == source.features
    for got, want in zip(loaded, source, strict=True):
        for key, value in want.items():
            if key == "query_image" and value is not None:
                assert np.array_equal(np.asarray(got[key]), np.asarray(value))
            else:
                assert got[key] == value, key


# ------------------------------------------------------------------------------------------------ uploads
def test_push_makes_one_commit_with_the_staged_files(embedder_dir, tmp_path, recording_hub):
    hub = recording_hub
    dry = push_artifact("embedder", embedder_dir, "me/tiny", dry_run=tmp_path / "dry")
    assert not hub.repos and not hub.commits  # --dry_run stops after staging
    push_artifact("embedder", embedder_dir, "me/tiny", private=True)
    assert hub.repos == [{"repo_id": "me/tiny", "repo_type": "model", "private": True, "exist_ok": True}]
    (commit,) = hub.commits
    assert sorted(commit["files"]) == dry.files and "adapter_config.json" not in commit["files"]
    assert commit["files"]["model.safetensors"] == (embedder_dir / "model.safetensors").read_bytes()
    # the upload's staging folder hard-links the weights (no second copy) and is gone afterwards
    assert commit["inodes"]["model.safetensors"] == (embedder_dir / "model.safetensors").stat().st_ino
    assert not list(embedder_dir.parent.glob(".unime_v2_push_*"))


def test_mining_push_is_one_commit(mined_dir, mining_report, recording_hub):
    hub = recording_hub
    result = MiningResult(dataset=_mined_dataset(), report=mining_report, output_dir=mined_dir)
    result.push_to_hub("someone/mined", private=True)
    assert hub.repos == [{"repo_id": "someone/mined", "repo_type": "dataset", "private": True, "exist_ok": True}]
    (commit,) = hub.commits
    assert commit["repo_type"] == "dataset"
    assert sorted(commit["files"]) == [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "mining/report.json",
        "mining/report.md",
    ]
    assert "Qwen/Qwen2.5-VL-7B-Instruct" in commit["files"]["README.md"].decode()
    assert json.loads(commit["files"]["mining/report.json"])["counts"]["fallbacks"] == 3


def test_bad_inputs_fail_before_anything_is_uploaded(
    tiny_qwen2_vl_dir, embedder_dir, mined_dir, mining_report, tmp_path, recording_hub
):
    hub = recording_hub
    with pytest.raises(ValueError, match="no config.json"):
        push_artifact("embedder", mined_dir, "me/x")
    with pytest.raises(ValueError, match="model_type='qwen2_vl'"):
        push_artifact("embedder", tiny_qwen2_vl_dir, "me/x")
    with pytest.raises(ValueError, match="model_type='unime_v2'"):
        push_artifact("reranker", embedder_dir, "me/x")
    with_adapter = shutil.copytree(embedder_dir, tmp_path / "with_adapter")
    (with_adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="adapter files at the root"):
        push_artifact("embedder", with_adapter, "me/x")
    with pytest.raises(ValueError, match="invalid Hub repo id"):
        push_artifact("embedder", embedder_dir, "me/bad id!")
    with pytest.raises(ValueError, match="invalid Hub repo id 'me/bad id!'"):  # mining fails before it starts
        MiningConfig(push_to_hub="me/bad id!")
    unscored = tmp_path / "unscored"
    _mined_dataset().remove_columns(["pos_score"]).save_to_disk(str(unscored / "dataset"))
    write_report(mining_report, unscored)
    with pytest.raises(ValueError, match=r"no judge scores \(missing columns \['pos_score'\]\)"):
        push_artifact("dataset", unscored, "me/x")
    with pytest.raises(ValueError, match="not a saved dataset"):
        push_artifact("dataset", embedder_dir, "me/x")
    no_report = tmp_path / "no_report"
    _mined_dataset().save_to_disk(str(no_report))
    with pytest.raises(ValueError, match="no mining report.json"):
        push_artifact("dataset", no_report, "me/x")
    assert not hub.repos and not hub.commits
