"""Evaluation results of a model card (``model-index``), read from the ``results.json`` of an evaluation run.

``examples/evaluate.py`` writes ``results.json`` (docs/evaluation.md); every number a card shows under
``model-index`` comes from it, as a percentage with two decimals (the tables of docs/evaluation.md use the same
scale).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult


def _eval(dataset: str, config: str, metric: str, metric_name: str, value: float) -> EvalResult:
    return EvalResult(
        task_type="feature-extraction",
        dataset_type=dataset,
        dataset_name=dataset,
        dataset_config=config,
        metric_type=metric,
        metric_name=metric_name,
        metric_value=round(100 * float(value), 2),
    )


def eval_results(results: Mapping[str, Any], reranked: bool = False) -> list[EvalResult]:
    """One ``EvalResult`` per MMEB dataset (+ overall), retrieval direction and SugarCrepe subset of ``results``.

    The MMEB-style figures name the data the evaluation read (``results["datasets"]["mmeb"]``: ``MMEB`` for
    TIGER-Lab/MMEB-eval, ``mini-MMEB``, a Hub id or a local folder's name), each dataset as its config.

    ``reranked``: the ``rerank/`` figures (the reranker reordering the embedder's top-k), for a reranker's card.
    """
    if "suites" not in results:
        raise ValueError("not an evaluation results.json (no 'suites'): write one with examples/evaluate.py")
    if reranked and not results.get("reranker"):
        raise ValueError("the evaluation ran without a reranker (examples/evaluate.py --reranker): no rerank figures")
    p, tag = ("rerank/", " (reranked top-k)") if reranked else ("", "")
    evals = []
    suites = results["suites"]
    mmeb = results.get("datasets", {}).get("mmeb", "MMEB")  # the data evaluate.py read (older results: MMEB)
    if "mmeb" in suites and suites["mmeb"]["per_dataset"]:
        for name, d in suites["mmeb"]["per_dataset"].items():
            evals.append(_eval(mmeb, name, "precision_at_1", "Precision@1" + tag, d[p + "precision_at_1"]))
        overall = suites["mmeb"]["metrics"][p + "precision_at_1"]
        evals.append(_eval(mmeb, "overall", "precision_at_1", "Precision@1" + tag, overall))
    for name, d in suites.get("retrieval", {}).get("per_dataset", {}).items():
        for x, title in (("i2t", "image-to-text"), ("t2i", "text-to-image")):
            evals.append(_eval(name, title, f"recall_at_1_{x}", f"R@1 {title}{tag}", d[f"{p}{x}_R@1"]))
    for name, d in suites.get("sugarcrepe", {}).get("per_dataset", {}).items():
        evals.append(_eval("SugarCrepe", name, "accuracy", "Accuracy" + tag, d[p + "accuracy"]))
    return evals


def load_eval_results(path: str | Path, reranked: bool = False) -> list[EvalResult]:
    """The ``EvalResult`` list of an evaluation folder or its ``results.json`` (``reranked``: see
    :func:`eval_results`); a clear error for anything else."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no evaluation results.json (examples/evaluate.py writes it)")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    try:
        return eval_results(results, reranked)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not an evaluation results.json ({error!r})") from error
