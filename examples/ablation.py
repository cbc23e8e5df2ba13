"""The paper's Table 4 and Table 6 in miniature, on a finished quickstart (docs/quickstart.md).

    python examples/quickstart.py --output_dir runs/quickstart
    python examples/ablation.py --quickstart_dir runs/quickstart --output_dir runs/ablation --seeds 0 1 2

Variants: InfoNCE with in-batch negatives only; + judge-mined hard negatives with hard labels; the same hard labels
on each query's own 1 + k candidates only (UniME-V2's candidate set); + the judge's soft scores (UniME-V2);
k in {4, 6, 8, 10}; Jensen-Shannon and the authors' loss arithmetic; the judge's quality (the untrained VLM as
judge, the fine-tuned judge, mini-MMEB's oracle as judge: an upper bound). Writes results.json, RESULTS.md (mean ±
std over seeds) and ablation.png; resumable like the quickstart.

    python examples/ablation.py --quickstart_dir runs/quickstart --output_dir runs/judge_curve --curve true

``--curve true`` runs the judge-quality curve instead (issue 22, "How good must a judge be?"): every candidate of the
quickstart's mined data re-scored by mini-MMEB's oracle, the scores corrupted by seeded noise to a pooled AUC of
each of ``--curve_aucs`` (``trainers/evaluation/judge_curve.py``: calibrated, measured), UniME-V2 (soft labels,
``symmetric_kl``) trained on each level and on the quickstart's own judge's scores (UniME-V2 as the quickstart trains
it), and the hard-label control (``hard_labels``, the same candidates), for every seed, ``--curve_steps`` steps each.
Writes results.json (every figure, the measured AUCs included), RESULTS.md and judge_curve.png (precision@1 against
judge AUC, the control as a band).

A folder holding another ablation (other quickstart, seeds, variants or curve) or another kind of artifact is refused
unless ``--overwrite true`` (docs/training.md, "One run per output folder").

Every variant trains an embedder from the shipped pretrained tiny VLM with the quickstart's UniME-V2 recipe and the
same steps, changing one thing (the objective, k, the loss arithmetic, the judge that scored the data), for several
seeds, and is evaluated on the quickstart's held-out mini-MMEB rows. Each run is a stage of the quickstart's
``run_stage`` (``examples/quickstart.py``, resumable), two side by side by default (``--lanes``, one torch thread
each); the table is read from the runs' ``results.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the sibling script (examples/ is the script's sys.path[0])
from quickstart import SIZES, TASKS, run_stage, run_stages

from unime_v2.data_builders.formats.training_records import HELDOUT_RESERVE
from unime_v2.data_builders.tiny_backbones import shipped_tiny_vlm
from unime_v2.hub_cards.markdown import markdown_grid
from unime_v2.trainers.arguments import RecipeParser
from unime_v2.trainers.evaluation.judge_curve import (
    calibrate_judge,
    oracle_score_levels,
    oracle_scores_of_mined,
    pooled_auc,
    target_statistics,
    with_scores,
)
from unime_v2.trainers.run_folder import OutputFolderArguments, claim_output_dir, run_settings


VARIANTS: dict[str, dict[str, Any]] = {
    "InfoNCE, in-batch negatives only": {"loss_type": "infonce", "num_hard_negatives": "0"},
    "+ judge-mined hard negatives, hard labels (InfoNCE)": {"loss_type": "infonce", "num_hard_negatives": "8"},
    "judge-mined hard negatives, hard labels, own 1 + k candidates only": {
        "loss_type": "hard_labels",
        "num_hard_negatives": "8",
    },
    "+ soft judge scores (UniME-V2, k = 8)": {"loss_type": "symmetric_kl", "num_hard_negatives": "8"},
    "UniME-V2, k = 4": {"loss_type": "symmetric_kl", "num_hard_negatives": "4"},
    "UniME-V2, k = 6": {"loss_type": "symmetric_kl", "num_hard_negatives": "6"},
    "UniME-V2, k = 10": {"loss_type": "symmetric_kl", "num_hard_negatives": "10"},
    "UniME-V2, Jensen-Shannon": {"loss_type": "js", "num_hard_negatives": "8"},
    "UniME-V2, the authors' arithmetic": {"loss_type": "symmetric_kl_authors", "num_hard_negatives": "8"},
    "UniME-V2, oracle scores as the judge (upper bound)": {
        "loss_type": "symmetric_kl",
        "num_hard_negatives": "8",
        "judge": "oracle",
    },
    "UniME-V2, data scored by the untrained judge": {
        "loss_type": "symmetric_kl",
        "num_hard_negatives": "8",
        "judge": "untrained",
    },
}


CURVE_AUCS = (0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
CURVE_STEPS = {name: size["unime_v2_steps"] for name, size in SIZES.items()}
"""Steps of a curve run per quickstart size: those of the quickstart's own UniME-V2 (like for like; the docstring of
``curve_commands`` has the measured cost)."""
CURVE_HARD = "hard labels, own 1 + k candidates (control)"
CURVE_JUDGE = "soft labels (symmetric_kl), the quickstart's judge (UniME-V2)"
CURVE_DATA = "curve_data"


@dataclass
class AblationArguments:
    """Settings of ``examples/ablation.py``."""

    quickstart_dir: str = field(
        default="runs/quickstart", metadata={"help": "A finished quickstart (its mined data, seed embedder, size)."}
    )
    output_dir: str = field(default="runs/ablation", metadata={"help": "Runs, results.json, RESULTS.md, the plot."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Training seeds of every variant."})
    variants: list[str] | None = field(
        default=None, metadata={"help": "Run only these variants (names of the table)."}
    )
    curve: bool = field(
        default=False,
        metadata={"help": "Run the judge-quality curve (oracle scores corrupted to each --curve_aucs) instead."},
    )
    curve_aucs: list[float] = field(
        default_factory=lambda: list(CURVE_AUCS), metadata={"help": "The curve's target judge AUCs (0.5 to 1)."}
    )
    curve_steps: int | None = field(
        default=None,
        metadata={"help": "Training steps of every curve run (default: CURVE_STEPS of the quickstart's size)."},
    )
    curve_noise_seed: int = field(default=0, metadata={"help": "Seeds the noise that corrupts the oracle's scores."})
    lanes: int = field(
        default=min(2, os.cpu_count() or 1),
        metadata={"help": "Trainings and evaluations side by side, one torch thread each (default: up to 2)."},
    )

    def __post_init__(self) -> None:
        if self.lanes < 1:
            raise ValueError(f"--lanes must be >= 1, got {self.lanes}")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")[:60]


def _evaluation(examples: Path, out: Path, seed0: str, size: Mapping[str, Any]) -> list[str]:
    """The evaluation command of every run, less ``--model`` and ``--output_dir``: the quickstart's held-out rows."""
    return [
        sys.executable, str(examples / "evaluate.py"), "--suite", "mmeb", "--data", "mini_mmeb",
        "--mini_mmeb_seed", seed0, "--mini_mmeb_test_per_task", str(size["eval_rows"]),
        "--mini_mmeb_num_candidates", "100", "--mini_mmeb_config", json.dumps({"tasks": list(TASKS)}),
        "--cache_dir", str(out / "eval_cache"),
    ]  # fmt: skip


