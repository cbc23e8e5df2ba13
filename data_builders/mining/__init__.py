"""Stage 1 of the method: mine judge-scored hard negatives (retrieval -> MLLM judge -> sampling; docs/mining.md)."""

from .config import MiningConfig
from .embedding_cache import EmbeddingCache
from .hard_negatives import HardNegativeSampler, SampledNegatives, cyclical_order
from .models import load_judge
from .pipeline import MiningResult, load_source, mine
from .records import ImageRef, Item, QueryRecord, RecordColumns, load_query_records
from .report import negative_statistics, plot_score_histogram, score_summary, write_report
from .retrieval import POOL_MODES, CandidatePools, RetrievalResult, build_pools, retrieve
from .shards import ShardStore


__all__ = [
    "CandidatePools",
    "EmbeddingCache",
    "HardNegativeSampler",
    "ImageRef",
    "Item",
    "MiningConfig",
    "MiningResult",
    "POOL_MODES",
    "QueryRecord",
    "RecordColumns",
    "RetrievalResult",
    "SampledNegatives",
    "ShardStore",
    "build_pools",
    "cyclical_order",
    "load_judge",
    "load_query_records",
    "load_source",
    "mine",
    "negative_statistics",
    "plot_score_histogram",
    "retrieve",
    "score_summary",
    "write_report",
]
