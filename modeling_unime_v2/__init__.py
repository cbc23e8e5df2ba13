"""UniME-V2 models as flat Hub remote code: they import only torch, transformers and each other.

The embedder (``UniMEV2Model`` + ``UniMEV2Processor``) and the reranker (``UniMEV2Reranker`` +
``UniMEV2RerankerProcessor``: pairwise P(Yes) and listwise; the MLLM judge of mining is a reranker in the judge
layout), with the reranker's forward engine ``JudgeScorer`` (P(Yes) from one forward, the query prefix shared
across candidates)."""

from .configuration_unime_v2 import IMAGE_MARKER, SUPPORTED_BACKBONES, UniMEV2Config
from .configuration_unime_v2_reranker import (
    JUDGE_PROMPT,
    RERANK_EVAL_IMAGES,
    RERANK_LIST_PROMPT,
    RERANK_PAIR_PROMPT_RELEASED,
    UniMEV2RerankerConfig,
)
from .modeling_unime_v2 import (
    UniMEV2Model,
    UniMEV2Output,
    UniMEV2PreTrainedModel,
    cosine_similarity,
    last_token_indices,
    official_position_ids,
)
from .modeling_unime_v2_reranker import RerankResult, UniMEV2Reranker, parse_answer
from .processing_unime_v2 import UniMEV2Processor, as_item, load_item_image, set_pixel_budget, with_instruction
from .processing_unime_v2_reranker import (
    JUDGE_TEMPLATE,
    RERANK_TEMPLATE,
    EncodedPairs,
    PairTemplate,
    UniMEV2RerankerProcessor,
    answer_token_id,
    remove_image_markers,
)
from .scoring_unime_v2 import DEFAULT_JUDGE, JudgeScorer


__all__ = [
    "DEFAULT_JUDGE",
    "JUDGE_PROMPT",
    "JUDGE_TEMPLATE",
    "RERANK_EVAL_IMAGES",
    "RERANK_LIST_PROMPT",
    "RERANK_PAIR_PROMPT_RELEASED",
    "RERANK_TEMPLATE",
    "EncodedPairs",
    "PairTemplate",
    "RerankResult",
    "UniMEV2Reranker",
    "UniMEV2RerankerConfig",
    "UniMEV2RerankerProcessor",
    "parse_answer",
    "JudgeScorer",
    "answer_token_id",
    "remove_image_markers",
    "set_pixel_budget",
    "IMAGE_MARKER",
    "SUPPORTED_BACKBONES",
    "UniMEV2Config",
    "UniMEV2Model",
    "UniMEV2Output",
    "UniMEV2PreTrainedModel",
    "UniMEV2Processor",
    "cosine_similarity",
    "last_token_indices",
    "load_item_image",
    "as_item",
    "with_instruction",
    "official_position_ids",
]
