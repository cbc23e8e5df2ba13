"""Every knob of the hard-negative mining pipeline, in one dataclass (read from YAML by ``examples/mine.py``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .retrieval import POOL_MODES


EMPTY_POOL_POLICIES = ("error", "skip")


@dataclass
class MiningConfig:
    """Settings of :func:`unime_v2.data_builders.mining.pipeline.mine`.

    Data:
        data: ``"mini_mmeb"`` (generated, offline), a folder written by ``save_to_disk`` (a ``Dataset`` or a
            ``DatasetDict``), or a Hub dataset id.
        data_split: split to mine (``train``).
        data_subsets: Hub dataset configs to mine and concatenate (MMEB-train: one per source dataset); the subset
            name becomes the ``source`` when the data has no source column.
        mini_mmeb: keyword arguments of ``MiniMMEBConfig`` when ``data == "mini_mmeb"``.
        query_text_column, query_image_column, pos_text_column, pos_image_column, source_column, query_id_column:
            column names (mini-MMEB / MMEB-train: ``qry``, ``qry_image``/``qry_image_path``, ``pos_text``,
            ``pos_image``/``pos_image_path``, ``dataset``); ``query_id_column=None`` makes ids ``<source>-<row>``.
        image_root: folder that relative image paths start from (MMEB-train's root holding ``images/``).
        max_queries: mine only the first N records (smoke runs).

    Embedder (global retrieval):
        embedder: a UniME-V2 checkpoint, a plain VLM checkpoint (wrapped with ``UniMEV2Model.from_backbone``), or
            ``tiny:<kind>[:<seed>]`` for a tiny random backbone built on the fly.
        embedder_prompt_format: ``official`` (VLM2Vec/UniME-V2 released checkpoints) or ``chat``.
        marker_without_image: see the field's help.
        embedder_dtype, embed_batch_size: precision and batch size of the embedder.
        embed_chunk_size: items per cached embedding file.

    Retrieval:
        pool: ``global`` (all positives: the paper's global retrieval, default), ``dataset`` (positives of the
            query's own source dataset) or ``target_modality`` (positives of the same modality as its own).
        delta: candidates with ``cos >= delta`` are dropped (near-duplicates / likely false negatives).
        top_k: candidates kept per query (50 in the paper).
        faiss_gpu: use a faiss GPU index when faiss has GPUs.

    Judge:
        judge: checkpoint of the judge (Qwen2.5-VL-7B-Instruct in the paper) or ``tiny:<kind>[:<seed>]``.
        judge_dtype, judge_batch_size: precision and candidates per forward pass.
        judge_min_pixels, judge_max_pixels: the Qwen-VL processor's pixel budget for the judge.
        judge_attn_implementation: e.g. ``sdpa`` or ``flash_attention_2`` (``None``: the model's default).
        prefix_sharing: run the query prefix once per query (exact; see ``JudgeScorer``).

    Sampling (docs/method.md §3):
        beta: false negative if ``s > s_pos - beta`` (default 0.001: the authors' released sample keeps
            negatives 0.0038 below s_pos, so their β was at most that; docs/method.md §3).
        num_negatives: negatives stored per query (10).
        interval: step of the cyclical sampling (5).
        seed: seeds the fallback draw and the tiny backbones.
        on_empty_pool: ``error`` (raise, naming the queries) or ``skip`` (leave them out, listed in the report).

    Run:
        output_dir: dataset, report, histogram and (optional) authors' JSON go here.
        cache_dir: embeddings, retrieval results, judge shards and tiny backbones (default ``output_dir/cache``).
        shard_size: queries per judge-score shard (the unit of resumption).
        authors_json: also export ``mined.json`` in the authors' format.
        authors_json_image_root: where that JSON's relative image paths point (default: ``image_root`` if set,
            else ``output_dir/authors_json``; images without a file there are written there).
        progress: show tqdm progress bars.
    """

    data: str = "mini_mmeb"
    data_split: str = "train"
    data_subsets: list[str] | None = None
    mini_mmeb: dict[str, Any] = field(default_factory=dict)
    query_text_column: str = "qry"
    query_image_column: str = "qry_image"
    pos_text_column: str = "pos_text"
    pos_image_column: str = "pos_image"
    source_column: str = "dataset"
    query_id_column: str | None = None
    image_root: str | None = None
    max_queries: int | None = None

    embedder: str = "tiny:qwen2_vl"
    embedder_prompt_format: str = "official"
    embedder_dtype: str = "float32"
    marker_without_image: str = field(
        default="image_token",
        metadata={
            "help": "A text with an image marker but no image (MMEB-train WebQA queries): image_token (the "
            "backbone's image token as text, no pixels; what the authors' code did) | error (refuse it)."
        },
    )
    embed_batch_size: int = 16
    embed_chunk_size: int = 1024

    pool: str = "global"
    delta: float = 0.95
    top_k: int = 50
    faiss_gpu: bool = True

    judge: str = "tiny:qwen2_5_vl"
    judge_dtype: str = "float32"
    judge_batch_size: int = 64
    judge_min_pixels: int | None = None
    judge_max_pixels: int | None = None
    judge_attn_implementation: str | None = None
    prefix_sharing: bool = True

    beta: float = 0.001
    num_negatives: int = 10
    interval: int = 5
    seed: int = 0
    on_empty_pool: str = "error"

    output_dir: str = "mined"
    cache_dir: str | None = None
    shard_size: int = 64
    authors_json: bool = True
    authors_json_image_root: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and its value."""
        if self.pool not in POOL_MODES:
            raise ValueError(f"MiningConfig.pool={self.pool!r}; choose one of {POOL_MODES}")
        if self.on_empty_pool not in EMPTY_POOL_POLICIES:
            raise ValueError(f"MiningConfig.on_empty_pool={self.on_empty_pool!r}; choose one of {EMPTY_POOL_POLICIES}")
        if not -1.0 < self.delta <= 1.0:
            raise ValueError(f"MiningConfig.delta={self.delta!r} must be a cosine threshold in (-1, 1]")
        for name in (
            "top_k",
            "num_negatives",
            "interval",
            "shard_size",
            "embed_batch_size",
            "embed_chunk_size",
            "judge_batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MiningConfig.{name} must be an int >= 1, got {value!r}")
        if self.max_queries is not None and self.max_queries < 1:
            raise ValueError(f"MiningConfig.max_queries must be >= 1 or None, got {self.max_queries!r}")
        if self.marker_without_image not in ("image_token", "error"):
            raise ValueError(f"MiningConfig.marker_without_image={self.marker_without_image!r}; image_token | error")
        if self.embedder_prompt_format not in ("official", "chat"):
            raise ValueError(f"MiningConfig.embedder_prompt_format={self.embedder_prompt_format!r}")

    @property
    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.output_dir) / "cache"

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> MiningConfig:
        """Read a YAML file of field values; ``overrides`` (e.g. ``output_dir``) win. Unknown keys raise."""
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{path}: unknown MiningConfig field(s) {unknown}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
