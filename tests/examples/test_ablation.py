"""The ablation's table: means and standard deviations over seeds read from the runs' results, and the commands
each variant runs (docs/quickstart.md)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import ModuleType

import pytest


REPO = Path(__file__).resolve().parents[2]
NAMES = ["InfoNCE, in-batch negatives only", "UniME-V2, oracle scores as the judge (upper bound)"]


def write_results(folder: Path, overall: float, ind: float, ood: float) -> None:
    folder.mkdir(parents=True)
    metrics = {"precision_at_1": overall, "precision_at_1/ind": ind, "precision_at_1/ood": ood}
    (folder / "results.json").write_text(json.dumps({"suites": {"mmeb": {"metrics": metrics}}}))


@pytest.fixture(scope="module")
def ablation(example_script) -> ModuleType:
    """``examples/ablation.py`` as a module."""
    return example_script("ablation")


def test_table_is_the_mean_and_std_over_seeds(ablation: ModuleType, tmp_path: Path) -> None:
    values = {NAMES[0]: [(0.1, 0.2, 0.0), (0.3, 0.4, 0.2)], NAMES[1]: [(0.5, 0.6, 0.4), (0.7, 0.6, 0.8)]}
    slugs = {
        NAMES[0]: "infonce__in_batch_negatives_only",
        NAMES[1]: "unime_v2__oracle_scores_as_the_judge__upper_bound",
    }
    for name, runs in values.items():
        for seed, run in enumerate(runs):
            write_results(tmp_path / f"eval-{slugs[name]}-seed{seed}", *run)
    results = ablation.collect(
        tmp_path, ablation.AblationArguments(output_dir=str(tmp_path), seeds=[0, 1], variants=NAMES)
    )
    for name, runs in values.items():
        overall = [run[0] for run in runs]
        got = results["variants"][name]["overall"]
        assert got["mean"] == pytest.approx(statistics.fmean(overall))
        assert got["std"] == pytest.approx(statistics.stdev(overall))
    table = ablation.results_markdown(results)
    assert "| InfoNCE, in-batch negatives only | 0.200 ± 0.141 | 0.300 ± 0.141 | 0.100 ± 0.141 |" in table


def test_each_variant_changes_only_what_it_names(ablation: ModuleType, tmp_path: Path) -> None:
    quick = tmp_path / "quickstart"
    quick.mkdir()
    (quick / "summary.json").write_text(json.dumps({"settings": {"size": "small", "seed": 0}}))
    args = ablation.AblationArguments(
        quickstart_dir=str(quick), output_dir=str(tmp_path / "out"), seeds=[3], variants=NAMES
    )
    commands = ablation.variant_commands(args, REPO / "examples")
    assert "mine_untrained_judge" not in commands  # no selected variant needs it
    inbatch = commands["train-infonce__in_batch_negatives_only-seed3"]
    assert inbatch[inbatch.index("--num_hard_negatives") + 1] == "0" and "--seed" in inbatch
    oracle = commands["train-unime_v2__oracle_scores_as_the_judge__upper_bound-seed3"]
    assert oracle[oracle.index("--train_data") + 1] == "oracle:mini_mmeb"
    assert oracle[oracle.index("--loss_type") + 1] == "symmetric_kl"
    assert str(quick / "mine" / "dataset") in inbatch
