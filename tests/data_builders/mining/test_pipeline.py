"""The mining pipeline end to end: multi-process = single-process, kill + resume = uninterrupted, the authors' JSON
round trip, and bad inputs (missing/corrupt images, empty pools, duplicates, NaN embeddings)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from datasets import Dataset, Features, Value, load_from_disk
from datasets import Image as ImageFeature
from PIL import Image

from unime_v2.data_builders.formats.mined import from_authors_json, iter_undecoded_rows, to_authors_json
from unime_v2.data_builders.formats.training_records import TrainingRecords, load_mined_dataset
from unime_v2.data_builders.mining.config import MiningConfig
from unime_v2.data_builders.mining.pipeline import mine
from unime_v2.data_builders.recipes import default_cache_dir
from unime_v2.modeling_unime_v2 import UniMEV2Model
from unime_v2.modeling_unime_v2.scoring_unime_v2 import JudgeScorer


REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "examples" / "mine.py"
MINI_MMEB = {
    "seed": 0,
    "train_pairs": 45,
    "eval_queries": 1,
    "num_candidates": 2,
    "caption_images": 0,
    "long_caption_images": 0,
    "compositional_per_subset": 0,
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "true"}


# ------------------------------------------------------------------------------------------ subprocess runs


@pytest.fixture(scope="module")
def run_config(tmp_path_factory, tiny_backbone_dirs) -> Path:
    """A small mini-MMEB mining config (45 queries, 12 shards) using the session's tiny backbones."""
    path = tmp_path_factory.mktemp("mining_config") / "mine.yaml"
    config = yaml.safe_load((REPO / "examples" / "configs" / "mining" / "tiny.yaml").read_text())
    config.update(
        mini_mmeb=MINI_MMEB,
        embedder=str(tiny_backbone_dirs["qwen2_vl"]),
        judge=str(tiny_backbone_dirs["qwen2_5_vl"]),
        shard_size=4,
        progress=False,
    )
    path.write_text(yaml.safe_dump(config))
    return path


def run_mine(
    config: Path, output_dir: Path, processes: int = 1, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    args = [str(SCRIPT), "--config", str(config), "--output_dir", str(output_dir)]
    if processes == 1:
        command = [sys.executable, *args]
    else:
        # `--cpu --num_processes N` would start one process (accelerate's simple launcher, meant for mpirun);
        # `--multi_gpu` starts N through torchrun, and the script's PartialState(cpu=True) makes them a gloo group.
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            *args,
        ]
    result = subprocess.run(command, env=env or ENV, capture_output=True, text=True, timeout=240, cwd=REPO)
    if check and result.returncode != 0:
        output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        raise AssertionError(f"{command} failed ({result.returncode}):\n{output}")
    return result


def assert_same_dataset(dir_a: Path, dir_b: Path) -> None:
    a, b = load_from_disk(str(dir_a / "dataset")), load_from_disk(str(dir_b / "dataset"))
    assert len(a) == len(b) > 0
    assert a.data.table.equals(b.data.table), "the mined datasets differ"
    assert (dir_a / "mined.json").read_text() == (dir_b / "mined.json").read_text()


