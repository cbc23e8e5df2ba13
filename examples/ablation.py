"""The paper's Table 4 and Table 6 in miniature, on a finished quickstart (docs/quickstart.md).

    python examples/quickstart.py --output_dir runs/quickstart
    python examples/ablation.py --quickstart_dir runs/quickstart --output_dir runs/ablation --seeds 0 1 2

Variants: InfoNCE with in-batch negatives only; + judge-mined hard negatives with hard labels; the same hard labels
on each query's own 1 + k candidates only (UniME-V2's candidate set); + the judge's soft scores (UniME-V2);
k in {4, 6, 8, 10}; Jensen-Shannon and the authors' loss arithmetic; the judge's quality (the untrained VLM as
judge, the fine-tuned judge, mini-MMEB's oracle as judge: an upper bound). Writes results.json, RESULTS.md (mean ±
std over seeds) and ablation.png; resumable like the quickstart. A folder holding another ablation (other quickstart,
seeds or variants) or another kind of artifact is refused unless ``--overwrite true`` (docs/training.md, "One run
per output folder").

Every variant trains an embedder from the shipped pretrained tiny VLM with the quickstart's UniME-V2 recipe and the
same steps, changing one thing (the objective, k, the loss arithmetic, the judge that scored the data), for several
seeds, and is evaluated on the quickstart's held-out mini-MMEB rows. Each run is a stage of the quickstart's
``run_stage`` (``examples/quickstart.py``, resumable); the table is read from the runs' ``results.json``.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quickstart import SIZES, TASKS, run_stage  # the sibling script (examples/ is the script's sys.path[0])

from unime_v2.data_builders.tiny_backbones import shipped_tiny_vlm
from unime_v2.hub_cards.markdown import markdown_grid
from unime_v2.trainers.arguments import RecipeParser
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


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")[:60]


def variant_commands(args: AblationArguments, examples: Path) -> dict[str, list[str] | None]:
    """Stage name -> command: an untrained-judge mining run, then one training and one evaluation per (variant, seed)."""
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
    ]  # fmt: skip
    names = args.variants or list(VARIANTS)
    commands: dict[str, list[str] | None] = {}
    if any(VARIANTS[n].get("judge") == "untrained" for n in names):
        commands["mine_untrained_judge"] = [
            python, str(examples / "mine.py"), "--config", str(configs / "quickstart" / "mine.yaml"),
            "--data", str(quick / "data" / "train"), "--embedder", str(quick / "seed"), "--judge", vlm,
            "--output_dir", str(out / "mine_untrained_judge"), "--seed", seed0, "--top_k", str(size["top_k"]),
        ]  # fmt: skip
    evaluation = [
        python, str(examples / "evaluate.py"), "--suite", "mmeb", "--data", "mini_mmeb", "--mini_mmeb_seed", seed0,
        "--mini_mmeb_test_per_task", str(size["eval_rows"]), "--mini_mmeb_num_candidates", "100",
        "--mini_mmeb_config", json.dumps({"tasks": list(TASKS)}), "--cache_dir", str(out / "eval_cache"),
    ]  # fmt: skip
    for name in names:
        settings = dict(VARIANTS[name])
        judge = settings.pop("judge", "quickstart")
        train_data = data[judge]
        for seed in args.seeds:
            run = f"{_slug(name)}-seed{seed}"
            overrides = [x for key, value in settings.items() for x in (f"--{key}", value)]
            overrides += oracle_data if judge == "oracle" else []
            commands[f"train-{run}"] = [
                python, str(examples / "train.py"), "--config", str(configs / "quickstart" / "unime_v2.yaml"),
                "--backbone", vlm, "--train_data", str(train_data), "--output_dir", str(out / run), "--seed", str(seed),
                "--max_steps", str(size["unime_v2_steps"]), *overrides,
            ]  # fmt: skip
            commands[f"eval-{run}"] = [
                *evaluation,
                "--model",
                str(out / run),
                "--output_dir",
                str(out / f"eval-{run}"),
            ]
    return commands


def ablation_settings(args: AblationArguments) -> dict[str, Any]:
    """The settings that make an ablation's runs (the quickstart folder resolved)."""
    return {**run_settings(args), "quickstart_dir": str(Path(args.quickstart_dir).resolve())}


def run_ablation(args: AblationArguments, examples: Path, overwrite: bool = False) -> dict[str, Any]:
    """Run (or resume) every run, then write ``results.json``, ``RESULTS.md`` and ``ablation.png``; ``overwrite``
    first deletes another run's outputs in ``output_dir`` (``trainers/run_folder.py``)."""
    out = Path(args.output_dir).resolve()
    if claim_output_dir(out, "ablation", "examples/ablation.py", ablation_settings(args), overwrite):
        print(f"resuming the ablation in {out}: finished runs are reused", flush=True)
    for stage, command in variant_commands(args, examples).items():
        run_stage(stage, command, out)
    results = collect(out, args)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "RESULTS.md").write_text(results_markdown(results) + "\n")
    plot(results, out / "ablation.png")
    return results


def collect(out: Path, args: AblationArguments) -> dict[str, Any]:
    """Per variant: every seed's overall / IND / OOD precision@1 and their mean and standard deviation."""
    table = {}
    for name in args.variants or list(VARIANTS):
        runs = {}
        for seed in args.seeds:
            path = out / f"eval-{_slug(name)}-seed{seed}" / "results.json"
            metrics = json.loads(path.read_text())["suites"]["mmeb"]["metrics"]
            runs[seed] = {
                k: metrics.get(f"precision_at_1{s}") for k, s in (("overall", ""), ("ind", "/ind"), ("ood", "/ood"))
            }
        table[name] = {
            "runs": runs,
            **{k: _mean_std([r[k] for r in runs.values()]) for k in ("overall", "ind", "ood")},
        }
    return {"quickstart_dir": str(Path(args.quickstart_dir).resolve()), "seeds": args.seeds, "variants": table}


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
    print("\n" + results_markdown(results))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
