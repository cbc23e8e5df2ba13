"""Evaluation that cannot report success on nothing: no dataset scored, missing fields, swapped models, names."""

from __future__ import annotations

import json

import pytest

from unime_v2.hub_cards.eval_results import eval_results
from unime_v2.trainers.evaluation.readers import mmeb_dataset
from unime_v2.trainers.evaluation.run import (
    EvaluationArguments,
    NothingEvaluatedError,
    check_model_roles,
    check_scored,
    evaluated_datasets,
    run_evaluation,
)


def test_a_missing_field_is_named_with_the_expected_ones():
    with pytest.raises(
        ValueError, match=r"mine row 0 query: no field 'qry_text' / 'qry' / .*\(got query_text, tgt_text\)"
    ):
        mmeb_dataset("mine", [{"query_text": "a dog", "tgt_text": ["dog", "cat"]}])
    with pytest.raises(ValueError, match=r"mine row 0 candidates: no field 'tgt_text' \(got qry_text, targets\)"):
        mmeb_dataset("mine", [{"qry_text": "a dog", "targets": ["dog"]}])


def test_no_scored_dataset_is_an_error_listing_the_failures():
    suites = {"mmeb": {"per_dataset": {}, "errors": {"mine": "ValueError: row 0 query: no field"}}}
    with pytest.raises(NothingEvaluatedError, match="(?s)no dataset was scored.*mmeb/mine: ValueError: row 0"):
        check_scored(suites)
    check_scored({"mmeb": {"per_dataset": {"a": {}}, "errors": {"b": "x"}}})


def test_run_evaluation_fails_when_every_dataset_fails(tmp_path):
    data = tmp_path / "private"
    data.mkdir()
    (data / "mine.jsonl").write_text(json.dumps({"query_text": "a dog", "tgt_text": ["dog"]}) + "\n")
    args = EvaluationArguments(model="x", suite="mmeb", mmeb_eval=str(data), output_dir=str(tmp_path / "out"))
    with pytest.raises(NothingEvaluatedError, match="(?s)mmeb/mine: ValueError: mine row 0 query: no field"):
        run_evaluation(args, model=object())
    assert not (tmp_path / "out" / "results.json").exists()


def _folder(path, model_type):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": model_type}))
    return str(path)


def test_swapped_model_and_reranker_are_named(tmp_path):
    reranker, embedder = _folder(tmp_path / "rr", "unime_v2_reranker"), _folder(tmp_path / "emb", "unime_v2")
    with pytest.raises(ValueError, match=f"--model {reranker} is a UniME-V2 reranker.*pass it as --reranker"):
        check_model_roles(reranker, None)
    with pytest.raises(ValueError, match=f"--reranker {embedder} is a UniME-V2 embedder.*pass it as --model"):
        check_model_roles(embedder, embedder)
    check_model_roles(embedder, reranker)
    with pytest.raises(ValueError, match=f"--judge {embedder} is a UniME-V2 embedder.*pass it as --embedder"):
        check_model_roles(None, embedder, "--embedder", "--judge")


def test_the_card_names_the_dataset_evaluated(tmp_path):
    private = tmp_path / "my_eval_set"
    private.mkdir()
    args = EvaluationArguments(model="m", suite="mmeb", mmeb_eval=str(private), output_dir="o")
    assert evaluated_datasets(args) == {"mmeb": "my_eval_set"}
    hub = EvaluationArguments(model="m", mmeb_eval="TIGER-Lab/MMEB-eval", output_dir="o")
    assert evaluated_datasets(hub) == {"mmeb": "MMEB"}
    assert evaluated_datasets(EvaluationArguments(model="m", data="mini_mmeb", output_dir="o"))["mmeb"] == "mini-MMEB"
    metrics = {"precision_at_1": 0.5}
    results = {
        "datasets": {"mmeb": "my_eval_set"},
        "suites": {"mmeb": {"per_dataset": {"mine": metrics}, "metrics": metrics}},
    }
    evals = eval_results(results)
    assert {(e.dataset_name, e.dataset_type, e.dataset_config) for e in evals} == {
        ("my_eval_set", "my_eval_set", "mine"),
        ("my_eval_set", "my_eval_set", "overall"),
    }
