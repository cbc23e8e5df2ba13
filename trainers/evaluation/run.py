"""``examples/evaluate.py`` as a package call: settings, model loading, the suites, and the output folder.

:func:`run_evaluation` loads the embedder (and the reranker), reads the data the settings name, runs the suites'
evaluators and writes the report (:mod:`~unime_v2.trainers.evaluation.report`) on the main process. Under
``accelerate launch`` every process runs it; encoding and reranking are shared (docs/evaluation.md).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState

from unime_v2.data_builders.checkpoints import load_embedder
from unime_v2.data_builders.recipes import MINI_MMEB, default_cache_dir, resolve_backbone

from ..run_folder import claim_output_dir, run_settings
from .encoding import RESOLUTIONS
from .evaluators import EVALUATORS
from .readers import (
    DatasetSource,
    mini_mmeb_companion_sources,
    mmeb_eval_sources,
    mmeb_sources_from_rows,
    retrieval_sources,
    sugarcrepe_sources,
)
from .report import write_report


EMBEDDER_MODEL_TYPE, RERANKER_MODEL_TYPE = "unime_v2", "unime_v2_reranker"


logger = logging.getLogger(__name__)

SUITES = ("mmeb", "retrieval", "sugarcrepe")


@dataclass
class EvaluationArguments:
    """What to evaluate, on which data, at which resolution, and where the tables go."""

    model: str = field(
        default=None,
        metadata={"help": "The embedder: a folder, a Hub id (our AutoModel checkpoints, a plain Qwen2-VL / "
                  "Qwen2.5-VL / LLaVA-OneVision checkpoint wrapped with from_backbone, or a PEFT adapter such as "
                  "VLM2Vec's, merged into its base) or tiny:<kind>[:<seed>]."},
    )  # fmt: skip
    revision: str | None = field(default=None, metadata={"help": "Hub revision of --model."})
    model_base: str | None = field(
        default=None,
        metadata={
            "help": "For a PEFT adapter --model: its base VLM (default: the adapter's base_model_name_or_path)."
        },
    )
    reranker: str | None = field(
        default=None,
        metadata={"help": "Optional reranker (folder or Hub id, loaded with AutoModel and trust_remote_code): adds "
                  "the '+ reranker' rows, reranking the embedder's top-k."},
    )  # fmt: skip
    suite: str = field(default="all", metadata={"help": "mmeb, retrieval, sugarcrepe or all."})
    data: str | None = field(
        default=None,
        metadata={"help": "mini_mmeb: the generated benchmark (its held-out rows and companion sets) for all suites."},
    )
    mmeb_eval: str | None = field(
        default=None,
        metadata={"help": "MMEB-eval: TIGER-Lab/MMEB-eval or a local clone of it (README listing the subsets, "
                  "<subset>/test-*.parquet, eval_images/), a folder of <task>/ subsets, or a folder of <task>.jsonl "
                  "files (mini-MMEB's export)."},
    )  # fmt: skip
    image_root: str | None = field(
        default=None,
        metadata={"help": "Root of MMEB-eval's relative image paths (default for a clone: <clone>/eval_images)."},
    )
    mmeb_tasks: str | None = field(
        default=None,
        metadata={"help": "Comma-separated MMEB-eval datasets to evaluate (default: every one --mmeb_eval has)."},
    )
    retrieval_dir: str | None = field(
        default=None,
        metadata={"help": "The authors' data/ folder: flickr30k_test, coco_test, shareGPT4v, Urban1k, sugar-crepe, "
                  "coco2017/val2017 (retrieval and SugarCrepe)."},
    )  # fmt: skip
    output_dir: str = field(default=None, metadata={"help": "Where results.json, results.md and the PNGs go."})
    resolution: str = field(
        default="model",
        metadata={
            "help": "Image resolution: model (the model config's eval_resolution: high, 1344x1344, for the authors' "
            "checkpoints as they evaluated) | low (336x336) | high (1344x1344) | checkpoint (its own pixel budget)."
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Items per forward pass of the embedder."})
    top_k: int = field(default=10, metadata={"help": "Candidates the reranker reorders (retrieval, SugarCrepe)."})
    mmeb_top_k: int = field(default=5, metadata={"help": "Candidates the reranker reorders on MMEB (paper: 5)."})
    rerank_mode: str = field(default="listwise", metadata={"help": "listwise or pairwise reranking."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Embedding cache (default: <UNIME_V2_CACHE>/evaluation_embeddings)."}
    )
    no_cache: bool = field(default=False, metadata={"help": "Encode everything, keep nothing on disk."})
    prompt_format: str = field(
        default="official",
        metadata={"help": "For a plain VLM --model: official (the released checkpoints' raw text) | chat (template)."},
    )
    dtype: str = field(default="float32", metadata={"help": "Model dtype: float32, bfloat16 or float16."})
    mini_mmeb_seed: int = field(default=0, metadata={"help": "Seed of mini-MMEB (as in the training recipe)."})
    mini_mmeb_test_per_task: int = field(default=16, metadata={"help": "Held-out mini-MMEB rows per task."})
    mini_mmeb_num_candidates: int = field(default=16, metadata={"help": "mini-MMEB candidates per row."})
    mini_mmeb_config: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "More MiniMMEBConfig fields as JSON (tasks, caption_images, …)."}
    )
    show_progress_bar: bool = field(default=True, metadata={"help": "tqdm bars in items/s."})
    overwrite: bool = field(
        default=False,
        metadata={"help": "Replace another evaluation's results in output_dir (one evaluation per folder, else "
                  "refused): deletes results.json, results.md and the PNGs there, keeps any other file."},
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.suite not in SUITES + ("all",):
            raise ValueError(f"--suite {self.suite!r}; choose one of {SUITES + ('all',)}")
        if self.resolution not in (*RESOLUTIONS, "model"):
            raise ValueError(f"--resolution {self.resolution!r}; choose one of {sorted(RESOLUTIONS)}")
        if self.rerank_mode not in ("listwise", "pairwise"):
            raise ValueError(f"--rerank_mode {self.rerank_mode!r}; choose listwise or pairwise")
        if self.data not in (None, MINI_MMEB):
            raise ValueError(f"--data {self.data!r}: the only named data set is {MINI_MMEB!r}")

    @property
    def suites(self) -> tuple[str, ...]:
        return SUITES if self.suite == "all" else (self.suite,)


class NothingEvaluatedError(RuntimeError):
    """No dataset of any suite could be scored: there are no figures to report."""


def local_model_type(spec: str) -> str | None:
    """The ``model_type`` in ``spec``'s ``config.json`` when ``spec`` is a local folder (else ``None``)."""
    config = Path(spec) / "config.json"
    return json.loads(config.read_text()).get("model_type") if config.is_file() else None


