"""The whole of UniME-V2 on the embedded default, on a CPU: the README's first command.

    python examples/quickstart.py --output_dir runs/quickstart                 # default size (see docs/quickstart.md)
    python examples/quickstart.py --output_dir runs/qs_small --size small      # a few minutes: the CI test's size
    python examples/quickstart.py --output_dir runs/quickstart --overwrite     # start over (else: resume)

Stages, each the project's own script, on the shipped pretrained tiny Qwen2-VL (the embedder's base) and the shipped
tiny instruct judge (a tiny Qwen2.5-VL three times its size, never trained inside the run, as in the paper;
data_builders/assets, docs/tiny_judge.md): data (training queries and a candidate corpus of their near-misses,
disjoint in facts from the held-out rows) -> seed embedder (InfoNCE, the VLM2Vec role) -> the judge measured against
mini-MMEB's oracle on held-out rows (it measures, it never trains) -> mining (global retrieval over the corpus and
the positives, judge scores, sampling) -> UniME-V2, and the reranker trained from the judge, on the mined data ->
evaluation of the untrained VLM, the seed embedder, UniME-V2 and UniME-V2 + reranker. Writes ``summary.md`` /
``summary.json``.

Independent stages run side by side, one torch thread each (``--lanes``, default: up to 2 on a 2-core machine: what
is fastest for models this small). Every stage writes under ``output_dir/<stage>/`` and, once it succeeded, a
``.done`` file there; a rerun skips the finished stages (``overwrite`` starts over). The folder records its run in
``unime_v2_run.json``: a folder holding another quickstart (other ``seed`` / ``size``) or another kind of artifact
is refused unless ``--overwrite`` (docs/training.md, "One run per output folder"). Every figure of the final table is
read back from the stages' own output files (``results.json`` of ``examples/evaluate.py``, ``judge_quality.json``,
the mining report), never computed here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unime_v2.data_builders.mini_mmeb.splits import mini_mmeb_splits
from unime_v2.data_builders.tiny_backbones import shipped_tiny_judge, shipped_tiny_vlm
from unime_v2.hub_cards.markdown import markdown_grid
from unime_v2.trainers.arguments import RecipeParser
from unime_v2.trainers.evaluation.judge_quality import HELDOUT_HEADER, format_heldout_table
from unime_v2.trainers.run_folder import claim_output_dir, run_settings


TASKS = ("MiniImageNet-cls", "MiniCOCO-i2t", "MiniCOCO-t2i", "MiniObjectNet-cls", "MiniNovel-t2i")
IND_TASKS = TASKS[:3]
SIZES: dict[str, dict[str, Any]] = {
    "default": {
        "train_per_task": 1000,
        "seed_steps": 300,
        "mine_per_task": 600,
        "top_k": 30,
        "unime_v2_steps": 600,
        "reranker_steps": 300,
        "eval_rows": 32,
        "logging_steps": 25,
        "companions": {"caption_images": 40, "long_caption_images": 40, "compositional_per_subset": 16},
    },
    "small": {
        "train_per_task": 64,
        "seed_steps": 30,
        "mine_per_task": 16,
        "top_k": 12,
        "unime_v2_steps": 12,
        "reranker_steps": 8,
        "eval_rows": 6,
        "logging_steps": 2,
        "companions": {"caption_images": 8, "long_caption_images": 8, "compositional_per_subset": 3},
    },
}
STAGES = ("data", "seed", "judge", "mine", "unime_v2", "reranker", "eval_pretrained", "eval_seed", "eval_unime_v2",
          "eval_pairwise")  # fmt: skip
DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "data": (),
    "seed": (),
    "judge": (),
    "eval_pretrained": (),
    "mine": ("data", "seed"),
    "eval_seed": ("seed",),
    "unime_v2": ("mine",),
    "reranker": ("mine",),
    "eval_unime_v2": ("unime_v2", "reranker"),
    "eval_pairwise": ("unime_v2", "reranker"),
}
"""What each stage reads from the others; independent stages run side by side."""
PRIORITY = ("seed", "data", "mine", "unime_v2", "reranker", "eval_unime_v2", "eval_pairwise", "judge", "eval_seed",
            "eval_pretrained")  # fmt: skip
"""Which ready stage starts first: the longest chain (seed -> mine -> reranker -> evaluation) before the rest."""


@dataclass
class QuickstartArguments:
    """Settings of ``examples/quickstart.py``."""

    output_dir: str = field(default="runs/quickstart", metadata={"help": "Every stage writes under this folder."})
    seed: int = field(default=0, metadata={"help": "Seeds the data, every training run and the mining draws."})
    size: str = field(default="default", metadata={"help": f"Preset of steps and data sizes: {' | '.join(SIZES)}."})
    overwrite: bool = field(default=False, metadata={"help": "Start over instead of reusing finished stages."})
    lanes: int = field(
        default=min(2, os.cpu_count() or 1),
        metadata={"help": "Stages run side by side, one torch thread each (default: up to 2, the CPU count)."},
    )

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"--size {self.size!r}; choose one of {tuple(SIZES)}")
        if self.lanes < 1:
            raise ValueError(f"--lanes must be >= 1, got {self.lanes}")


_PRINT = threading.Lock()


def run_stage(name: str, command: Sequence[str] | None, out: Path, work: Any = None, tag: bool = False) -> float:
    """Run one stage (a script in a subprocess, output streamed and logged, or ``work()`` in-process) unless its
    ``.done`` marker exists; returns the seconds it took (0 when reused). ``tag``: prefix the streamed lines with
    the stage's name (stages running side by side)."""
    done = out / name / ".done"
    if done.exists():
        print(f"\n=== {name}: reusing {done.parent}", flush=True)
        return 0.0
    (out / "logs").mkdir(parents=True, exist_ok=True)
    start = time.time()
    if command is None:
        print(f"\n=== {name}", flush=True)
        work()
    else:
        print(f"\n=== {name}: {' '.join(command)}", flush=True)
        _stream(name, command, out / "logs" / f"{name}.log", f"[{name}] " if tag else "")
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(f"{time.time() - start:.1f}\n")
    return time.time() - start