def _train(examples: Path, train_data: Path | str, output: Path, seed: int, steps: int, *overrides: str) -> list[str]:
    """One embedder training with the quickstart's UniME-V2 recipe from the shipped tiny VLM."""
    return [
        sys.executable, str(examples / "train.py"),
        "--config", str(examples / "configs" / "quickstart" / "unime_v2.yaml"), "--backbone", str(shipped_tiny_vlm()),
        "--train_data", str(train_data), "--output_dir", str(output), "--seed", str(seed), "--max_steps", str(steps),
        *overrides,
    ]  # fmt: skip


def variant_commands(args: AblationArguments, examples: Path) -> dict[str, list[str] | None]:
    """Stage name -> command: an untrained-judge mining run, then a training and an evaluation per (variant, seed)."""
    quick, out = Path(args.quickstart_dir).resolve(), Path(args.output_dir).resolve()
    summary = json.loads((quick / "summary.json").read_text())
    size, seed0 = SIZES[summary["settings"]["size"]], str(summary["settings"]["seed"])
    python, vlm, configs = sys.executable, str(shipped_tiny_vlm()), examples / "configs"
    data = {
        "quickstart": quick / "mine" / "dataset",
        "untrained": out / "mine_untrained_judge" / "dataset",
        "oracle": "oracle:mini_mmeb",
    }
    oracle_data = [  # the same training queries, mini-MMEB's generated distractors scored by its oracle
        "--mini_mmeb_seed", seed0, "--mini_mmeb_train_per_task", str(size["mine_per_task"]),
        "--mini_mmeb_config", json.dumps({"tasks": list(TASKS)}),
        "--mini_mmeb_test_per_task", str(HELDOUT_RESERVE),  # clear of every held-out row the evaluation reads
    ]  # fmt: skip
    names = args.variants or list(VARIANTS)
    commands: dict[str, list[str] | None] = {}
    if any(VARIANTS[n].get("judge") == "untrained" for n in names):
        commands["mine_untrained_judge"] = [
            python, str(examples / "mine.py"), "--config", str(configs / "quickstart" / "mine.yaml"),
            "--data", str(quick / "data" / "train"), "--corpus", str(quick / "data" / "corpus"),
            "--embedder", str(quick / "seed"), "--judge", vlm,
            "--output_dir", str(out / "mine_untrained_judge"), "--seed", seed0, "--top_k", str(size["top_k"]),
        ]  # fmt: skip
    evaluation = _evaluation(examples, out, seed0, size)
    for name in names:
        settings = dict(VARIANTS[name])
        judge = settings.pop("judge", "quickstart")
        for seed in args.seeds:
            run = f"{_slug(name)}-seed{seed}"
            overrides = [x for key, value in settings.items() for x in (f"--{key}", value)]
            overrides += oracle_data if judge == "oracle" else []
            commands[f"train-{run}"] = _train(
                examples, data[judge], out / run, seed, size["unime_v2_steps"], *overrides
            )
            commands[f"eval-{run}"] = [
                *evaluation,
                "--model",
                str(out / run),
                "--output_dir",
                str(out / f"eval-{run}"),
            ]
    return commands