def check_model_roles(
    model: str | None, reranker: str | None, model_flag: str = "--model", reranker_flag: str = "--reranker"
) -> None:
    """Name a reranker folder given as the embedder (``model_flag``) or an embedder folder given as the reranker
    (``reranker_flag``); Hub ids and plain VLM folders pass."""
    if model and local_model_type(model) == RERANKER_MODEL_TYPE:
        raise ValueError(
            f"{model_flag} {model} is a UniME-V2 reranker, not an embedder: pass it as {reranker_flag} {model} and an "
            f"embedder as {model_flag}"
        )
    if reranker and local_model_type(reranker) == EMBEDDER_MODEL_TYPE:
        raise ValueError(
            f"{reranker_flag} {reranker} is a UniME-V2 embedder, not a reranker: pass it as {model_flag} {reranker} "
            f"and a reranker (or a plain VLM) as {reranker_flag}"
        )


def load_model(args: EvaluationArguments) -> Any:
    """The embedder ``args.model`` names (``tiny:`` specs built once, on the main process first), on this process's
    device: :func:`~unime_v2.data_builders.checkpoints.load_embedder` (UniME-V2 checkpoints, plain VLMs, PEFT
    adapters)."""
    check_model_roles(args.model, None)
    path = resolve_backbone(args.model, main_process_first=PartialState().main_process_first)
    return load_embedder(
        path, args.prompt_format, args.dtype, PartialState().device, base=args.model_base, revision=args.revision
    )