def _stream(name: str, command: Sequence[str], log_path: Path, prefix: str = "") -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread per process is fastest on a small CPU
    with open(log_path, "w") as log:
        process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for line in process.stdout:
            with _PRINT:
                sys.stdout.write(prefix + line)
            log.write(line)
        if process.wait() != 0:
            raise SystemExit(f"stage {name!r} failed (exit {process.returncode}); see {log_path}")


def run_stages(
    run: Callable[[str, bool], float], lanes: int, graph: Mapping[str, Sequence[str]] | None = None
) -> dict[str, float]:
    """Run every stage of ``graph`` (stage -> the stages it reads, in the order ready stages start; default: the
    quickstart's :data:`STAGES` with their :data:`DEPENDENCIES`, in :data:`PRIORITY` order) once what it reads is
    done, up to ``lanes`` at a time; ``run(name, tagged)`` runs one. A failed stage lets the running ones finish,
    starts no other, and is raised. Returns the seconds of each stage, in the order of :data:`STAGES` or ``graph``."""
    if graph is None:
        graph = {name: DEPENDENCIES[name] for name in PRIORITY if name in STAGES}
        order: Sequence[str] = [name for name in STAGES if name in graph]
    else:
        order = list(graph)
    seconds: dict[str, float] = {}
    pending = list(graph)
    running: dict[Future, str] = {}
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=lanes) as pool:
        while pending or running:
            ready = [n for n in pending if all(d in seconds for d in graph[n])] if failure is None else []
            for name in ready[: lanes - len(running)]:
                pending.remove(name)
                running[pool.submit(run, name, lanes > 1)] = name
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                if future.exception() is not None:
                    failure = failure or future.exception()
                else:
                    seconds[name] = round(future.result(), 1)
    if failure is not None:
        raise failure
    return {name: seconds[name] for name in order}


def _train_rows(seed: int, per_task: int) -> Any:
    """The first ``per_task`` training queries of each in-distribution task (each with its training list: the
    positive and 10 candidates, hard distractors among them), disjoint in facts from the first
    ``HELDOUT_RESERVE`` held-out queries of every task (more than any evaluation here uses)."""
    from unime_v2.data_builders.formats.training_records import HELDOUT_RESERVE

    train, _ = mini_mmeb_splits(seed, per_task, HELDOUT_RESERVE, 2, {"tasks": list(TASKS)})
    return train


