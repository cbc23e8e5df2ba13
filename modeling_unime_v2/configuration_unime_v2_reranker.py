"""Configuration of the UniME-V2-Reranker (Hub remote code: imports only transformers and its siblings)."""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

from .configuration_unime_v2 import SUPPORTED_BACKBONES


JUDGE_PROMPT = (
    "I will provide you with a query and a candidate. Please evaluate whether the candidate meets the requirements "
    "of the query. If it does, respond with 'Yes'; if it doesn't, respond with 'No'."
)
"""The paper's MLLM-as-a-Judge instruction (docs/method.md §2)."""
RERANK_PAIR_PROMPT = JUDGE_PROMPT
"""The released reranker's pairwise instruction: the judge's."""
RERANK_PAIR_PROMPT_RELEASED = RERANK_PAIR_PROMPT.replace("doesn't, respond", "doesn't, responed")
"""The pairwise instruction exactly as in the authors' released training data (with their typo "responed")."""
RERANK_LIST_PROMPT = (
    "I will provide you with a query followed by multiple candidates in the format: (1) cand1 (2) cand2, etc. "
    "Each candidate is independent of the others. Evaluate each candidate against the query, and respond with the "
    "number corresponding to the candidate that best meets the requirements of the query."
)
"""The listwise instruction (answer ``Ans: (i)``, 1-based)."""
PAIR_FORMATS = ("reranker", "judge")
RERANK_EVAL_IMAGES = {"image_resize": 1344, "min_pixels": 4 * 28 * 28, "max_pixels": 300 * 28 * 28}
"""The image settings of the authors' rerank evaluation: every image resized to 1344², then scaled into
[4, 300] · 28² pixels (a 640×480 image becomes 476×476: 289 image tokens for Qwen2.5-VL; docs/reranker.md)."""


class UniMEV2RerankerConfig(PretrainedConfig):
    r"""Configuration of :class:`UniMEV2Reranker`: a generative VLM answering a prompt about a query and candidate(s).

    Args:
        backbone_config (`dict` or `PretrainedConfig`): the wrapped VLM's config (Qwen2.5-VL, Qwen2-VL or
            LLaVA-OneVision), nested so the checkpoint is self-contained.
        pair_format (`str`): the pairwise layout: ``"reranker"`` (the released reranker: ``<prompt>Query:<q>
            Candidate:<c>``) or ``"judge"`` (the paper's mining judge: ``<prompt> Query:<q>, Candidates:<c>.``).
        pairwise_prompt (`str`, *optional*): the pairwise instruction (default: the paper's, for both layouts).
        listwise_prompt (`str`): the listwise instruction (answer ``Ans: (i)``, 1-based).
        yes_token, no_token (`str`): the pairwise answers; each must be one token.
        batch_size (`int`): candidates per forward pass in :meth:`UniMEV2Reranker.score`.
        prefix_sharing (`bool`): run a query's prefix once for all its candidates (exact; faster).
        max_new_tokens (`int`): generation budget of a listwise answer.
        max_length (`int`, *optional*): the context in tokens (default: the language model's
            ``max_position_embeddings``); longer prompts are refused with the number of candidates that fit.
        image_resize (`int`, *optional*): resize every image to ``image_resize``² before the processor (the authors'
            rerank evaluation: 1344, with ``max_pixels=300 * 28 * 28``; see ``RERANK_EVAL_IMAGES``).
        min_pixels, max_pixels (`int`, *optional*): the Qwen-VL processor's pixel budget per image.
    """

    model_type = "unime_v2_reranker"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: dict | PretrainedConfig | None = None,
        pair_format: str = "reranker",
        pairwise_prompt: str | None = None,
        listwise_prompt: str = RERANK_LIST_PROMPT,
        yes_token: str = "Yes",
        no_token: str = "No",
        batch_size: int = 64,
        prefix_sharing: bool = True,
        max_new_tokens: int = 16,
        max_length: int | None = None,
        image_resize: int | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        **kwargs,
    ):
        if isinstance(backbone_config, dict):
            backbone_config = AutoConfig.for_model(**backbone_config)
        if backbone_config is not None and backbone_config.model_type not in SUPPORTED_BACKBONES:
            raise ValueError(
                f"unsupported backbone model_type {backbone_config.model_type!r}; the reranker supports "
                f"{SUPPORTED_BACKBONES}"
            )
        if pair_format not in PAIR_FORMATS:
            raise ValueError(f"pair_format={pair_format!r}; choose one of {PAIR_FORMATS}")
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
        self.backbone_config = backbone_config
        self.pair_format = pair_format
        default = RERANK_PAIR_PROMPT if pair_format == "reranker" else JUDGE_PROMPT
        self.pairwise_prompt = pairwise_prompt or default
        self.listwise_prompt = listwise_prompt
        self.yes_token = yes_token
        self.no_token = no_token
        self.batch_size = batch_size
        self.prefix_sharing = prefix_sharing
        self.max_new_tokens = max_new_tokens
        self.max_length = max_length
        self.image_resize = image_resize
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        super().__init__(**kwargs)

    @property
    def context_length(self) -> int | None:
        """Tokens the model can read: ``max_length`` or the language model's ``max_position_embeddings``."""
        if self.max_length is not None:
            return self.max_length
        return getattr(self.backbone_config.get_text_config(), "max_position_embeddings", None)
