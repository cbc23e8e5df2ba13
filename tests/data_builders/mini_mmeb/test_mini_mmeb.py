"""Tests of the Mini-MMEB generator: determinism, candidate lists, hard distractors, oracle, formats, errors."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from datasets import Image, List, load_from_disk
from PIL import Image as PILImage

from unime_v2.data_builders.mini_mmeb import (
    TASK_NAMES,
    MiniMMEBConfig,
    build_mini_mmeb,
    eval_candidates,
    export_mmeb_files,
    load_mmeb_files,
    make_vocab,
    oracle_score,
)
from unime_v2.data_builders.mini_mmeb.companion import is_true
from unime_v2.data_builders.mini_mmeb.scenes import ATTRIBUTES, match_score, project, spec_key


SMALL = dict(
    train_pairs=200,
    eval_queries=4,
    num_candidates=30,
    caption_images=12,
    long_caption_images=12,
    compositional_per_subset=3,
)
META_TASKS = {"classification", "vqa", "retrieval", "grounding"}
HARD_KINDS = {"replace_attribute", "swap_attributes", "add_object", "remove_object", "other_object", "reference_image"}


@pytest.fixture(scope="module")
def small():
    """One small build shared by most tests (about a second)."""
    return build_mini_mmeb(MiniMMEBConfig(seed=0, **SMALL))


def _raw(ds) -> list[dict]:
    """Rows with undecoded images (``{"bytes", "path"}``), cheap to compare."""
    return ds.with_format("arrow")[:].to_pylist()


def _digest(built) -> str:
    """Hash of every split of every DatasetDict: texts, scene JSON and image bytes."""
    h = hashlib.sha256()
    for name in sorted(built):
        for split in sorted(built[name]):
            h.update(pickle.dumps(_raw(built[name][split])))
    return h.hexdigest()


def _facts(obj: dict) -> dict:
    return project(obj, ATTRIBUTES)


# ----------------------------------------------------------------------------------------------- determinism


@pytest.mark.slow
def test_same_seed_is_identical_across_processes(small):
    """Same seed -> byte-equal datasets, also in a fresh interpreter with another hash seed."""
    code = (
        "from unime_v2.data_builders.mini_mmeb import MiniMMEBConfig, build_mini_mmeb\n"
        "import hashlib, pickle\n"
        f"b = build_mini_mmeb(MiniMMEBConfig(seed=0, **{SMALL!r}))\n"
        "h = hashlib.sha256()\n"
        "for n in sorted(b):\n"
        "    for s in sorted(b[n]):\n"
        "        h.update(pickle.dumps(b[n][s].with_format('arrow')[:].to_pylist()))\n"
        "print(h.hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _digest(small)


def test_different_seed_differs(small):
    other = build_mini_mmeb(MiniMMEBConfig(seed=1, **SMALL))
    assert _digest(other) != _digest(small)
    assert other["mmeb"]["train"]["qry_scene"] != small["mmeb"]["train"]["qry_scene"]
    a = [r["pos_image"]["bytes"] for r in _raw(small["mmeb"]["train"]) if r["pos_image"]]
    b = [r["pos_image"]["bytes"] for r in _raw(other["mmeb"]["train"]) if r["pos_image"]]
    assert a != b


# ----------------------------------------------------------------------------------------------- schema


def test_columns_features_and_texts(small):
    train, test = small["mmeb"]["train"], small["mmeb"]["test"]
    assert train.column_names == [
        "qry",
        "qry_image",
        "pos_text",
        "pos_image",
        "dataset",
        "meta_task",
        "qry_scene",
        "pos_scene",
    ]
    assert {
        "qry_text",
        "qry_image",
        "tgt_text",
        "tgt_image",
        "dataset",
        "meta_task",
        "ood",
        "tgt_kind",
        "qry_scene",
        "tgt_scene",
    } <= set(test.column_names)
    assert isinstance(train.features["qry_image"], Image) and isinstance(train.features["pos_image"], Image)
    assert isinstance(test.features["tgt_image"], List) and isinstance(test.features["tgt_image"].feature, Image)
    assert set(train["meta_task"]) | set(test["meta_task"]) == META_TASKS
    assert len(train) == SMALL["train_pairs"]
    for row in _raw(train):
        assert row["qry"].startswith("<|image_1|>\n") == (row["qry_image"] is not None)
        assert row["pos_text"].startswith("<|image_1|>\n") == (row["pos_image"] is not None)
        assert len(row["qry"].split()) < 40 and len(row["pos_text"].split()) < 40
        json.loads(row["qry_scene"]), json.loads(row["pos_scene"])
    for row in _raw(test):
        assert row["qry_text"].startswith("<|image_1|>\n") == (row["qry_image"] is not None)
        assert len(row["tgt_text"]) == len(row["tgt_image"]) == len(row["tgt_kind"]) == len(row["tgt_scene"])
        for text, image in zip(row["tgt_text"], row["tgt_image"]):
            assert text.startswith("<|image_1|>\n") == (image is not None)
            assert len(text.split()) < 40
    per_meta = Counter(r["meta_task"] for r in _raw(train.select_columns(["dataset", "meta_task"])))
    assert all(per_meta[m] > 0 for m in META_TASKS)


def test_at_least_two_tasks_per_meta_task_and_ood_flags(small):
    test = small["mmeb"]["test"].select_columns(["dataset", "meta_task", "ood"])
    tasks = {(r["dataset"], r["meta_task"], r["ood"]) for r in test}
    assert {t[0] for t in tasks} == set(TASK_NAMES)
    for meta in META_TASKS:
        assert sum(1 for t in tasks if t[1] == meta and not t[2]) >= 2
        assert any(t[1] == meta and t[2] for t in tasks)
    train_names = set(small["mmeb"]["train"]["dataset"])
    assert train_names == {t[0] for t in tasks if not t[2]}
    assert Counter(r["dataset"] for r in test) == {n: SMALL["eval_queries"] for n in TASK_NAMES}


def test_heldout_combos_never_in_train_but_in_ood_queries(small):
    held = {tuple(p) for p in make_vocab(MiniMMEBConfig(seed=0, **SMALL)).heldout}
    assert held
    for row in _raw(small["mmeb"]["train"].select_columns(["qry_scene", "pos_scene"])):
        q, p = json.loads(row["qry_scene"]), json.loads(row["pos_scene"])
        objs = (q["scene"] or {"objects": []})["objects"] + q["target"]["objects"] + p["spec"]["objects"]
        assert not {(o["color"], o["shape"]) for o in objs if "color" in o and "shape" in o} & held
    for row in _raw(small["mmeb"]["test"].select_columns(["ood", "qry_scene"])):
        if row["ood"]:
            target = json.loads(row["qry_scene"])["target"]["objects"]
            assert {(o["color"], o["shape"]) for o in target} & held


def test_eval_queries_never_repeat_training_queries():
    """A single-object task has a small scene space; without the exclusion ~40 % of eval queries were in train."""
    built = build_mini_mmeb(
        MiniMMEBConfig(
            tasks=["MiniImageNet-cls", "MiniCOCO-t2i"],
            train_pairs=4000,
            eval_queries=150,
            num_candidates=10,
            caption_images=1,
            long_caption_images=1,
            compositional_per_subset=1,
        )
    )

    def key(name: str, text: str, scene_json: str) -> tuple:
        scene = json.loads(scene_json)["scene"]
        return name, text, spec_key(scene) if scene else ""

    train = {
        key(r["dataset"], r["qry"], r["qry_scene"])
        for r in _raw(built["mmeb"]["train"].select_columns(["dataset", "qry", "qry_scene"]))
    }
    test = [
        key(r["dataset"], r["qry_text"], r["qry_scene"])
        for r in _raw(built["mmeb"]["test"].select_columns(["dataset", "qry_text", "qry_scene"]))
    ]
    assert len(test) == 300 and not set(test) & train


# ----------------------------------------------------------------------------------------------- candidate lists


def test_ground_truth_first_once_and_no_duplicates(small):
    for row in _raw(small["mmeb"]["test"]):
        kinds = row["tgt_kind"]
        assert kinds[0] == "gt" and kinds.count("gt") == 1
        assert len(kinds) == SMALL["num_candidates"]
        items = [(t, i["bytes"] if i else None) for t, i in zip(row["tgt_text"], row["tgt_image"])]
        assert len(set(items)) == len(items), row["dataset"]
        assert any(k in HARD_KINDS for k in kinds), row["dataset"]


def _check_edit(gt: dict, cand: dict, edit: dict, crop: bool) -> None:
    """The candidate differs from the ground truth exactly as its edit record says."""
    g, c = [_facts(o) for o in gt["objects"]], [_facts(o) for o in cand["objects"]]
    assert gt.get("background") == cand.get("background")
    kind = edit["type"]
    if kind == "replace_attribute":
        k, attr = (0 if crop else edit["object"]), edit["attribute"]
        assert len(g) == len(c) and g[k][attr] == edit["from"] != edit["to"] == c[k][attr]
        assert {a: v for a, v in g[k].items() if a != attr} == {a: v for a, v in c[k].items() if a != attr}
        assert [o for n, o in enumerate(g) if n != k] == [o for n, o in enumerate(c) if n != k]
    elif kind == "swap_attributes":
        (i, j), attr = edit["objects"], edit["attribute"]
        assert g[i][attr] != g[j][attr] and c[i][attr] == g[j][attr] and c[j][attr] == g[i][attr]
        for n in range(len(g)):
            assert {a: v for a, v in g[n].items() if a != attr} == {a: v for a, v in c[n].items() if a != attr}
        assert [o for n, o in enumerate(g) if n not in (i, j)] == [o for n, o in enumerate(c) if n not in (i, j)]
    elif kind == "add_object":
        assert len(c) == len(g) + 1 and c[:-1] == g and edit["object"] == len(g)
    elif kind == "remove_object":
        assert c == g[: edit["object"]] + g[edit["object"] + 1 :]
    else:
        raise AssertionError(f"unexpected edit {kind}")


def test_hard_distractors_differ_exactly_as_claimed(small):
    checked = Counter()
    for row in _raw(small["mmeb"]["test"].select_columns(["dataset", "qry_scene", "tgt_kind", "tgt_scene"])):
        query = json.loads(row["qry_scene"])
        scenes = [json.loads(s) for s in row["tgt_scene"]]
        gt = scenes[0]
        for kind, cand in zip(row["tgt_kind"][1:], scenes[1:]):
            edit = cand.get("edit")
            if kind == "random":
                assert edit is None
                continue
            assert edit is not None and edit["type"] == kind
            if kind == "reference_image":
                assert [_facts(o) for o in cand["spec"]["objects"]] == [_facts(o) for o in query["scene"]["objects"]]
            elif kind == "other_object":
                source = query["scene"]["objects"][edit["object"]]
                assert [project(o, ("size", "color", "shape")) for o in cand["spec"]["objects"]] == [
                    project(source, ("size", "color", "shape"))
                ]
            else:
                _check_edit(gt["spec"], cand["spec"], edit, crop=gt["modality"] == "crop")
            checked[kind] += 1
    assert {"replace_attribute", "swap_attributes", "add_object"} <= set(checked)


# ----------------------------------------------------------------------------------------------- oracle


def test_oracle_ranks_the_positive_strictly_first(small):
    for row in _raw(
        small["mmeb"]["test"].select_columns(
            ["dataset", "qry_scene", "tgt_text", "tgt_image", "tgt_kind", "tgt_scene"]
        )
    ):
        scores = [oracle_score(row, cand) for cand in eval_candidates(row)]
        assert scores[0] == 1.0, row["dataset"]
        assert max(scores[1:]) < 1.0 and all(0.0 <= s <= 1.0 for s in scores)
        hard = [s for s, k in zip(scores, row["tgt_kind"]) if k in HARD_KINDS]
        assert max(hard) > 0.0


def test_oracle_scores_any_pair_of_train_records(small):
    rows = _raw(small["mmeb"]["train"].select_columns(["dataset", "qry_scene", "pos_scene"]))
    by_task: dict[str, list[dict]] = {}
    for row in rows:
        by_task.setdefault(row["dataset"], []).append(row)
    for name, group in by_task.items():
        for q in group[:5]:
            assert oracle_score(q, q) == 1.0
            scores = [oracle_score(q, c) for c in group]
            assert all(0.0 <= s <= 1.0 for s in scores) and len(set(scores)) > 1, name
    assert oracle_score(rows[0], {"scene": rows[0]["pos_scene"]}) == 1.0
    assert oracle_score(rows[0]["qry_scene"], rows[0]["pos_scene"]) == 1.0


def test_match_score_penalises_added_objects():
    target = {"objects": [{"color": "red", "shape": "circle"}]}
    assert match_score(target, {"objects": [{"color": "red", "shape": "circle"}]}) == 1.0
    assert (
        match_score(target, {"objects": [{"color": "red", "shape": "circle"}, {"color": "blue", "shape": "star"}]})
        == 0.5
    )
    assert match_score(target, {"objects": [{"color": "blue", "shape": "circle"}]}) == 0.5


# ----------------------------------------------------------------------------------------------- companions


def test_companion_sets(small):
    cap = _raw(small["caption_retrieval"]["test"])
    assert len(cap) == SMALL["caption_images"]
    assert all(len(r["captions"]) == 5 and len(set(r["captions"])) == 5 for r in cap)
    all_caps = [c for r in cap for c in r["captions"]]
    assert len(set(all_caps)) == len(all_caps)
    long = _raw(small["long_caption"]["test"])
    assert len(long) == SMALL["long_caption_images"]
    assert all(len(r["caption"].split()) < 40 for r in long)
    comp = _raw(small["compositional"]["test"])
    subsets = Counter(r["subset"] for r in comp)
    assert subsets == {
        s: SMALL["compositional_per_subset"]
        for s in ("replace-obj", "replace-att", "replace-rel", "swap-obj", "swap-att", "add-obj", "add-att")
    }
    for r in comp:
        scene = json.loads(r["scene"])
        assert is_true(json.loads(r["pos_scene"]), scene) and not is_true(json.loads(r["neg_scene"]), scene)
        assert r["pos_caption"] != r["neg_caption"]


# ----------------------------------------------------------------------------------------------- files


def test_export_round_trip(small, tmp_path):
    files = export_mmeb_files(small["mmeb"], str(tmp_path))
    assert len(files["train"]) == len(set(small["mmeb"]["train"]["dataset"]))
    assert len(files["test"]) == len(TASK_NAMES)
    train = load_mmeb_files(str(tmp_path), "train")
    rows = [r for name in sorted(train) for r in train[name]]
    assert set(rows[0]) == {"qry", "qry_image_path", "pos_text", "pos_image_path"}

    def pixels(path: str):
        return None if path == "" else np.asarray(PILImage.open(tmp_path / path).convert("RGB"))

    def same(path: str, image) -> bool:
        return (path == "" and image is None) or np.array_equal(pixels(path), np.asarray(image.convert("RGB")))

    def grouped(ds) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for row in ds:
            out.setdefault(row["dataset"], []).append(row)
        return out

    train_orig = grouped(small["mmeb"]["train"])
    for name, recs in train.items():
        assert len(recs) == len(train_orig[name])
        for rec, orig in zip(recs, train_orig[name]):
            assert (rec["qry"], rec["pos_text"]) == (orig["qry"], orig["pos_text"])
            assert same(rec["qry_image_path"], orig["qry_image"]) and same(rec["pos_image_path"], orig["pos_image"])
    evals = load_mmeb_files(str(tmp_path), "eval")
    assert set(next(iter(evals.values()))[0]) == {"qry_text", "qry_img_path", "tgt_text", "tgt_img_path"}
    test_orig = grouped(small["mmeb"]["test"])
    for name, recs in evals.items():
        assert len(recs) == len(test_orig[name])
        for rec, orig in zip(recs, test_orig[name]):
            assert rec["qry_text"] == orig["qry_text"] and rec["tgt_text"] == orig["tgt_text"]
            assert same(rec["qry_img_path"], orig["qry_image"])
            assert all(same(p, i) for p, i in zip(rec["tgt_img_path"], orig["tgt_image"]))
            assert not any(os.path.isabs(p) for p in rec["tgt_img_path"])


def test_save_to_disk_round_trip(small, tmp_path):
    small["mmeb"].save_to_disk(str(tmp_path / "mmeb"))
    loaded = load_from_disk(str(tmp_path / "mmeb"))
    assert loaded["test"].features == small["mmeb"]["test"].features
    assert _raw(loaded["train"]) == _raw(small["mmeb"]["train"])


def test_image_size_is_respected():
    built = build_mini_mmeb(
        MiniMMEBConfig(
            image_size=112,
            train_pairs=10,
            eval_queries=1,
            num_candidates=5,
            tasks=["MiniRefCOCO-grd"],
            caption_images=1,
            long_caption_images=1,
            compositional_per_subset=1,
        )
    )
    row = built["mmeb"]["train"][0]
    assert row["qry_image"].size == (112, 112) and row["pos_image"].size == (56, 56)


def test_zero_sizes_build_empty_sets():
    """train_pairs=0 and empty companion sets are allowed (callers that only need eval rows use them)."""
    built = build_mini_mmeb(
        MiniMMEBConfig(
            train_pairs=0,
            eval_queries=2,
            num_candidates=6,
            caption_images=0,
            long_caption_images=0,
            compositional_per_subset=0,
        )
    )
    assert len(built["mmeb"]["train"]) == 0 and len(built["mmeb"]["test"]) == 2 * len(TASK_NAMES)
    assert all(len(built[n]["test"]) == 0 for n in ("caption_retrieval", "long_caption", "compositional"))


@pytest.mark.slow
def test_cli_smoke(tmp_path):
    script = Path(__file__).resolve().parents[3] / "examples" / "make_mini_mmeb.py"
    args = [
        "--output_dir",
        str(tmp_path),
        "--seed",
        "3",
        "--train_pairs",
        "30",
        "--eval_queries",
        "2",
        "--num_candidates",
        "8",
    ]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MiniCIRR-cir" in done.stdout and "generate" in done.stdout
    assert load_from_disk(str(tmp_path / "hf" / "mmeb"))["test"].num_rows == 2 * len(TASK_NAMES)
    assert (tmp_path / "mmeb" / "eval" / "MiniCIRR-cir.jsonl").exists()
    assert (tmp_path / "mmeb" / "companion" / "compositional.jsonl").exists()
    bad = subprocess.run(
        [sys.executable, str(script), "--output_dir", str(tmp_path), "--image_size", "20"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "image_size" in bad.stderr


# ----------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "field,value",
    [
        ("image_size", 32),
        ("image_size", 128),
        ("image_size", "64"),
        ("train_pairs", -1),
        ("eval_queries", 0),
        ("num_candidates", 1),
        ("colors", ["red", "mauve", "blue"]),
        ("colors", ["red", "blue"]),
        ("shapes", ["circle", "circle", "star"]),
        ("sizes", ["huge", "small"]),
        ("backgrounds", "white"),
        ("holdout_fraction", 0.0),
        ("holdout_fraction", 0.9),
        ("tasks", ["NoSuchTask"]),
        ("seed", -3),
        ("compositional_per_subset", -1),
    ],
)
def test_bad_config_raises_value_error_naming_field(field, value):
    with pytest.raises(ValueError) as err:
        MiniMMEBConfig(**{field: value})
    message = str(err.value)
    assert field in message
    shown = (
        value
        if not isinstance(value, list)
        else next((v for v in value if v in ("mauve", "huge", "NoSuchTask")), value)
    )
    assert repr(shown) in message or str(shown) in message


# ----------------------------------------------------------------------------------------------- default size


@pytest.mark.slow
def test_default_config_counts():
    """The default build: 20k train pairs over 9 IND tasks, 150 queries x 100 candidates for all 13 tasks."""
    built = build_mini_mmeb(MiniMMEBConfig())
    train, test = built["mmeb"]["train"], built["mmeb"]["test"]
    assert len(train) == 20_000
    per_task = Counter(train["dataset"])
    assert len(per_task) == 9 and min(per_task.values()) >= 2000
    counts = Counter(test["dataset"])
    assert set(counts) == set(TASK_NAMES) and all(100 <= c <= 200 for c in counts.values())
    assert all(len(kinds) == 100 for kinds in test["tgt_kind"])
    assert len(built["caption_retrieval"]["test"]) == 200 and len(built["compositional"]["test"]) == 700
