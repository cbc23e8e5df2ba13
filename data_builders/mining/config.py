"""Every knob of the hard-negative mining pipeline, in one dataclass (a YAML recipe + command line, ``examples/mine.py``)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..formats.exports import IMAGE_POLICIES, parse_formats
from .hard_negatives import CandidateWindow
from .records import RecordColumns
from .report import judge_health_thresholds
from .retrieval import CORPUS_MODES, POOL_MODES


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
    data: str = _help(
        "mini_mmeb",
        "mini_mmeb (generated, offline), a JSON/JSONL/CSV/Parquet file or a folder of them (one source per file "
        "when the data has no source column), a save_to_disk folder, or a Hub dataset id.",
    )
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
        "pos_text (pos_text), pos_image (pos_image), source (dataset), query_id (none: ids are <source>-<row>), "
        "positives (none: a column listing further positives of each query, texts or {text, image} items).",
    )
    image_root: str | None = _help(None, "Folder that relative image paths start from (MMEB-train: holds images/).")
    corpus: str | None = _help(
        None,
        "A collection of candidates (texts, images or both, with ids) to retrieve negatives from, in any form "
        "data reads; used with pool=corpus or corpus+positives (docs/mining.md, 'A corpus of candidates').",
    )
    corpus_split: str = _help("train", "Split of the corpus.")
    corpus_id_column: str = _help("id", "The corpus column holding each item's id (mined negatives name it).")
    corpus_text_column: str = _help("text", "The corpus column holding texts (may be absent: images only).")
    corpus_image_column: str = _help("image", "The corpus column holding images (may be absent: texts only).")
    corpus_image_root: str | None = _help(None, "Root of the corpus's relative image paths (default image_root).")
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
        "dataset) | target_modality (positives of its positive's modality); docs/method.md §3 | corpus (the items "
        "of --corpus) | corpus+positives (those and all positives).",
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
    range_min: int = _help(
        0, "Skip the range_min most similar retrieved candidates (sentence-transformers' range_min; 0: off)."
    )
    range_max: int | None = _help(
        None, "Take negatives only from the candidates ranked below range_max (range_max; none: all top_k)."
    )
    absolute_margin: float | None = _help(
        None, "Keep a candidate only if its embedder similarity <= the positive's minus this (none: off)."
    )
    relative_margin: float | None = _help(
        None, "Keep a candidate only if its embedder similarity <= the positive's times (1 - this) (none: off)."
    )
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
    export: list[str] | str | None = _help(
        None,
        "Also write the dataset for other trainers, comma-separated: sentence_transformers (Parquet for "
        "DistillKLDivLoss), flagembedding (JSONL); under output_dir/<format>/ (docs/mining.md, 'Exports').",
    )
    export_images: str = _help("skip", "Rows with an image item in those exports: skip | text (texts only).")
    judge_health_thresholds: dict[str, Any] | str | None = _help(
        None,
        "Judge-health warning thresholds (a mapping, or JSON): max_fallback_share (0.05), min_auc_mean (0.6), "
        "max_share_negative_above_positive (none), max_share_positive_below_half (0.5); docs/mining.md.",
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
        self.judge_health_thresholds = judge_health_thresholds(
            _mapping(self.judge_health_thresholds, "judge_health_thresholds")
        )
        self.export = parse_formats(self.export)
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
        if self.corpus and self.pool not in CORPUS_MODES:
            raise ValueError(f"MiningConfig.corpus is set: choose pool from {CORPUS_MODES}, got pool={self.pool!r}")
        if self.pool in CORPUS_MODES and not self.corpus:
            raise ValueError(f"MiningConfig.pool={self.pool!r} needs a corpus (--corpus PATH)")
        if self.corpus and self.image_storage != "embedded":
            raise ValueError("MiningConfig.corpus needs image_storage='embedded'")
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
        if self.export_images not in IMAGE_POLICIES:
            raise ValueError(f"MiningConfig.export_images={self.export_images!r}; choose one of {IMAGE_POLICIES}")
        if self.image_storage not in IMAGE_STORAGES:
            raise ValueError(f"MiningConfig.image_storage={self.image_storage!r}; choose one of {IMAGE_STORAGES}")
        if self.columns.positives and self.image_storage != "embedded":
            raise ValueError("MiningConfig.columns.positives (several positives) needs image_storage='embedded'")
        if self.marker_without_image not in ("image_token", "error"):
            raise ValueError(f"MiningConfig.marker_without_image={self.marker_without_image!r}; image_token | error")
        if self.embedder_prompt_format not in ("official", "chat"):
            raise ValueError(f"MiningConfig.embedder_prompt_format={self.embedder_prompt_format!r}")
        _ = self.window  # validates the rank window and the margins
        if self.push_to_hub:  # before hours of mining, not after
            from unime_v2.hub_cards.publishing import check_repo_id

            check_repo_id(self.push_to_hub)

    @property
    def window(self) -> CandidateWindow:
        """The rank window and margins of the sampler (docs/mining.md, "Sampling knobs")."""
        try:
            return CandidateWindow(self.range_min, self.range_max, self.absolute_margin, self.relative_margin)
        except ValueError as error:
            raise ValueError(f"MiningConfig: {error}") from error

    @property
    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.output_dir) / "cache"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
