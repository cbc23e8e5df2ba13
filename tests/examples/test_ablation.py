"""The ablation's table: means and standard deviations over seeds read from the runs' results, and the commands
each variant runs (docs/quickstart.md)."""

from __future__ import annotations

import json
import statistics
import sys
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


def test_curve_trains_soft_labels_per_level_and_one_hard_control(ablation: ModuleType, tmp_path: Path) -> None:
    quick = tmp_path / "quickstart"
    quick.mkdir()
    (quick / "summary.json").write_text(json.dumps({"settings": {"size": "small", "seed": 0}}))
    out = tmp_path / "out"
    args = ablation.AblationArguments(quickstart_dir=str(quick), output_dir=str(out), seeds=[0, 1], curve=True,
                                      curve_aucs=[0.7, 1.0], curve_steps=5)  # fmt: skip
    commands = ablation.curve_commands(args, REPO / "examples")
    assert commands.pop("curve_data") is None  # the corrupted score sets, in-process
    trainings = {name: c for name, c in commands.items() if name.startswith("train-")}
    runs = ("soft-auc0_70", "soft-auc1_00", "soft-judge", "hard")
    assert sorted(trainings) == sorted(f"train-curve-{run}-seed{s}" for run in runs for s in (0, 1))
    soft, hard = trainings["train-curve-soft-auc0_70-seed1"], trainings["train-curve-hard-seed1"]
    assert soft[soft.index("--train_data") + 1] == str(out / "curve_data" / "auc0_70")
    assert soft[soft.index("--loss_type") + 1] == "symmetric_kl"
    assert hard[hard.index("--train_data") + 1] == str(quick / "mine" / "dataset")  # the same candidates
    assert hard[hard.index("--loss_type") + 1] == "hard_labels"
    judge = trainings["train-curve-soft-judge-seed1"]  # UniME-V2 as the quickstart trains it, on its judge's scores
    assert judge[judge.index("--train_data") + 1] == str(quick / "mine" / "dataset")
    assert judge[judge.index("--loss_type") + 1] == "symmetric_kl"
    assert {c[c.index("--max_steps") + 1] for c in trainings.values()} == {"5"}
    assert ablation.curve_steps(ablation.AblationArguments(), "default") == ablation.CURVE_STEPS["default"]
    # the curve's settings fingerprint a curve folder only: a folder of the variants stays resumable
    assert "curve_aucs" in ablation.ablation_settings(args)
    assert "curve_aucs" not in ablation.ablation_settings(ablation.AblationArguments(quickstart_dir=str(quick)))


def test_curve_table_and_plot_read_every_run(ablation: ModuleType, tmp_path: Path) -> None:
    quick = tmp_path / "quickstart"
    quick.mkdir()
    (quick / "summary.json").write_text(json.dumps({"settings": {"size": "small", "seed": 0}}))
    args = ablation.AblationArguments(quickstart_dir=str(quick), output_dir=str(tmp_path), seeds=[0, 1], curve=True,
                                      curve_aucs=[0.8, 1.0])  # fmt: skip
    targets = {"positive_mass": 0.5, "entropy": 0.4, "uniform_entropy": 2.197, "hard_like": 0.3, "score_gap_in_tau": 1}
    levels = {level: {"target_auc": auc, "auc": auc + 0.001, "noise_weight": 0.5, "seed": 0, "targets": targets}
              for level, auc in (("auc0_80", 0.8), ("auc1_00", 1.0))}  # fmt: skip
    (tmp_path / "curve_data").mkdir()
    calibration = {"levels": levels, "quickstart_judge": {"auc": 0.55, "targets": targets}}
    (tmp_path / "curve_data" / "calibration.json").write_text(json.dumps(calibration))
    runs = (("curve-soft-auc0_80", 0.1), ("curve-soft-auc1_00", 0.3), ("curve-soft-judge", 0.28), ("curve-hard", 0.2))
    for run, value in runs:
        for seed in (0, 1):
            write_results(tmp_path / f"eval-{run}-seed{seed}", value + seed / 10, value, value)
    results = ablation.collect_curve(tmp_path, args)
    assert results["soft"]["auc0_80"]["auc"] == pytest.approx(0.801)
    assert results["soft"]["auc1_00"]["overall"]["mean"] == pytest.approx(0.35)
    assert results["hard"]["overall"]["std"] == pytest.approx(statistics.stdev([0.2, 0.3]))
    table = ablation.curve_markdown(results)
    assert "| soft labels (symmetric_kl), judge AUC 0.80 | 0.8010 | 0.150 ± 0.071 |" in table
    assert "hard labels, own 1 + k candidates (control)" in table
    assert "| soft labels (symmetric_kl), the quickstart's judge (UniME-V2) | 0.5500 | 0.330 ± 0.071 |" in table
    assert "mean minus one std (0.259) against the control's mean (0.250): above (+0.009)" in table
    ablation.plot_curve(results, tmp_path / "judge_curve.png")
    assert (tmp_path / "judge_curve.png").stat().st_size > 0


def test_runs_side_by_side_each_after_what_it_reads(ablation: ModuleType, tmp_path: Path) -> None:
    def step(reads: str | None, writes: str) -> list[str]:
        check = f"assert (p / {reads!r}).is_file(), {reads!r}; " if reads else ""
        code = f"import pathlib, time; p = pathlib.Path({str(tmp_path)!r}); {check}time.sleep(0.2); "
        return [sys.executable, "-c", code + f"(p / {writes!r}).touch()"]

    commands = {"curve_data": None}
    for run in ("a", "b", "c"):
        commands |= {
            f"train-{run}": step("scores", f"model-{run}"),
            f"eval-{run}": step(f"model-{run}", f"eval-{run}"),
        }
    assert ablation.stage_graph(list(commands)) == {
        "curve_data": (),
        **{f"train-{run}": ("curve_data",) for run in "abc"},
        **{f"eval-{run}": (f"train-{run}",) for run in "abc"},
    }
    out = tmp_path / "out"
    ablation.run_all(commands, out, 2, lambda: (tmp_path / "scores").touch())
    assert all((tmp_path / f"eval-{run}").is_file() for run in "abc")  # each step asserted what it reads was there
    assert sorted(p.parent.name for p in out.glob("*/.done")) == sorted(commands)  # resumable: every stage marked
