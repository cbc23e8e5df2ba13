"""UniME-V2 models as flat Hub remote code: they import only torch, transformers and each other.

The embedder (``UniMEV2Model``), the reranker (``UniMEV2Reranker``, pairwise P(Yes) and listwise) and the MLLM
judge's scoring core they share (``JudgeScorer``: P(Yes) from one forward, the
query prefix shared across candidates), which the mining pipeline and the judge trainer use."""

from .configuration_unime_v2 import IMAGE_MARKER, SUPPORTED_BACKBONES, UniMEV2Config
from .configuration_unime_v2_reranker import UniMEV2RerankerConfig
from .modeling_unime_v2 import (
    UniMEV2Model,
    UniMEV2Output,
    UniMEV2PreTrainedModel,
    cosine_similarity,
    last_token_indices,
    official_position_ids,
)
from .modeling_unime_v2_reranker import RerankResult, UniMEV2Reranker, parse_answer
from .processing_unime_v2 import UniMEV2Processor, as_item, load_item_image, with_instruction
from .prompting_unime_v2 import (
    JUDGE_PROMPT,
    JUDGE_TEMPLATE,
    RERANK_LIST_PROMPT,
    RERANK_PAIR_PROMPT_RELEASED,
    RERANK_TEMPLATE,
    PairTemplate,
    PrefixNotShared,
    render_pair,
)
from .scoring_unime_v2 import DEFAULT_JUDGE, JudgeScorer, answer_token_id, set_pixel_budget


__all__ = [
    "DEFAULT_JUDGE",
    "JUDGE_PROMPT",
    "JUDGE_TEMPLATE",
    "RERANK_LIST_PROMPT",
    "RERANK_PAIR_PROMPT_RELEASED",
    "RERANK_TEMPLATE",
    "PairTemplate",
    "RerankResult",
    "UniMEV2Reranker",
    "UniMEV2RerankerConfig",
    "parse_answer",
    "JudgeScorer",
    "PrefixNotShared",
    "answer_token_id",
    "render_pair",
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