def curve_level(auc: float) -> str:
    """The name of a curve level in stage and folder names: ``auc0_95``."""
    return f"auc{auc:.2f}".replace(".", "_")


def curve_runs(args: AblationArguments) -> dict[str, str]:
    """Run name prefix (``curve-soft-auc0_95``, ``curve-soft-judge``, ``curve-hard``) -> what it trains on: a
    corrupted level, the quickstart's own judge's scores (``judge``: UniME-V2 as the quickstart trains it, for every
    seed) or hard labels (``hard``: the control)."""
    runs = {f"curve-soft-{curve_level(auc)}": curve_level(auc) for auc in args.curve_aucs}
    return {**runs, "curve-soft-judge": "judge", "curve-hard": "hard"}


def curve_steps(args: AblationArguments, size_name: str) -> int:
    """``--curve_steps``, else :data:`CURVE_STEPS` of the quickstart's size."""
    return args.curve_steps if args.curve_steps is not None else CURVE_STEPS[size_name]


def curve_commands(args: AblationArguments, examples: Path) -> dict[str, list[str] | None]:
    """Stage name -> command of the judge-quality curve: the corrupted score sets (in-process, ``None``), then per
    (level, seed) a soft-label training on that level's scores, and per seed a soft-label training on the
    quickstart's own judge's scores and the hard-label control on its mined data (the same candidates in the same
    order; the scores are not read), each evaluated.

    Cost (``CURVE_STEPS["default"]``: 600 steps), measured on this project's 2-core CPU machine (RESULTS.md): 24
    trainings and their evaluations, two side by side, took 4357 s (73 min) with the test suite running beside them
    for the first half hour; at the end, with nothing else running, a training took 243–280 s in one of two lanes
    and an evaluation of the default held-out rows (5 tasks × 32 rows, 100 candidates) 14 s.
    """
    quick, out = Path(args.quickstart_dir).resolve(), Path(args.output_dir).resolve()
    settings = json.loads((quick / "summary.json").read_text())["settings"]
    size, seed0, steps = SIZES[settings["size"]], str(settings["seed"]), curve_steps(args, settings["size"])
    commands: dict[str, list[str] | None] = {CURVE_DATA: None}
    evaluation = _evaluation(examples, out, seed0, size)
    for prefix, level in curve_runs(args).items():
        hard = level == "hard"
        data = quick / "mine" / "dataset" if level in ("hard", "judge") else out / CURVE_DATA / level
        loss = ["--loss_type", "hard_labels" if hard else "symmetric_kl", "--num_hard_negatives", "8"]
        for seed in args.seeds:
            run = f"{prefix}-seed{seed}"
            commands[f"train-{run}"] = _train(examples, data, out / run, seed, steps, *loss)
            commands[f"eval-{run}"] = [
                *evaluation,
                "--model",
                str(out / run),
                "--output_dir",
                str(out / f"eval-{run}"),
            ]
    return commands