@pytest.fixture(scope="module")
def uninterrupted(run_config, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("uninterrupted")
    run_mine(run_config, output)
    return output


@pytest.mark.slow
def test_two_processes_give_the_one_process_dataset(run_config, uninterrupted, tmp_path):
    run_mine(run_config, tmp_path, processes=2)
    assert_same_dataset(uninterrupted, tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["num_processes"] == 2 and report["resume"]["judge_shards_reused"] == 0
    writers = {json.loads(p.read_text())["writer"] for p in (tmp_path / "cache" / "judge").glob("*/shard-*.json")}
    assert writers == {0, 1}, "both processes must have judged shards"


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_dataset(run_config, uninterrupted, tmp_path):
    killed = run_mine(run_config, tmp_path, env={**ENV, "UNIME_V2_MINE_KILL_AFTER_SHARDS": "3"}, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    shards = sorted((tmp_path / "cache" / "judge").glob("*/shard-*.json"))
    assert len(shards) == 3 and not (tmp_path / "dataset").exists()
    saved = {path: path.stat().st_mtime_ns for path in [*shards, *(tmp_path / "cache" / "embeddings").glob("*.npy")]}

    run_mine(run_config, tmp_path)
    assert_same_dataset(uninterrupted, tmp_path)
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in saved.items()), "saved work was recomputed"
    resume = json.loads((tmp_path / "report.json").read_text())["resume"]
    assert resume["judge_shards_reused"] == 3 and resume["embedding_chunks_computed"] == 0


@pytest.mark.slow
def test_authors_json_round_trip(uninterrupted, tmp_path):
    mined = load_from_disk(str(uninterrupted / "dataset"))
    image_root = uninterrupted / "authors_json"
    loaded = from_authors_json(uninterrupted / "mined.json", image_root, show_progress_bar=False)
    assert len(loaded) == len(mined)
    for name in ("query_text", "pos_text", "neg_texts", "pos_score", "neg_scores"):
        assert loaded[name] == mined[name], name
    original, reread = next(iter_undecoded_rows(mined)), next(iter_undecoded_rows(loaded))
    assert Path(reread["query_image"]["path"]).read_bytes() == original["query_image"]["bytes"]
    to_authors_json(loaded, tmp_path / "again.json", image_root, show_progress_bar=False)
    assert json.loads((tmp_path / "again.json").read_text()) == json.loads((uninterrupted / "mined.json").read_text())


# ------------------------------------------------------------------------------------------ in-process runs


def colour(rgb: tuple[int, int, int], size: int = 48) -> Image.Image:
    return Image.new("RGB", (size, size), rgb)


COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]
NAMES = ["red", "green", "blue", "yellow", "cyan", "magenta"]


def source_rows() -> list[dict]:
    """A: text query -> image positive; B: image query -> text positive (one label repeated); C: a lone record."""
    rows = [
        {
            "qry": f"Find me an everyday image that matches the given caption: a {n} square",
            "qry_image": None,
            "pos_text": "<|image_1|>\nRepresent the given image.\n",
            "pos_image": colour(c),
            "dataset": "A",
        }
        for n, c in zip(NAMES, COLOURS)
    ]
    rows += [
        {
            "qry": "<|image_1|>\nRepresent the given image for classification\n",
            "qry_image": colour(c, 40 + 4 * i),
            "pos_text": n,
            "pos_image": None,
            "dataset": "B",
        }
        for i, (n, c) in enumerate(zip(NAMES, COLOURS))
    ]
    rows.append(dict(rows[-1]))  # an exact duplicate record: its query repeats, its positive is a duplicate
    rows.append({"qry": "What is this?", "qry_image": None, "pos_text": "nothing", "pos_image": None, "dataset": "C"})
    return rows


FEATURES = Features(
    {
        "qry": Value("string"),
        "qry_image": ImageFeature(),
        "pos_text": Value("string"),
        "pos_image": ImageFeature(),
        "dataset": Value("string"),
    }
)


def save_source(rows: list[dict], path: Path, features: Features = FEATURES) -> str:
    Dataset.from_list(rows, features=features).save_to_disk(str(path))
    return str(path)


def config_for(data: str, output: Path, dirs: dict, **overrides) -> MiningConfig:
    values = dict(
        data=data,
        embedder=str(dirs["qwen2_vl"]),
        judge=str(dirs["qwen2_5_vl"]),
        delta=0.999,
        beta=0.001,
        pool="dataset",
        shard_size=3,
        progress=False,
        faiss_gpu=False,
        output_dir=str(output),
        on_empty_pool="skip",
    )
    values.update(overrides)
    return MiningConfig(**values)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, tiny_backbone_dirs):
    root = tmp_path_factory.mktemp("small_run")
    data = save_source(source_rows(), root / "source")
    config = config_for(data, root / "out", tiny_backbone_dirs)
    return config, mine(config)