def load_reranker(spec: str, revision: str | None = None, dtype: str = "float32") -> Any:
    """The reranker of ``spec`` (``tiny:judge``, a folder or a Hub id): a saved UniME-V2 reranker by the installed
    package's class (a folder need not carry its code, as the shipped tiny judge does not), anything else through
    ``AutoModel.from_pretrained(spec, trust_remote_code=True)``; it must have ``rerank``."""
    import torch
    from transformers import AutoModel

    from unime_v2.data_builders.checkpoints import saved_model_type
    from unime_v2.modeling_unime_v2 import UniMEV2Reranker

    spec = resolve_backbone(spec)
    hub = {"revision": revision} if revision else {}
    if saved_model_type(spec, **hub) == "unime_v2_reranker":
        model = UniMEV2Reranker.from_pretrained(spec, dtype=getattr(torch, dtype), **hub)
    else:
        model = AutoModel.from_pretrained(spec, trust_remote_code=True, dtype=getattr(torch, dtype), **hub)
    check_reranker(model, spec)
    return model.to(PartialState().device).eval()


def check_reranker(model: Any, name: str) -> None:
    """A clear error when ``model`` cannot rerank (e.g. --reranker names an embedder or a plain VLM)."""
    if not callable(getattr(model, "rerank", None)):
        if callable(getattr(model, "encode", None)):
            raise TypeError(f"--reranker {name} is an embedder (it has encode, not rerank): pass it as --model")
        raise TypeError(
            f"--reranker {name}: the loaded {type(model).__name__} has no rerank(query, candidates, mode) method; "
            "pass a UniME-V2 reranker checkpoint"
        )


def mini_mmeb_data(args: EvaluationArguments) -> tuple[Any, dict[str, Any]]:
    """Mini-MMEB's held-out rows (the same rows the training recipes hold out: disjoint in facts from training,
    ``mini_mmeb_num_candidates`` per list) and the built companion sets."""
    from unime_v2.data_builders.mini_mmeb import MiniMMEBConfig, build_mini_mmeb
    from unime_v2.data_builders.mini_mmeb.splits import build_split

    extra = args.mini_mmeb_config or {}
    extra = json.loads(extra) if isinstance(extra, str) else extra
    config = MiniMMEBConfig(**{"seed": args.mini_mmeb_seed, "train_pairs": 0, "eval_queries": 1, **extra})
    heldout = build_split(config, 0, args.mini_mmeb_test_per_task, args.mini_mmeb_num_candidates).heldout
    return heldout, build_mini_mmeb(config)


def suite_sources(args: EvaluationArguments) -> dict[str, list[DatasetSource]]:
    """The datasets of each requested suite, from the data the arguments name."""
    sources: dict[str, list[DatasetSource]] = {suite: [] for suite in args.suites}
    if args.data == MINI_MMEB:
        rows, built = mini_mmeb_data(args)
        companions = mini_mmeb_companion_sources(built)
        for suite in sources:
            sources[suite] += mmeb_sources_from_rows(rows) if suite == "mmeb" else []
            sources[suite] += [s for s in companions if s.suite == suite]
    if args.mmeb_eval and "mmeb" in sources:
        names = [n.strip() for n in args.mmeb_tasks.split(",") if n.strip()] if args.mmeb_tasks else None
        sources["mmeb"] += mmeb_eval_sources(args.mmeb_eval, args.image_root, names=names)
    if args.retrieval_dir:
        if "retrieval" in sources:
            sources["retrieval"] += retrieval_sources(args.retrieval_dir)
        if "sugarcrepe" in sources:
            sources["sugarcrepe"] += sugarcrepe_sources(args.retrieval_dir)
    empty = [suite for suite, found in sources.items() if not found]
    if empty:
        raise ValueError(f"no data for suite(s) {empty}: pass --data mini_mmeb, --mmeb_eval or --retrieval_dir")
    return sources


def check_scored(suites: dict[str, Any]) -> None:
    """A :class:`NothingEvaluatedError` listing each dataset's error when no dataset of any suite was scored."""
    if any(result["per_dataset"] for result in suites.values()):
        return
    errors = [f"  {suite}/{name}: {error}" for suite, r in suites.items() for name, error in r["errors"].items()]
    raise NothingEvaluatedError("no dataset was scored; nothing to report. Errors:\n" + "\n".join(errors))