def mining_rows(mined: Any, seed: int, per_task: int) -> Any:
    """The mini-MMEB training rows (with their scenes) that a quickstart wrote as its mining source and corpus: those
    of ``quickstart._train_rows`` (held-out facts kept clear of ``HELDOUT_RESERVE`` queries per task) or, for a
    quickstart made before the corpus existed, of ``mini_mmeb_splits(seed, per_task, 1, 2)``; the first whose
    first row is the first mined record's query (``oracle_scores_of_mined`` then checks every record)."""
    import quickstart

    from unime_v2.data_builders.mini_mmeb.splits import mini_mmeb_splits

    sources = [lambda: mini_mmeb_splits(seed, per_task, 1, 2, {"tasks": list(TASKS)})[0]]
    if hasattr(quickstart, "_train_rows"):
        sources.insert(0, lambda: quickstart._train_rows(seed, per_task))
    for source in sources:
        rows = source()
        try:
            oracle_scores_of_mined(mined.select(range(1)), rows)
        except (ValueError, KeyError):
            continue
        return rows
    raise ValueError(f"{len(sources)} ways of rebuilding the quickstart's training rows; none matches its mined data")


def write_curve_data(args: AblationArguments) -> dict[str, Any]:
    """Re-score the quickstart's mined candidates with mini-MMEB's oracle, corrupt the scores to each target AUC,
    save each level as a mined dataset (``curve_data/<level>``) and the calibration (``curve_data/calibration.json``:
    the measured AUC and noise weight of each level, the soft targets each gives at τ = 0.02, k = 8, the same for the
    oracle and for the quickstart's judge, and how graded the oracle's scores are). Returns the calibration."""
    import datasets

    quick, folder = Path(args.quickstart_dir).resolve(), Path(args.output_dir).resolve() / CURVE_DATA
    settings = json.loads((quick / "summary.json").read_text())["settings"]
    mined = datasets.load_from_disk(str(quick / "mine" / "dataset"))
    oracle, counts = oracle_scores_of_mined(mined, mining_rows(mined, settings["seed"], settings["mine_per_task"]))
    judge = [[r["pos_score"], *r["neg_scores"]] for r in mined.select_columns(["pos_score", "neg_scores"])]
    calibration: dict[str, Any] = {
        "candidates": counts,
        "oracle_scores": oracle_score_levels(oracle),
        "oracle": {"auc": pooled_auc(oracle, oracle), "targets": target_statistics(oracle)},
        "quickstart_judge": {"auc": pooled_auc(judge, oracle), "targets": target_statistics(judge)},
        "levels": {},
    }
    for auc in args.curve_aucs:
        corrupted = calibrate_judge(oracle, auc, seed=args.curve_noise_seed)
        with_scores(mined, corrupted.scores).save_to_disk(str(folder / curve_level(auc)))
        calibration["levels"][curve_level(auc)] = {
            **corrupted.summary(),
            "targets": target_statistics(corrupted.scores),
        }
        print(f"judge AUC {auc}: measured {corrupted.auc:.4f}, noise weight {corrupted.noise_weight:.4f}", flush=True)
    (folder / "calibration.json").write_text(json.dumps(calibration, indent=2))
    return calibration


CURVE_KEYS = ("curve", "curve_aucs", "curve_steps", "curve_noise_seed")


def ablation_settings(args: AblationArguments) -> dict[str, Any]:
    """The settings that make an ablation's runs (the quickstart folder resolved); the curve's settings only for a
    curve, so that folders of the variants written before the curve existed stay resumable."""
    settings = {
        k: v for k, v in run_settings(args).items() if (args.curve or k not in CURVE_KEYS) and k != "lanes"
    }  # lanes change the speed only
    return {**settings, "quickstart_dir": str(Path(args.quickstart_dir).resolve())}


