"""The table of docs/reranker.md ("Measured"): embedder precision@1 vs embedder + reranker on its top-10, read from
the ``examples/evaluate.py`` results saved in ``benchmarks/results/reranker_tiny/``.

    python benchmarks/reranker_tiny_table.py
"""

from __future__ import annotations

import json
from pathlib import Path


RESULTS = Path(__file__).resolve().parent / "results" / "reranker_tiny"
KEYS = ("", "/meta/classification", "/meta/retrieval", "/ind", "/ood")


def row(path: Path, label: str | None = None) -> str:
    results = json.loads(path.read_text())
    metrics, settings = results["suites"]["mmeb"]["metrics"], results["settings"]
    rows = f"{settings['mini_mmeb_test_per_task']} × 5 = {int(metrics['num_rows'])}"
    cells = [label, rows] if label else [rows]
    cells.append(settings["rerank_mode"])
    for key in KEYS:
        before, after = metrics[f"precision_at_1{key}"], metrics[f"rerank/precision_at_1{key}"]
        cells.append(f"{before:.3f} → {after:.3f}")
    cells.append(str(int(metrics["rerank/fallbacks"])))
    return "| " + " | ".join(cells) + " |"


RECIPE = {
    "recipe_pairwise_96": "reranker/tiny_from_judge.yaml: 2000 steps, cosine",
    "recipe_listwise_96": "reranker/tiny_from_judge.yaml: 2000 steps, cosine",
    "steps600_pairwise_96": "same, 600 steps, constant rate",
    "steps600_listwise_96": "same, 600 steps, constant rate",
}
VARIANTS = {
    "variant_r2_pairwise": "pretrained tiny VLM, paper objective, lr 3e-4, 400 steps",
    "variant_rB_pairwise": "pretrained tiny VLM, + candidate LM, lr 1e-3, 600 steps",
    "variant_judge": "the tiny judge itself, not fine-tuned as a reranker",
    "variant_rA_pairwise": "tiny judge, paper objective + candidate LM, 600 steps",
    "variant_rM_pairwise": "tiny judge, same, on the quickstart's MINED data instead of oracle:mini_mmeb",
    "variant_steps600_pairwise": "tiny judge, + 3 No pairs per record, 600 steps",
    "variant_recipe_pairwise": "tiny judge, + 3 No pairs per record, 2000 steps, cosine (the recipe)",
}
HEADER = "| reranker | held-out rows | mode | overall | classification | retrieval | IND | OOD | listwise fallbacks |"


def main() -> None:
    for table in (RECIPE, VARIANTS):
        print(HEADER)
        print("|---" * 9 + "|")
        for name, label in table.items():
            print(row(RESULTS / f"{name}.json", label))
        print()


if __name__ == "__main__":
    main()