def test_mined_rows_match_an_independent_judge_and_the_report(small_run, tiny_backbone_dirs):
    config, result = small_run
    dataset, counts = result.dataset, result.report["counts"]
    assert counts["records"] == 14 and counts["queries"] == 13
    assert counts["skipped_empty_pool"] == 1 and result.report["skipped_query_ids"] == ["C-13"]
    assert counts["duplicate_queries"] == 1 and counts["duplicate_candidates"] == 1
    assert counts["pools_smaller_than_top_k"] == 13 and counts["pairs_judged"] == 6 * 6 + 7 * 6
    judge = JudgeScorer.from_pretrained(config.judge, device="cpu")
    fallbacks = 0
    for row in dataset:
        assert len(row["neg_texts"]) == 10 and all(s < config.delta for s in row["neg_similarities"])
        positive = {"text": row["pos_text"], "image": row["pos_image"]}  # the judge's processor removes markers
        query = {"text": row["query_text"], "image": row["query_image"]}
        negatives = [{"text": t, "image": i} for t, i in zip(row["neg_texts"], row["neg_images"])]
        assert all(n["text"] != positive["text"] or n["image"] != positive["image"] for n in negatives)
        expected = judge.score_full_pairs(query, [positive, *negatives])
        assert abs(row["pos_score"] - expected[0]) < 1e-6
        if row["neg_scores"] == [1.0] * 10:
            fallbacks += 1
        else:
            np.testing.assert_allclose(row["neg_scores"], expected[1:], atol=1e-6, rtol=0)
            assert all(s <= row["pos_score"] - config.beta + 1e-7 for s in row["neg_scores"])
    assert fallbacks == counts["fallbacks"]
    kept = [row["pos_score"] - s for row in dataset if row["neg_scores"] != [1.0] * 10 for s in row["neg_scores"]]
    negatives = result.report["negatives"]
    assert negatives["min_positive_gap"] == pytest.approx(min(kept), abs=1e-6)
    assert negatives["negatives_with_known_dataset"] == 10 * len(dataset)
    assert negatives["negatives_from_other_dataset"] == 0  # per-dataset pools cannot give any
    assert (result.output_dir / "judge_scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| fallbacks" in (result.output_dir / "report.md").read_text()


def test_rerun_reuses_every_saved_stage(small_run, monkeypatch):
    config, first = small_run

    def fail(*args, **kwargs):
        raise AssertionError("a model was loaded although everything was saved")

    monkeypatch.setattr("unime_v2.data_builders.mining.pipeline.load_judge", fail)
    monkeypatch.setattr("unime_v2.data_builders.mining.pipeline.load_embedder", fail)
    again = mine(config)
    assert again.dataset.data.table.equals(first.dataset.data.table)
    assert again.report["resume"]["judge_shards_reused"] == again.report["resume"]["judge_shards"]


def test_several_queries_per_judge_forward_give_the_same_mined_rows(small_run, tmp_path, tiny_backbone_dirs):
    """``judge_queries_per_forward=4`` (shards of 3 queries: groups of 3, and of 1 for the last shard) scores the
    same pairs as one query at a time: same negatives, scores equal within rounding, its own judge shards."""
    config, first = small_run
    batched = config_for(
        config.data,
        tmp_path / "out",
        tiny_backbone_dirs,
        judge_queries_per_forward=4,
        cache_dir=str(tmp_path / "cache"),
    )
    again = mine(batched)
    assert again.report["counts"] == first.report["counts"]
    assert again.report["fingerprints"]["judge"] != first.report["fingerprints"]["judge"]
    for a, b in zip(first.dataset, again.dataset):
        assert a["query_id"] == b["query_id"] and a["neg_texts"] == b["neg_texts"]
        assert a["pos_score"] == pytest.approx(b["pos_score"], abs=1e-5)
        np.testing.assert_allclose(a["neg_scores"], b["neg_scores"], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="judge_queries_per_forward must be an int >= 1"):
        config_for(config.data, tmp_path, tiny_backbone_dirs, judge_queries_per_forward=0)


def test_embedding_batches_prepared_in_workers_give_the_same_dataset(small_run, tmp_path, tiny_backbone_dirs):
    """``embed_num_workers=2``: the same embeddings (cache files byte-equal), hence the same mined rows."""
    config, first = small_run
    workers = config_for(
        config.data, tmp_path / "out", tiny_backbone_dirs, embed_num_workers=2, cache_dir=str(tmp_path / "cache")
    )
    again = mine(workers)
    assert again.dataset.data.table.equals(first.dataset.data.table)
    ours = sorted((tmp_path / "cache" / "embeddings").glob("*.npy"))
    theirs = sorted((config.resolved_cache_dir / "embeddings").glob("*.npy"))
    assert ours and [f.name for f in ours] == [f.name for f in theirs]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(ours, theirs))
    with pytest.raises(ValueError, match="embed_num_workers must be an int >= 0"):
        config_for(config.data, tmp_path, tiny_backbone_dirs, embed_num_workers=-1)


def test_empty_pool_raises_by_default_naming_the_query(small_run, tmp_path, tiny_backbone_dirs):
    config, _ = small_run
    strict = config_for(
        config.data, tmp_path, tiny_backbone_dirs, on_empty_pool="error", cache_dir=str(config.resolved_cache_dir)
    )
    with pytest.raises(ValueError, match=r"C-13.*on_empty_pool='skip'"):
        mine(strict)