def stage_graph(stages: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Stage -> the stages it reads: ``eval-<run>`` its training ``train-<run>``; every training the data stages
    (those neither a training nor an evaluation: the untrained judge's mining, the curve's score sets)."""
    data = tuple(s for s in stages if not s.startswith(("train-", "eval-")))

    def reads(stage: str) -> tuple[str, ...]:
        if stage.startswith("eval-"):
            return (f"train-{stage.removeprefix('eval-')}",)
        return data if stage.startswith("train-") else ()

    return {stage: reads(stage) for stage in stages}


def run_all(commands: Mapping[str, list[str] | None], out: Path, lanes: int, work: Any = None) -> None:
    """Run (or resume) every stage of ``commands``, up to ``lanes`` side by side once what each reads is done
    (:func:`stage_graph`); a stage without a command runs ``work()`` in-process."""

    def run(name: str, tagged: bool) -> float:
        command = commands[name]
        return run_stage(name, command, out, work if command is None else None, tag=tagged)

    run_stages(run, lanes, stage_graph(list(commands)))


def run_ablation(args: AblationArguments, examples: Path, overwrite: bool = False) -> dict[str, Any]:
    """Run (or resume) every run, then write ``results.json``, ``RESULTS.md`` and ``ablation.png``; ``overwrite``
    first deletes another run's outputs in ``output_dir`` (``trainers/run_folder.py``)."""
    out = Path(args.output_dir).resolve()
    if claim_output_dir(out, "ablation", "examples/ablation.py", ablation_settings(args), overwrite):
        print(f"resuming the ablation in {out}: finished runs are reused", flush=True)
    if args.curve:
        return run_curve(args, examples, out)
    run_all(variant_commands(args, examples), out, args.lanes)
    results = collect(out, args)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "RESULTS.md").write_text(results_markdown(results) + "\n")
    plot(results, out / "ablation.png")
    return results


def _seed_metrics(out: Path, run: str, seeds: Sequence[int]) -> dict[str, Any]:
    """Every seed's overall / IND / OOD precision@1 of ``eval-<run>-seed<s>`` and their mean and std."""
    runs = {}
    for seed in seeds:
        metrics = json.loads((out / f"eval-{run}-seed{seed}" / "results.json").read_text())["suites"]["mmeb"][
            "metrics"
        ]
        runs[seed] = {
            k: metrics.get(f"precision_at_1{s}") for k, s in (("overall", ""), ("ind", "/ind"), ("ood", "/ood"))
        }
    return {"runs": runs, **{k: _mean_std([r[k] for r in runs.values()]) for k in ("overall", "ind", "ood")}}


def collect(out: Path, args: AblationArguments) -> dict[str, Any]:
    """Per variant: every seed's overall / IND / OOD precision@1 and their mean and standard deviation."""
    table = {name: _seed_metrics(out, _slug(name), args.seeds) for name in args.variants or list(VARIANTS)}
    return {"quickstart_dir": str(Path(args.quickstart_dir).resolve()), "seeds": args.seeds, "variants": table}


def run_curve(args: AblationArguments, examples: Path, out: Path) -> dict[str, Any]:
    """Run (or resume) the judge-quality curve, then write ``results.json``, ``RESULTS.md`` and ``judge_curve.png``."""
    run_all(curve_commands(args, examples), out, args.lanes, lambda: write_curve_data(args))
    results = collect_curve(out, args)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "RESULTS.md").write_text(curve_markdown(results) + "\n")
    plot_curve(results, out / "judge_curve.png")
    return results


def collect_curve(out: Path, args: AblationArguments) -> dict[str, Any]:
    """The curve's figures: the calibration (``curve_data/calibration.json``), per level the measured AUC, noise
    weight and soft targets with every seed's precision@1 and their mean and std, and the same for the control."""
    calibration = json.loads((out / CURVE_DATA / "calibration.json").read_text())
    settings = json.loads((Path(args.quickstart_dir).resolve() / "summary.json").read_text())["settings"]
    soft = {}
    for prefix, level in curve_runs(args).items():
        if level not in ("hard", "judge"):
            soft[level] = {**calibration["levels"][level], **_seed_metrics(out, prefix, args.seeds)}
    return {
        "quickstart_dir": str(Path(args.quickstart_dir).resolve()),
        "seeds": args.seeds,
        "curve_steps": curve_steps(args, settings["size"]),
        "calibration": calibration,
        "soft": soft,
        "judge": {**calibration["quickstart_judge"], **_seed_metrics(out, "curve-soft-judge", args.seeds)},
        "hard": _seed_metrics(out, "curve-hard", args.seeds),
    }