def evaluated_datasets(args: EvaluationArguments) -> dict[str, str]:
    """The name of the data each suite was evaluated on (a card's ``model-index`` dataset): ``MMEB`` for
    TIGER-Lab/MMEB-eval, ``mini-MMEB``, a Hub id, or a local folder's name."""
    names: dict[str, str] = {}
    if args.data == MINI_MMEB:
        names = {suite: "mini-MMEB" for suite in args.suites}
    if args.mmeb_eval and "mmeb" in args.suites:
        names["mmeb"] = _data_name(args.mmeb_eval)
    return names


def _data_name(source: str) -> str:
    if source.rstrip("/").endswith("MMEB-eval") and not Path(source).is_dir():
        return "MMEB"
    path = Path(source)
    if path.is_dir():
        return path.resolve().parent.name if path.name == "eval" else path.resolve().name
    return source


def run_evaluation(args: EvaluationArguments, model: Any = None, reranker: Any = None) -> dict[str, Any]:
    """Evaluate and (main process) write the output folder; returns the results written to ``results.json``.

    ``model`` / ``reranker`` override loading ``args.model`` / ``args.reranker`` (any object with ``encode`` /
    ``rerank``).
    """
    if args.output_dir is None or (model is None and args.model is None):
        raise ValueError("--model and --output_dir are required")
    import torch

    state = PartialState(cpu=not torch.cuda.is_available())  # the first call sets it up: gloo on CPU-only machines
    check_model_roles(args.model if model is None else None, args.reranker if reranker is None else None)
    with state.main_process_first():  # one evaluation per folder (docs/evaluation.md)
        settings = run_settings(args)
        claim_output_dir(args.output_dir, "evaluation", "examples/evaluate.py", settings, args.overwrite,
                         write=state.is_main_process)  # fmt: skip
    if reranker is None and args.reranker:  # first: a wrong --reranker fails before the embedder loads
        reranker = load_reranker(args.reranker, dtype=args.dtype)
    elif reranker is not None:
        check_reranker(reranker, args.reranker or type(reranker).__name__)
    model = model if model is not None else load_model(args)
    cache_dir = None if args.no_cache else (args.cache_dir or str(default_cache_dir() / "evaluation_embeddings"))
    suites: dict[str, Any] = {}
    image_resize = None
    for suite, sources in suite_sources(args).items():
        evaluator = EVALUATORS[suite](
            sources,
            batch_size=args.batch_size,
            resolution=args.resolution,
            cache_dir=cache_dir,
            reranker=reranker,
            top_k=args.mmeb_top_k if suite == "mmeb" else args.top_k,
            rerank_mode=args.rerank_mode,
            show_progress_bar=args.show_progress_bar and state.is_main_process,
        )
        metrics = evaluator(model)
        image_resize = evaluator.image_resize
        suites[suite] = {
            "metrics": metrics,
            "per_dataset": evaluator.per_dataset,
            "errors": evaluator.errors,
            "top_k": evaluator.top_k if reranker is not None else None,
        }
        if suite == "mmeb":
            suites[suite]["tasks"] = {n: asdict(t) for n, t in evaluator.tasks.items() if n in evaluator.per_dataset}
    check_scored(suites)
    results = {
        "model": args.model or type(model).__name__,
        "revision": args.revision or getattr(getattr(model, "config", None), "_commit_hash", None),
        "reranker": args.reranker or (type(reranker).__name__ if reranker is not None else None),
        "resolution": (
            getattr(getattr(model, "config", None), "eval_resolution", "checkpoint")
            if args.resolution == "model"
            else args.resolution
        ),
        "image_resize": image_resize,
        "settings": {k: v for k, v in asdict(args).items() if k not in ("model", "revision", "reranker")},
        "processes": state.num_processes,
        "suites": suites,
        "datasets": evaluated_datasets(args),
    }
    if state.is_main_process:
        write_report(results, Path(args.output_dir))
    state.wait_for_everyone()
    return results