def test_nan_embeddings_raise_naming_the_record(tmp_path, tiny_backbone_dirs, monkeypatch):
    data = save_source(source_rows()[:6], tmp_path / "source")
    original = UniMEV2Model.encode

    def poisoned(self, items, *args, **kwargs):
        out = original(self, items, *args, **kwargs)
        out[2] = float("nan")
        return out

    monkeypatch.setattr(UniMEV2Model, "encode", poisoned)
    with pytest.raises(ValueError, match=r"NaN.*record A-2 \(query\)"):
        mine(config_for(data, tmp_path / "out", tiny_backbone_dirs))


PATH_FEATURES = Features(
    {
        "qry": Value("string"),
        "qry_image_path": Value("string"),
        "pos_text": Value("string"),
        "pos_image_path": Value("string"),
        "dataset": Value("string"),
    }
)


def path_rows(root: Path) -> list[dict]:
    """MMEB-train style: image paths relative to an image root."""
    (root / "images").mkdir(parents=True)
    rows = []
    for name, rgb in zip(NAMES, COLOURS):
        colour(rgb).save(root / "images" / f"{name}.png")
        rows.append(
            {
                "qry": "<|image_1|>\nRepresent the given image for classification\n",
                "qry_image_path": f"images/{name}.png",
                "pos_text": name,
                "pos_image_path": "",
                "dataset": "A",
            }
        )
    return rows


def path_config(data: str, tmp_path: Path, root: Path, dirs: dict, **overrides) -> MiningConfig:
    return config_for(
        data,
        tmp_path / "out",
        dirs,
        image_root=str(root),
        columns={"query_image": "qry_image_path", "pos_image": "pos_image_path"},
        **overrides,
    )


@pytest.mark.parametrize("embed_num_workers", [0, 2])
def test_missing_image_file_raises_naming_record_and_file(tmp_path, tiny_backbone_dirs, embed_num_workers):
    root = tmp_path / "mmeb"
    rows = path_rows(root)
    rows[4]["qry_image_path"] = "images/lost.png"
    data = save_source(rows, tmp_path / "source", PATH_FEATURES)
    with pytest.raises(FileNotFoundError, match=r"record A-4 \(row 4\).*images/lost.png"):
        mine(path_config(data, tmp_path, root, tiny_backbone_dirs, embed_num_workers=embed_num_workers))


def test_corrupt_image_raises_naming_record_and_file(tmp_path, tiny_backbone_dirs):
    root = tmp_path / "mmeb"
    rows = path_rows(root)
    (root / "images" / "blue.png").write_bytes(b"this is not a png")
    data = save_source(rows, tmp_path / "source", PATH_FEATURES)
    with pytest.raises(ValueError, match=r"record A-2 \(query\).*blue.png"):
        mine(path_config(data, tmp_path, root, tiny_backbone_dirs))


def test_path_images_keep_their_relative_paths(tmp_path, tiny_backbone_dirs):
    root = tmp_path / "mmeb"
    data = save_source(path_rows(root), tmp_path / "source", PATH_FEATURES)
    result = mine(path_config(data, tmp_path, root, tiny_backbone_dirs))
    assert result.dataset["query_image_path"] == [f"images/{n}.png" for n in NAMES]
    records = json.loads((result.output_dir / "mined.json").read_text())
    assert [r["query_image"] for r in records] == [f"images/{n}.png" for n in NAMES]
    assert not (root / "images" / "A").exists()  # the authors' JSON points into the existing image root


def test_tiny_spec_builds_backbones_on_the_fly(tmp_path):
    data = save_source(source_rows()[:6], tmp_path / "source")
    config = MiningConfig(
        data=data,
        embedder="tiny:qwen2_vl",
        judge="tiny:llava_onevision",
        output_dir=str(tmp_path),
        progress=False,
        faiss_gpu=False,
        delta=0.999,
        authors_json=False,
    )
    result = mine(config)
    assert len(result.dataset) == 6
    assert (default_cache_dir() / "tiny_backbones" / "llava_onevision-seed0" / "config.json").exists()
    with pytest.raises(ValueError, match="unknown tiny backbone kind"):
        mine(MiningConfig(data=data, embedder="tiny:gpt2", output_dir=str(tmp_path / "x"), progress=False))


def test_embedder_errors_name_the_record(tmp_path, tiny_backbone_dirs):
    rows = source_rows()[:6]
    rows[3] = {**rows[3], "qry": "<|image_1|>\nRepresent the given image.", "qry_image": None}  # marker, no image
    data = save_source(rows, tmp_path / "source")
    with pytest.raises(ValueError, match=r"record A-3 \(query\).*image marker"):
        mine(config_for(data, tmp_path / "out", tiny_backbone_dirs, marker_without_image="error"))


