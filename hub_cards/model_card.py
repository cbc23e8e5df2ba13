"""Model cards for trained UniME-V2 embedders, rendered with ``huggingface_hub.ModelCard``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .markdown import markdown_table


TEMPLATE = Path(__file__).with_name("embedder_model_card.md")
RERANKER_TEMPLATE = Path(__file__).with_name("reranker_model_card.md")


def _card_data(config: Any, pipeline_tag: str, tags: list[str], datasets: list[str] | None) -> ModelCardData:
    """Card metadata; ``base_model`` is the backbone's Hub id when it was loaded from the Hub."""
    name = getattr(config.backbone_config, "_name_or_path", "") or None
    return ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=["unime-v2", *tags, config.backbone_config.model_type],
        base_model=name if name and "/" in name and not name.startswith("/") else None,
        datasets=datasets,
        license="apache-2.0",
    )


def _render(
    template: Path,
    card_data: ModelCardData,
    repo_id: str,
    training: Mapping[str, Any],
    metrics: Mapping[str, float] | None,
    **variables: Any,
) -> ModelCard:
    """Fill ``template`` with the repo name, the training and metrics tables and the model's ``variables``."""
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        training_table=markdown_table(training, ("setting", "value")),
        metrics_table=markdown_table(metrics, ("metric", "value")) if metrics else "",
        **variables,
    )


def build_embedder_card(
    config: Any,
    repo_id: str,
    training: Mapping[str, Any],
    metrics: Mapping[str, float] | None = None,
    datasets: list[str] | None = None,
) -> ModelCard:
    """Render the card of a trained embedder from its ``UniMEV2Config``, training settings and metrics."""
    card_data = _card_data(config, "feature-extraction", ["multimodal-embedding", "mmeb"], datasets)
    return _render(
        TEMPLATE,
        card_data,
        repo_id,
        training,
        metrics,
        backbone_type=config.backbone_type,
        prompt_format=config.prompt_format,
        normalize=config.normalize,
        image_resize=config.image_resize or "none (pixel budget only)",
        tau=config.tau,
    )


def build_reranker_card(
    config: Any,
    repo_id: str,
    training: Mapping[str, Any],
    metrics: Mapping[str, float] | None = None,
    datasets: list[str] | None = None,
) -> ModelCard:
    """Render the card of a trained reranker from its ``UniMEV2RerankerConfig``, training settings and metrics."""
    backbone_type = config.backbone_config.model_type
    card_data = _card_data(config, "image-text-to-text", ["reranker", "mmeb"], datasets)
    return _render(
        RERANKER_TEMPLATE,
        card_data,
        repo_id,
        training,
        metrics,
        backbone_type=backbone_type,
        pair_format=config.pair_format,
        pairwise_prompt=config.pairwise_prompt,
        listwise_prompt=config.listwise_prompt,
        yes_token=config.yes_token,
        no_token=config.no_token,
    )
