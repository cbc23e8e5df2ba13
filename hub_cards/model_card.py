"""Model cards of UniME-V2 embedders and rerankers, rendered with ``huggingface_hub.ModelCard``.

A card is filled from the artifact itself: the saved config, the training record the trainers write next to the
weights (:data:`TRAINING_RECORD`: LoRA and optimisation settings, training data, the mining report of that data,
library versions), and optionally an evaluation ``results.json`` (``model-index``). docs/publishing.md shows the
whole route to the Hub.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .markdown import markdown_grid, markdown_table


TEMPLATE = Path(__file__).with_name("embedder_model_card.md")
RERANKER_TEMPLATE = Path(__file__).with_name("reranker_model_card.md")
TRAINING_RECORD = "unime_v2_training.json"
"""Written next to a trained model by the trainers: what its card records about the training run."""
LIBRARIES = ("unime_v2", "torch", "transformers", "peft", "accelerate", "datasets", "huggingface_hub")
MINING_SETTINGS = ("embedder", "judge", "delta", "beta", "top_k", "num_negatives", "interval", "seed", "pool")
CITATION = """@misc{gu2025unimev2mllmasajudgeuniversalmultimodal,
      title={UniME-V2: MLLM-as-a-Judge for Universal Multimodal Embedding Learning},
      author={Tiancheng Gu and Kaicheng Yang and Kaichen Zhang and Xiang An and Ziyong Feng and Yueyi Zhang and Weidong Cai and Jiankang Deng and Lidong Bing},
      year={2025},
      eprint={2510.13515},
      archivePrefix={arXiv},
      primaryClass={cs.CV},
      url={https://arxiv.org/abs/2510.13515},
}"""  # noqa: E501  (the paper's BibTeX entry, as its authors publish it)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a card records (those not installed are left out)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def hub_id(name: str | None) -> str | None:
    """``name`` when it reads as a Hub id (``owner/name``, not a local path), else ``None``."""
    name = name or ""
    return name if "/" in name and not name.startswith(("/", ".", "~")) and not Path(name).exists() else None


def hub_base_model(config: Any) -> str | None:
    """The backbone's Hub id when it was loaded from the Hub (``owner/name``), else ``None`` (a local folder)."""
    return hub_id(getattr(config.backbone_config, "_name_or_path", None))


def mining_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The judge and mining settings and the counts of a mining ``report.json``, as a card shows them."""
    settings = report.get("settings", {})
    summary = {key: settings[key] for key in MINING_SETTINGS if key in settings}
    summary.update({f"count: {key}": value for key, value in report.get("counts", {}).items()})
    return summary


def _card_data(
    config: Any,
    pipeline_tag: str,
    tags: list[str],
    datasets: Sequence[str] | None,
    model_name: str,
    base_model: str | None,
    evals: Sequence[EvalResult] | None,
) -> ModelCardData:
    return ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=["unime-v2", *tags, config.backbone_config.model_type],
        base_model=base_model or hub_base_model(config),
        datasets=list(datasets) if datasets else None,
        license="apache-2.0",
        model_name=model_name if evals else None,
        eval_results=list(evals) if evals else None,
    )


def _eval_table(evals: Sequence[EvalResult]) -> str:
    rows = [(e.dataset_name, e.dataset_config, e.metric_name, e.metric_value) for e in evals]
    return markdown_grid(("dataset", "subset", "metric", "value (%)"), rows)


def _render(
    template: Path,
    config: Any,
    repo_id: str,
    training: Mapping[str, Any],
    metrics: Mapping[str, float] | None,
    card_options: Mapping[str, Any],
    **variables: Any,
) -> ModelCard:
    """The one renderer of both model cards: metadata, the training, mining, metric and version tables, the
    citation and ``variables`` of the template."""
    evals = card_options.get("eval_results") or None
    mining = card_options.get("mining") or None
    card_data = _card_data(
        config,
        variables.pop("pipeline_tag"),
        variables.pop("tags"),
        card_options.get("datasets"),
        repo_id.split("/")[-1],
        card_options.get("base_model"),
        evals,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        training_table=markdown_table(training, ("setting", "value")),
        metrics_table=markdown_table(metrics, ("metric", "value")) if metrics else "",
        eval_table=_eval_table(evals) if evals else "",
        mining_table=markdown_table(mining, ("setting", "value")) if mining else "",
        versions_table=markdown_table(card_options.get("versions") or library_versions(), ("library", "version")),
        citation=CITATION,
        **variables,
    )


def build_embedder_card(
    config: Any,
    repo_id: str,
    training: Mapping[str, Any],
    metrics: Mapping[str, float] | None = None,
    datasets: Sequence[str] | None = None,
    **card_options: Any,
) -> ModelCard:
    """Render the card of a trained embedder from its ``UniMEV2Config``, training settings and metrics.

    ``card_options``: ``eval_results`` (``EvalResult`` list → ``model-index`` and an evaluation table), ``mining``
    (:func:`mining_summary` of the training data), ``versions`` (library versions at training time; default: the
    installed ones) and ``base_model`` (the backbone's Hub id).
    """
    return _render(
        TEMPLATE,
        config,
        repo_id,
        training,
        metrics,
        {"datasets": datasets, **card_options},
        pipeline_tag="feature-extraction",
        tags=["multimodal-embedding", "mmeb"],
        backbone_type=config.backbone_type,
        prompt_format=config.prompt_format,
        normalize=config.normalize,
        image_resize=config.image_resize or "none (pixel budget only)",
        tau=config.tau,
        query_instruction=getattr(config, "query_instruction", ""),
        candidate_instruction=getattr(config, "candidate_instruction", ""),
    )


def build_reranker_card(
    config: Any,
    repo_id: str,
    training: Mapping[str, Any],
    metrics: Mapping[str, float] | None = None,
    datasets: Sequence[str] | None = None,
    **card_options: Any,
) -> ModelCard:
    """Render the card of a trained reranker from its ``UniMEV2RerankerConfig`` (``card_options`` as for
    :func:`build_embedder_card`)."""
    return _render(
        RERANKER_TEMPLATE,
        config,
        repo_id,
        training,
        metrics,
        {"datasets": datasets, **card_options},
        pipeline_tag="image-text-to-text",
        tags=["reranker", "mmeb"],
        backbone_type=config.backbone_config.model_type,
        pair_format=config.pair_format,
        pairwise_prompt=config.pairwise_prompt,
        listwise_prompt=config.listwise_prompt,
        yes_token=config.yes_token,
        no_token=config.no_token,
    )


# ------------------------------------------------------------------------------------------- the training record
def training_record(
    training: Mapping[str, Any],
    train_data: str | None,
    metrics: Mapping[str, float] | None = None,
    base_model: str | None = None,
) -> dict[str, Any]:
    """What a trainer records for the card: settings, data (Hub id or folder), the data's mining report, versions.

    A mined dataset folder carries its ``report.json`` next to it (``mine`` writes ``<out>/dataset`` and
    ``<out>/report.json``); its judge and mining settings and counts go into the card.
    """
    report = find_mining_report(train_data) if train_data else None
    hub_data = hub_id(train_data)
    return {
        "training": dict(training),
        "train_data": train_data,
        "datasets": [hub_data] if hub_data else [],
        "mining": mining_summary(report) if report else None,
        "metrics": dict(metrics or {}),
        "base_model": base_model,
        "versions": library_versions(),
    }


def mining_report_file(data: str | Path) -> Path | None:
    """Where the mining ``report.json`` of a mined dataset folder is (in it or its parent), or ``None``."""
    path = Path(data)
    if not path.exists():
        return None
    return next((c for c in (path / "report.json", path.parent / "report.json") if c.is_file()), None)


def find_mining_report(data: str | Path) -> dict[str, Any] | None:
    """The mining ``report.json`` of a mined dataset folder (:func:`mining_report_file`), or ``None``."""
    path = mining_report_file(data)
    return json.loads(path.read_text()) if path else None


def write_model_card(
    folder: str | Path,
    artifact: str,
    repo_id: str,
    record: Mapping[str, Any] | None = None,
    evals: Sequence[EvalResult] | None = None,
) -> ModelCard:
    """Write ``README.md`` (and, when ``record`` is given, :data:`TRAINING_RECORD`) of the saved model in ``folder``.

    Without ``record`` the folder's own training record is read (none: the card says so). The config is read with
    this package's config classes, so nothing from the folder is executed.
    """
    from unime_v2.modeling_unime_v2 import UniMEV2Config, UniMEV2RerankerConfig

    folder = Path(folder)
    if record is not None:
        (folder / TRAINING_RECORD).write_text(json.dumps(record, indent=2, default=str))
    elif (folder / TRAINING_RECORD).is_file():
        record = json.loads((folder / TRAINING_RECORD).read_text())
    record = record or {"training": {"training": "not recorded (no unime_v2_training.json)"}}
    build = build_embedder_card if artifact == "embedder" else build_reranker_card
    config_class = UniMEV2Config if artifact == "embedder" else UniMEV2RerankerConfig
    card = build(
        config_class.from_pretrained(str(folder)),
        repo_id,
        record["training"],
        record.get("metrics") or None,
        record.get("datasets") or None,
        eval_results=evals,
        mining=record.get("mining"),
        versions=record.get("versions"),
        base_model=record.get("base_model"),
    )
    card.save(folder / "README.md")
    return card