# ------------------------------------------------------------------------------------------ scale


def many_path_rows(root: Path, n: int) -> list[dict]:
    """``n`` image queries with distinct colours (files under ``root/images``) and distinct text positives."""
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        colour((40 + 9 * i % 200, 200 - 7 * i % 180, 30 + 13 * i % 220)).save(root / "images" / f"item-{i}.png")
        rows.append(
            {
                "qry": "<|image_1|>\nRepresent the given image for classification\n",
                "qry_image_path": f"images/item-{i}.png",
                "pos_text": f"label {i}",
                "pos_image_path": "",
                "dataset": "A",
            }
        )
    return rows


def path_columns(root: Path) -> dict:
    return {"image_root": str(root), "columns": {"query_image": "qry_image_path", "pos_image": "pos_image_path"}}


def test_unreadable_image_at_judge_time_stops_after_safe_shards_and_resume_continues(tmp_path, tiny_backbone_dirs):
    root = tmp_path / "mmeb"
    data = save_source(many_path_rows(root, 24), tmp_path / "source", PATH_FEATURES)
    settings = dict(shard_size=4, **path_columns(root))
    clean = mine(config_for(data, tmp_path / "clean", tiny_backbone_dirs, **settings))
    bad_file = root / "images" / "item-17.png"
    good_bytes = bad_file.read_bytes()

    def corrupt_after_two(shard: int, path: Path) -> None:  # the file breaks while the judge is running
        if shard == 1:
            bad_file.write_bytes(b"truncated")

    config = config_for(data, tmp_path / "broken", tiny_backbone_dirs, **settings)
    with pytest.raises(ValueError, match=r"record A-17 \(query\).*item-17.png"):
        mine(config, on_shard_written=corrupt_after_two)
    shards = sorted((tmp_path / "broken" / "cache" / "judge").glob("*/shard-*.json"))
    assert [p.name for p in shards] == [f"shard-{i:06d}.json" for i in range(4)]  # queries 0..15, all finished
    assert not (tmp_path / "broken" / "dataset").exists()
    saved = {path: path.stat().st_mtime_ns for path in shards}

    bad_file.write_bytes(good_bytes)
    resumed = mine(config)
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in saved.items()), "finished shards were redone"
    assert resumed.report["resume"]["judge_shards_reused"] == 4
    assert resumed.report["resume"]["embedding_chunks_computed"] == 0
    assert resumed.dataset.data.table.equals(clean.dataset.data.table)


def test_reference_storage_keeps_image_files_and_exports_to_the_embedded_dataset(tmp_path, tiny_backbone_dirs):
    root = tmp_path / "mmeb"
    data = save_source(many_path_rows(root, 8), tmp_path / "source", PATH_FEATURES)
    cache = str(tmp_path / "cache")
    embedded = mine(config_for(data, tmp_path / "embedded", tiny_backbone_dirs, cache_dir=cache, **path_columns(root)))
    reference = mine(
        config_for(
            data,
            tmp_path / "reference",
            tiny_backbone_dirs,
            cache_dir=cache,
            image_storage="reference",
            **path_columns(root),
        )
    )
    folder = tmp_path / "reference" / "dataset"
    assert not (folder / "state.json").exists() and sorted(folder.glob("*.parquet"))
    first = next(iter_undecoded_rows(reference.dataset))
    assert first["query_image"] == {"bytes": None, "path": str(root / "images" / "item-0.png")}
    assert first["query_image_path"] == "images/item-0.png"
    stored = next(iter_undecoded_rows(embedded.dataset))["query_image"]
    assert stored["bytes"] == (root / "images" / "item-0.png").read_bytes()  # the default embeds the file
    assert (tmp_path / "reference" / "mined.json").read_text() == (tmp_path / "embedded" / "mined.json").read_text()

    records = TrainingRecords(load_mined_dataset(str(folder)), num_hard_negatives=2, pad_policy="repeat")
    image = records[0]["query"]["image"]
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(Image.open(root / "images" / "item-0.png")))

    reference.dataset.save_to_disk(str(tmp_path / "self_contained"))  # the export: bytes embedded shard by shard
    exported = load_from_disk(str(tmp_path / "self_contained"))
    assert exported.data.table.equals(embedded.dataset.data.table)