def curve_markdown(results: Mapping[str, Any]) -> str:
    """The curve's table: per judge AUC (target, measured), precision@1 mean ± std of UniME-V2's soft labels and the
    soft target's mean mass on the positive and entropy; the hard-label control's row last."""

    def cells(v: Mapping[str, Any]) -> list[str]:
        return [f"{v[k]['mean']:.3f} ± {v[k]['std']:.3f}" for k in ("overall", "ind", "ood")]

    rows = [[f"soft labels (symmetric_kl), judge AUC {v['target_auc']:.2f}", f"{v['auc']:.4f}", *cells(v),
             f"{v['targets']['positive_mass']:.3f}", f"{v['targets']['entropy']:.3f}"]
            for v in results["soft"].values()]  # fmt: skip
    judge, hard = results["judge"], results["hard"]["overall"]
    rows.append([CURVE_JUDGE, f"{judge['auc']:.4f}", *cells(judge), f"{judge['targets']['positive_mass']:.3f}",
                 f"{judge['targets']['entropy']:.3f}"])  # fmt: skip
    rows.append([CURVE_HARD, "", *cells(results["hard"]), "1.000", "0.000"])
    floor = judge["overall"]["mean"] - judge["overall"]["std"]
    header = ["labels", "measured AUC", "overall", "IND", "OOD", "mean Q(pos)", "entropy of Q"]
    seeds = ", ".join(map(str, results["seeds"]))
    return (
        f"precision@1 on held-out mini-MMEB rows (100 candidates), mean ± std over seeds {seeds}, "
        f"{results['curve_steps']} steps per run; the judge is mini-MMEB's oracle on the quickstart's mined "
        "candidates corrupted to each AUC; Q = softmax(scores / 0.02) over the positive and 8 negatives\n\n"
        + markdown_grid(header, rows)
        + f"\n\nUniME-V2 on the quickstart's own judge's scores, mean minus one std "
        f"({floor:.3f}) against the control's mean ({hard['mean']:.3f}): "
        f"{'above' if floor > hard['mean'] else 'not above'} ({floor - hard['mean']:+.3f}). The uniform Q's entropy: "
        f"{judge['targets']['uniform_entropy']:.3f}."
    )


def plot_curve(results: Mapping[str, Any], path: Path) -> None:
    """Overall precision@1 against the measured judge AUC: soft labels with the seeds' std as error bars, the
    hard-label control as a horizontal band (mean ± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted(results["soft"].values(), key=lambda v: v["auc"])
    hard = results["hard"]["overall"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.axhspan(hard["mean"] - hard["std"], hard["mean"] + hard["std"], color="#dd8452", alpha=0.25)
    ax.axhline(hard["mean"], color="#dd8452", label="hard labels (control), mean ± std")
    ax.errorbar([v["auc"] for v in levels], [v["overall"]["mean"] for v in levels],
                yerr=[v["overall"]["std"] for v in levels], marker="o", capsize=3, color="#4c72b0",
                label="soft labels, oracle corrupted to an AUC, mean ± std")  # fmt: skip
    judge = results["judge"]
    ax.errorbar([judge["auc"]], [judge["overall"]["mean"]], yerr=[judge["overall"]["std"]], marker="*",
                markersize=12, capsize=3, color="#55a868", linestyle="none",
                label="soft labels, the quickstart's judge (UniME-V2)")  # fmt: skip
    ax.set_xlabel("judge AUC against the oracle (measured on the mined candidates)")
    ax.set_ylabel("held-out precision@1")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _mean_std(values: Sequence[float | None]) -> dict[str, float]:
    numbers = [v for v in values if v is not None]
    return {"mean": statistics.fmean(numbers), "std": statistics.stdev(numbers) if len(numbers) > 1 else 0.0}


def results_markdown(results: Mapping[str, Any]) -> str:
    """The ablation table: mean ± std over the seeds of precision@1 (overall, IND, OOD)."""
    rows = [[name, *(f"{v[k]['mean']:.3f} ± {v[k]['std']:.3f}" for k in ("overall", "ind", "ood"))]
            for name, v in results["variants"].items()]  # fmt: skip
    header = ["variant", "overall", "IND", "OOD"]
    seeds = ", ".join(map(str, results["seeds"]))
    return (
        f"precision@1 on held-out mini-MMEB rows (100 candidates), mean ± std over seeds {seeds}\n\n"
        + markdown_grid(header, rows)
    )


def plot(results: Mapping[str, Any], path: Path) -> None:
    """A horizontal bar chart of the overall precision@1 with the seeds' standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["variants"])
    means = [results["variants"][n]["overall"]["mean"] for n in names]
    stds = [results["variants"][n]["overall"]["std"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1))
    ax.barh(range(len(names)), means, xerr=stds, color="#4c72b0")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("held-out precision@1 (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = RecipeParser((AblationArguments, OutputFolderArguments), description=__doc__.split("\n\n")[0])
    args, folder = parser.parse(argv)
    results = run_ablation(args, Path(__file__).resolve().parent, folder.overwrite)
    print("\n" + (curve_markdown(results) if args.curve else results_markdown(results)))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
