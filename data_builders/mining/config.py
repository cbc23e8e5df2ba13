"""Every knob of the hard-negative mining pipeline, in one dataclass (a YAML recipe + command line, ``examples/mine.py``)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import RecordColumns
from .retrieval import POOL_MODES


EMPTY_POOL_POLICIES = ("error", "skip")
IMAGE_STORAGES = ("embedded", "reference")


def _help(default: Any, text: str) -> Any:
    """A dataclass field with a default and the ``--help`` text the script parser shows."""
    return field(default=default, metadata={"help": text})


def _mapping(value: Any, name: str) -> dict[str, Any]:
    """A mapping given as a dict (YAML), a JSON string (command line) or ``None`` (empty)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"MiningConfig.{name}: not a JSON mapping: {value!r} ({error})") from error
    if not isinstance(value, dict):
        raise ValueError(f"MiningConfig.{name} must be a mapping, got {type(value).__name__}")
    return dict(value)


@dataclass
class MiningConfig:
    """Settings of :func:`unime_v2.data_builders.mining.pipeline.mine` (docs/mining.md; the sampling rules:
    docs/method.md §3). ``examples/mine.py`` reads them from a YAML recipe (``--config``) and the command line."""

    # ---- data
    data: str = _help("mini_mmeb", "mini_mmeb (generated, offline), a save_to_disk folder, or a Hub dataset id.")
    data_split: str = _help("train", "Split to mine.")
    data_subsets: list[str] | None = _help(
        None,
        "Hub dataset configs to mine and concatenate (MMEB-train: one per source dataset; the name becomes "
        "the source when the data has no source column).",
    )
    mini_mmeb: dict[str, Any] | str | None = _help(
        None, "MiniMMEBConfig fields (a mapping, or JSON) for data=mini_mmeb."
    )
    columns: RecordColumns | str | None = _help(
        None,
        "Column names, a mapping (or JSON) of RecordColumns fields: query_text (qry), query_image (qry_image), "
        "pos_text (pos_text), pos_image (pos_image), source (dataset), query_id (none: ids are <source>-<row>).",
    )
    image_root: str | None = _help(None, "Folder that relative image paths start from (MMEB-train: holds images/).")
    max_queries: int | None = _help(None, "Mine only the first N records (smoke runs).")
    # ---- embedder (global retrieval)
    embedder: str = _help(
        "tiny:qwen2_vl",
        "A UniME-V2 checkpoint, a plain VLM checkpoint (wrapped with UniMEV2Model.from_backbone), a PEFT adapter "
        "folder or Hub repo (VLM2Vec's layout: merged into embedder_base), or tiny:<kind>[:<seed>].",
    )
    embedder_base: str | None = _help(
        None,
        "Base VLM of an embedder given as a PEFT adapter folder (VLM2Vec's published layout, adapter_config.json); "
        "none: the adapter's base_model_name_or_path. VLM2Vec-Qwen2VL-7B: Qwen/Qwen2-VL-7B-Instruct (docs/mining.md).",
    )
    embedder_prompt_format: str = _help("official", "official (VLM2Vec / UniME-V2 released checkpoints) | chat.")
    embedder_dtype: str = _help("float32", "Embedder weights dtype.")
    marker_without_image: str = _help(
        "image_token",
        "A text with an image marker but no image (MMEB-train WebQA queries): image_token (the backbone's image "
        "token as text, no pixels; what the authors' code did) | error (refuse it).",
    )
    embed_batch_size: int = _help(16, "Items per embedder forward.")
    embed_chunk_size: int = _help(1024, "Items per cached embedding file (the unit of resumption).")
    embed_num_workers: int = _help(
        0,
        "DataLoader worker processes that prepare the embedder's batches (image loading, resizing, tokenisation) "
        "while it runs; 0: in the main process. The embeddings are the same.",
    )
    # ---- retrieval
    pool: str = _help(
        "global",
        "Candidate pool of a query: global (all positives: the paper's global retrieval) | dataset (its own source "
        "dataset) | target_modality (positives of its positive's modality); docs/method.md §3.",
    )
    delta: float = _help(0.95, "Candidates with cos >= delta are dropped (near-duplicates, likely false negatives).")
    top_k: int = _help(50, "Candidates kept per query (paper: 50).")
    faiss_gpu: bool = _help(True, "Use a faiss GPU index when faiss has GPUs.")
    # ---- judge
    judge: str = _help(
        "tiny:qwen2_5_vl", "The judge checkpoint (paper: Qwen2.5-VL-7B-Instruct) or tiny:<kind>[:<seed>]."
    )
    judge_dtype: str = _help("float32", "Judge weights dtype.")
    judge_batch_size: int = _help(64, "Candidates per judge forward.")
    judge_min_pixels: int | None = _help(None, "Qwen-VL pixel budget of the judge, lower bound.")
    judge_max_pixels: int | None = _help(None, "Qwen-VL pixel budget of the judge, upper bound.")
    judge_attn_implementation: str | None = _help(None, "e.g. sdpa or flash_attention_2 (none: the model's default).")
    prefix_sharing: bool = _help(True, "Run each query's prefix once and its candidates as suffixes (exact).")
    judge_queries_per_forward: int = _help(
        1,
        "Queries whose prefixes run as one batch and whose candidates run in one forward (prefix sharing; equal to "
        "one query at a time up to rounding). 16 fills an H200 with a 7B judge (BENCHMARKS.md); 1: one at a time.",
    )
    # ---- sampling
    beta: float = _help(
        0.001,
        "False negative if s > s_pos - beta (the authors' released sample keeps negatives 0.0038 below s_pos, so "
        "their beta was at most that; docs/method.md §3).",
    )
    num_negatives: int = _help(10, "Negatives stored per query (paper: 10).")
    interval: int = _help(5, "Step of the cyclical sampling (paper: 5).")
    seed: int = _help(0, "Seeds the fallback draw.")
    on_empty_pool: str = _help("error", "A query with no candidate: error (raise, naming it) | skip (reported).")
    # ---- run
    output_dir: str = _help("mined", "Dataset, report, histogram and the authors' JSON go here.")
    cache_dir: str | None = _help(
        None, "Embeddings, retrieval results and judge shards (default output_dir/cache): the resume state."
    )
    shard_size: int = _help(64, "Queries per judge-score shard (the unit of resumption).")
    authors_json: bool = _help(True, "Also export mined.json in the authors' format.")
    authors_json_image_root: str | None = _help(
        None, "Where that JSON's relative image paths point (default image_root, else output_dir/authors_json)."
    )
    image_storage: str = _help(
        "embedded",
        "embedded: the dataset folder holds every image's bytes (self-contained; save_to_disk); reference: image "
        "files stay where they are (the Image columns hold their absolute path under image_root, *_image_path the "
        "relative one) and the dataset folder holds Parquet files; push_to_hub embeds them shard by shard. Images "
        "that come as bytes (no file) are always stored as bytes.",
    )
    rows_per_part: int = _help(
        10_000, "Mined rows per Arrow part file written while assembling (bounds what is held in memory)."
    )
    progress: bool = _help(True, "Show progress bars.")
    push_to_hub: str | None = _help(None, "Push the mined dataset with its card to this Hub repo id (one commit).")

    def __post_init__(self) -> None:
        self.mini_mmeb = _mapping(self.mini_mmeb, "mini_mmeb")
        if not isinstance(self.columns, RecordColumns):
            columns = _mapping(self.columns, "columns")
            unknown = sorted(set(columns) - {f.name for f in dataclasses.fields(RecordColumns)})
            if unknown:
                raise ValueError(f"MiningConfig.columns: unknown column setting(s) {unknown}")
            self.columns = RecordColumns(**columns)
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
            "judge_queries_per_forward",
            "rows_per_part",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MiningConfig.{name} must be an int >= 1, got {value!r}")
        workers = self.embed_num_workers
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"MiningConfig.embed_num_workers must be an int >= 0, got {workers!r}")
        if self.max_queries is not None and self.max_queries < 1:
            raise ValueError(f"MiningConfig.max_queries must be >= 1 or None, got {self.max_queries!r}")
        if self.image_storage not in IMAGE_STORAGES:
            raise ValueError(f"MiningConfig.image_storage={self.image_storage!r}; choose one of {IMAGE_STORAGES}")
        if self.marker_without_image not in ("image_token", "error"):
            raise ValueError(f"MiningConfig.marker_without_image={self.marker_without_image!r}; image_token | error")
        if self.embedder_prompt_format not in ("official", "chat"):
            raise ValueError(f"MiningConfig.embedder_prompt_format={self.embedder_prompt_format!r}")
        if self.push_to_hub:  # before hours of mining, not after
            from unime_v2.hub_cards.publishing import check_repo_id

            check_repo_id(self.push_to_hub)

    @property
    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.output_dir) / "cache"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