def write_mining_source(target: Path, seed: int, per_task: int) -> None:
    """The (query, positive) records to mine, in MMEB-train columns (:func:`_train_rows`)."""
    from datasets import Dataset, Features, Image, Value

    raw = _train_rows(seed, per_task).with_format("arrow")[:].to_pylist()  # images stay encoded bytes
    features = Features(
        {
            "qry": Value("string"),
            "qry_image": Image(),
            "pos_text": Value("string"),
            "pos_image": Image(),
            "dataset": Value("string"),
        }  # fmt: skip
    )
    columns = {
        "qry": [r["qry_text"] for r in raw],
        "qry_image": [r["qry_image"] for r in raw],
        "pos_text": [r["tgt_text"][0] for r in raw],
        "pos_image": [r["tgt_image"][0] for r in raw],
        "dataset": [r["dataset"] for r in raw],
    }
    Dataset.from_dict(columns, features=features).save_to_disk(str(target))


def write_corpus(target: Path, seed: int, per_task: int) -> None:
    """The candidate corpus the quickstart mines against, beside the positives: every other candidate of the mined
    queries' training lists — one-edit variants of their positives (near-misses) and targets of other training
    facts — as a real collection holds look-alikes of what is searched for (``id``, ``text``, ``image``).
    Duplicates are kept; mining counts and drops them."""
    from datasets import Dataset, Features, Image, Value

    ids, texts, images = [], [], []
    for index, row in enumerate(_train_rows(seed, per_task).with_format("arrow")[:].to_pylist()):
        for j in range(1, len(row["tgt_text"])):
            ids.append(f"{row['dataset']}-{index}-{j}-{row['tgt_kind'][j]}")
            texts.append(row["tgt_text"][j] or "")
            images.append(row["tgt_image"][j])
    features = Features({"id": Value("string"), "text": Value("string"), "image": Image()})
    Dataset.from_dict({"id": ids, "text": texts, "image": images}, features=features).save_to_disk(str(target))


def write_data(out: Path, seed: int, per_task: int) -> None:
    """The data stage: the mining source (``data/train``) and the candidate corpus (``data/corpus``)."""
    write_mining_source(out / "data" / "train", seed, per_task)
    write_corpus(out / "data" / "corpus", seed, per_task)


def stage_commands(args: QuickstartArguments, examples: Path) -> dict[str, list[str] | None]:
    """The command line of every stage (``None``: an in-process stage)."""
    out, size, python = Path(args.output_dir).resolve(), SIZES[args.size], sys.executable
    vlm, judge, seed, configs = (
        str(shipped_tiny_vlm()),
        str(shipped_tiny_judge()),
        str(args.seed),
        examples / "configs",
    )
    logging = ["--logging_steps", str(size["logging_steps"])]
    train = [python, str(examples / "train.py"), *logging]
    evaluation = [
        python, str(examples / "evaluate.py"), "--suite", "all", "--data", "mini_mmeb", "--mini_mmeb_seed", seed,
        "--mini_mmeb_test_per_task", str(size["eval_rows"]), "--mini_mmeb_num_candidates", "100",
        "--mini_mmeb_config", json.dumps({"tasks": list(TASKS), **size["companions"]}),
        "--cache_dir", str(out / "eval_cache"), "--batch_size", "64",
    ]  # fmt: skip
    return {
        "data": None,
        "seed": [*train, "--config", str(configs / "quickstart" / "seed.yaml"), "--backbone", vlm,
                 "--output_dir", str(out / "seed"), "--seed", seed, "--mini_mmeb_seed", seed,
                 "--mini_mmeb_train_per_task", str(size["train_per_task"]), "--max_steps", str(size["seed_steps"])],
        "judge": [python, str(examples / "measure_judge.py"), "--judge", judge, "--output_dir", str(out / "judge"),
                  "--mini_mmeb_seed", seed, "--rows_per_task", str(size["eval_rows"]), "--tasks", *IND_TASKS],
        "mine": [python, str(examples / "mine.py"), "--config", str(configs / "quickstart" / "mine.yaml"),
                 "--data", str(out / "data" / "train"), "--corpus", str(out / "data" / "corpus"),
                 "--embedder", str(out / "seed"), "--judge", judge,
                 "--output_dir", str(out / "mine"), "--seed", seed, "--top_k", str(size["top_k"])],
        "unime_v2": [*train, "--config", str(configs / "quickstart" / "unime_v2.yaml"), "--backbone", vlm,
                     "--train_data", str(out / "mine" / "dataset"), "--output_dir", str(out / "unime_v2"),
                     "--seed", seed, "--max_steps", str(size["unime_v2_steps"])],
        "reranker": [python, str(examples / "train_reranker.py"), *logging,
                     "--config", str(configs / "quickstart" / "reranker.yaml"), "--backbone", judge,
                     "--train_data", str(out / "mine" / "dataset"), "--output_dir", str(out / "reranker"),
                     "--seed", seed, "--max_steps", str(size["reranker_steps"])],
        "eval_pretrained": [*evaluation, "--model", vlm, "--prompt_format", "chat",
                            "--output_dir", str(out / "eval_pretrained")],
        "eval_seed": [*evaluation, "--model", str(out / "seed"), "--output_dir", str(out / "eval_seed")],
        "eval_unime_v2": [*evaluation, "--model", str(out / "unime_v2"), "--reranker", str(out / "reranker"),
                          "--output_dir", str(out / "eval_unime_v2")],
        "eval_pairwise": [*evaluation, "--suite", "mmeb", "--model", str(out / "unime_v2"),
                          "--reranker", str(out / "reranker"), "--rerank_mode", "pairwise",
                          "--output_dir", str(out / "eval_pairwise")],
    }  # fmt: skip


