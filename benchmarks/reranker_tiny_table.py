"""The table of docs/reranker.md ("Measured"): embedder precision@1 vs embedder + reranker on its top-10, read from
the ``examples/evaluate.py`` results saved in ``benchmarks/results/reranker_tiny/``.

    python benchmarks/reranker_tiny_table.py
"""

from __future__ import annotations

import json
from pathlib import Path


RESULTS = Path(__file__).resolve().parent / "results" / "reranker_tiny"
KEYS = ("", "/meta/classification", "/meta/retrieval", "/ind", "/ood")


def row(path: Path) -> str:
    results = json.loads(path.read_text())
    metrics, settings = results["suites"]["mmeb"]["metrics"], results["settings"]
    cells = [f"{settings['mini_mmeb_test_per_task']} × 5 = {int(metrics['num_rows'])}", settings["rerank_mode"]]
    for key in KEYS:
        before, after = metrics[f"precision_at_1{key}"], metrics[f"rerank/precision_at_1{key}"]
        cells.append(f"{before:.3f} → {after:.3f}")
    cells.append(str(int(metrics["rerank/fallbacks"])))
    return "| " + " | ".join(cells) + " |"


VARIANTS = {
    "variant_r2_pairwise": "pretrained tiny VLM, paper objective, lr 3e-4, 400 steps",
    "variant_rB_pairwise": "pretrained tiny VLM, + candidate LM, lr 1e-3, 600 steps",
    "variant_judge": "the tiny judge itself, not fine-tuned as a reranker",
    "variant_rA_pairwise": "tiny judge, paper objective + candidate LM, 600 steps",
    "variant_rM_pairwise": "tiny judge, same, on the quickstart's MINED data instead of oracle:mini_mmeb",
    "pairwise_32": "tiny judge, + 3 No pairs per record (reranker_tiny_judge.yaml)",
}
HEADER = "| {} | overall | classification | retrieval | IND | OOD | listwise fallbacks |"


def main() -> None:
    print(HEADER.format("held-out rows | mode"))
    print("|---|---|---|---|---|---|---|---|")
    for name in ("pairwise_32", "listwise_32", "pairwise_96", "listwise_96"):
        print(row(RESULTS / f"{name}.json"))
    print()
    print(HEADER.format("pairwise reranker, 160 rows: started from, trained on"))
    print("|---|---|---|---|---|---|---|")
    for name, label in VARIANTS.items():
        print(row(RESULTS / f"{name}.json").replace("| 32 × 5 = 160 | pairwise |", f"| {label} |", 1))


if __name__ == "__main__":
    main()
