"""Dataset cards for mined hard-negative datasets, rendered with ``huggingface_hub.DatasetCard``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

from .markdown import markdown_rows
from .model_card import CITATION, MINING_SETTINGS


TEMPLATE = Path(__file__).with_name("mined_dataset_card.md")


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def _judge_health_rows(health: Mapping[str, Any] | None) -> str:
    """The report's judge-health figures and warnings as table rows (docs/mining.md, "Judge health")."""
    if not health:
        return "| (not in this report) | |"
    figures = {key: value for key, value in health.items() if key not in ("thresholds", "warnings")}
    figures["warnings"] = "; ".join(health.get("warnings", [])) or "none"
    return markdown_rows(figures)


def build_mined_dataset_card(
    report: Mapping[str, Any],
    repo_id: str,
    pretty_name: str | None = None,
    splits: Sequence[str] = ("train",),
) -> DatasetCard:
    """Render the card of a mined dataset from a mining report (``MiningResult.report``).

    The card records the embedder, the judge, δ, β, top_k, the number of negatives, the interval, the seed and
    the report's counts and timings; the same settings go into the YAML metadata under ``unime_v2_mining``. Its
    ``configs:`` point each of ``splits`` at the parquet shards ``data/<split>-*`` (the layout
    ``Dataset.push_to_hub`` writes), so ``load_dataset(repo_id)`` reads them.
    """
    settings = dict(report["settings"])
    card_data = DatasetCardData(
        license="apache-2.0",
        pretty_name=pretty_name or repo_id.split("/")[-1],
        task_categories=["feature-extraction"],
        tags=["unime-v2", "hard-negative-mining", "mllm-as-a-judge", "multimodal-embedding"],
        size_categories=_size_category(int(report["counts"].get("queries", 0))),
        unime_v2_mining={key: settings[key] for key in MINING_SETTINGS},
        configs=[
            {"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits]},
        ],
    )
    return DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        pretty_name=card_data.pretty_name,
        repo_id=repo_id,
        settings_rows=markdown_rows(settings),
        count_rows=markdown_rows(report["counts"]),
        judge_health_rows=_judge_health_rows(report.get("judge_health")),
        timing_rows=markdown_rows(report["timings_s"]),
        citation=CITATION,
        **settings,  # the template reads embedder, judge, judge_dtype, pool, delta, top_k, beta, interval, …
    )