def run_quickstart(args: QuickstartArguments, examples: Path) -> dict[str, Any]:
    """Run (or resume) every stage, then write ``summary.json`` and ``summary.md``; returns the summary."""
    out = Path(args.output_dir).resolve()
    if args.overwrite and out.exists():
        shutil.rmtree(out)
    settings = {k: v for k, v in run_settings(args).items() if k != "lanes"}  # lanes change the speed only
    if claim_output_dir(out, "quickstart", "examples/quickstart.py", settings):
        print(f"resuming quickstart in {out}: finished stages are reused", flush=True)
    commands = stage_commands(args, examples)
    per_task = SIZES[args.size]["mine_per_task"]

    def run(name: str, tagged: bool) -> float:
        work = (lambda: write_data(out, args.seed, per_task)) if name == "data" else None
        return run_stage(name, commands[name], out, work, tag=tagged)

    start = time.time()
    seconds = run_stages(run, args.lanes)
    summary = build_summary(out, seconds, args, wall=round(time.time() - start, 1))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(summary_markdown(summary) + "\n")
    return summary


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _mmeb_row(name: str, metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """One table row: overall, IND, OOD and per meta-task precision@1 (``prefix`` ``rerank/`` for the reranker)."""
    head = f"{prefix}precision_at_1"
    row: dict[str, Any] = {"model": name, "overall": metrics.get(head), "ind": metrics.get(f"{head}/ind"),
                           "ood": metrics.get(f"{head}/ood")}  # fmt: skip
    row.update({k[len(head) + 1 :]: v for k, v in metrics.items() if k.startswith(f"{head}/meta/")})
    if prefix:
        row["fallbacks"] = metrics.get(f"{prefix}fallbacks")
    return row


def _companions(suites: Mapping[str, Any], rerank: bool = False) -> dict[str, float]:
    """Retrieval R@1 (image->text, text->image) and SugarCrepe replace/swap/add accuracy, per companion set; the
    reranker's (keys holding ``rerank/``) or the embedder's."""
    out = {}
    for suite in ("retrieval", "sugarcrepe"):
        for key, value in suites.get(suite, {}).get("metrics", {}).items():
            if ("rerank/" in key) != rerank:
                continue
            bare = key.replace("rerank/", "")
            if bare.endswith(("/i2t_R@1", "/t2i_R@1")) or bare in (
                "accuracy/replace",
                "accuracy/swap",
                "accuracy/add",
            ):
                out[bare] = value
    return out


def build_summary(
    out: Path, seconds: Mapping[str, float], args: QuickstartArguments, wall: float | None = None
) -> dict[str, Any]:
    """Every figure of the quickstart, read from the stages' output files. ``wall``: this call's seconds from the
    first stage to the last (stages run side by side, so less than their sum; ``None`` when not measured)."""
    rows, others = [], {}
    for stage, name in (("eval_pretrained", "pretrained tiny VLM (no training)"), ("eval_seed", "seed embedder"),
                        ("eval_unime_v2", "UniME-V2")):  # fmt: skip
        results = _read(out / stage / "results.json")
        suites = results.get("suites", {})
        rows.append(_mmeb_row(name, suites.get("mmeb", {}).get("metrics", {})))
        others[name] = _companions(suites)
        if results.get("reranker"):
            rows.append(_mmeb_row("UniME-V2 + reranker", suites.get("mmeb", {}).get("metrics", {}), "rerank/"))
            others["UniME-V2 + reranker"] = _companions(suites, rerank=True)
    pairwise = _read(out / "eval_pairwise" / "results.json").get("suites", {}).get("mmeb", {}).get("metrics", {})
    rows.append(_mmeb_row("UniME-V2 + reranker (pairwise)", pairwise, "rerank/"))
    judge = _read(out / "judge" / "judge_quality.json")
    mined = _read(out / "mine" / "report.json")
    return {
        "settings": {
            "seed": args.seed,
            "size": args.size,
            "lanes": args.lanes,
            **SIZES[args.size],
            "tasks": list(TASKS),
        },  # fmt: skip
        "seconds": dict(seconds),
        "total_seconds": round(sum(seconds.values()), 1),
        "wall_seconds": wall,
        "mmeb": rows,
        "companions": others,
        "judge": {"checkpoint": judge.get("judge"), "after": judge.get("after", {})},
        "mining": mined.get("counts", {}),
        "mining_judge_health": {k: v for k, v in mined.get("judge_health", {}).items() if k != "thresholds"},
    }


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The quickstart's tables: MMEB precision@1 per meta-task, IND/OOD/overall; companion sets; judge; timings."""
    metas = sorted({k for row in summary["mmeb"] for k in row if k.startswith("meta/")})
    header = ["model", *[m.split("/", 1)[1] for m in metas], "IND", "OOD", "overall", "listwise fallbacks"]
    cells = [[r["model"], *[r.get(m, "") for m in metas], r.get("ind", ""), r.get("ood", ""), r.get("overall", ""),
              r.get("fallbacks", "")] for r in summary["mmeb"]]  # fmt: skip
    parts = ["### mini-MMEB precision@1 (100 candidates, held-out rows)", markdown_grid(header, cells)]
    keys = sorted({k for values in summary["companions"].values() for k in values})
    if keys:
        comp = [[name, *[values.get(k, "") for k in keys]] for name, values in summary["companions"].items()]
        parts += ["### Companion sets (retrieval R@1, SugarCrepe accuracy)", markdown_grid(["model", *keys], comp)]
    after = summary["judge"].get("after", {})
    if after:
        parts += ["### The judge against the oracle (held-out rows of the IND tasks; 10 negatives per query)",
                  markdown_grid(HELDOUT_HEADER, format_heldout_table(after))]  # fmt: skip
    mining = summary["mining"]
    if mining:
        parts += ["### Mining", markdown_grid(["count", "value"], [[k, v] for k, v in mining.items()])]
    timing = [[name, value] for name, value in summary["seconds"].items()] + [["sum", summary["total_seconds"]]]
    if summary.get("wall_seconds") is not None:
        timing.append([f"wall ({summary['settings'].get('lanes', 1)} stages side by side)", summary["wall_seconds"]])
    parts += ["### Seconds per stage", markdown_grid(["stage", "seconds"], timing)]
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> dict:
    (args,) = RecipeParser(QuickstartArguments, description=__doc__.split("\n\n")[0]).parse(argv)
    summary = run_quickstart(args, Path(__file__).resolve().parent)
    print("\n" + summary_markdown(summary))
    print(f"\nartifacts: {Path(args.output_dir).resolve()}  (summary.md, summary.json)")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
