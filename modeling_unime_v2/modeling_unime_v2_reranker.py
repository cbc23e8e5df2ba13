"""The UniME-V2-Reranker: a generative VLM that judges one candidate (pairwise, P(Yes)) or picks the best of many
(listwise, ``Ans: (i)``). The mining judge is the same model in the pairwise judge layout (docs/reranker.md).

Hub remote code: this file imports only torch, transformers and its siblings, so ``save_pretrained`` copies it next
to the weights and ``AutoModel.from_pretrained(path, trust_remote_code=True)`` runs it anywhere.

Prompts are built by :class:`~.processing_unime_v2_reranker.UniMEV2RerankerProcessor` (token for token the authors'
prompts); scores come from :class:`~.scoring_unime_v2.JudgeScorer` (one forward, the query prefix shared across
candidates, several queries per forward in :meth:`UniMEV2Reranker.score_queries`); listwise reranking generates the
answer and parses its first ``(i)`` (or a bare number), falling back to the incoming order on an unparsable or
out-of-range answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel
from transformers.utils import logging

from .configuration_unime_v2 import BACKBONE_NO_SPLIT_MODULES
from .configuration_unime_v2_reranker import RERANK_PAIR_PROMPT_RELEASED, UniMEV2RerankerConfig
from .modeling_unime_v2 import (
    RemoteCodeSaving,
    load_supported_vlm,
    pop_config_fields,
    require_grads_from_trained_inputs,
)
from .processing_unime_v2 import processor_kwargs
from .processing_unime_v2_reranker import EncodedPairs, UniMEV2RerankerProcessor
from .scoring_unime_v2 import JudgeScorer


logger = logging.get_logger(__name__)
RERANK_MODES = ("listwise", "pairwise")
_PROCESSOR_FIELDS = (
    "pair_format",
    "pairwise_prompt",
    "listwise_prompt",
    "yes_token",
    "no_token",
    "image_resize",
    "min_pixels",
    "max_pixels",
)


@dataclass
class RerankResult:
    """The outcome of :meth:`UniMEV2Reranker.rerank`.

    Args:
        order: indices into the candidates, best first (a permutation).
        scores: P(Yes) per candidate (in the candidates' order) in pairwise mode; ``None`` in listwise mode.
        fallback: the listwise answer was unparsable or out of range, so the incoming order was kept.
        answer: the raw generated text (listwise).
    """

    order: list[int]
    scores: list[float] | None
    fallback: bool
    answer: str | None


def parse_answer(answer: str, num_candidates: int) -> int | None:
    """The 0-based candidate named by a listwise answer: the first ``(i)``, else the first number (1-based);
    ``None`` when there is none or it is out of range."""
    match = re.search(r"\((\d+)\)", answer) or re.search(r"\d+", answer)
    if match is None:
        return None
    number = int(match.group(1) if match.groups() else match.group(0))
    return number - 1 if 1 <= number <= num_candidates else None


def listwise_order(choice: int | None, num_candidates: int) -> list[int]:
    """The chosen candidate first, the others in incoming order; the incoming order when ``choice`` is ``None``."""
    rest = [i for i in range(num_candidates) if i != choice]
    return rest if choice is None else [choice, *rest]


class UniMEV2RerankerPreTrainedModel(PreTrainedModel):
    config_class = UniMEV2RerankerConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = list(BACKBONE_NO_SPLIT_MODULES)

    def enable_input_require_grads(self) -> None:
        """Input gradients for checkpointed trained layers only; the frozen vision tower is left out."""
        require_grads_from_trained_inputs(self)


class UniMEV2Reranker(RemoteCodeSaving, UniMEV2RerankerPreTrainedModel):
    """UniME-V2-Reranker over a generative VLM (``self.backbone``, a ``*ForConditionalGeneration``).

    Items are ``{"text": str | None, "image": PIL image | path | None}``; ``<|image_1|>`` markers in texts are
    removed (the image goes where the layout puts it), the rest of the text is read as it is. :meth:`forward` is the
    backbone's (training); :meth:`score`, :meth:`score_queries` and :meth:`rerank` are the user API;
    :attr:`processor` (a :class:`UniMEV2RerankerProcessor` built from the config) renders and tokenizes the prompts;
    :meth:`from_backbone` wraps a plain VLM checkpoint (``pair_format="judge"``: the mining judge).
    """

    def __init__(self, config: UniMEV2RerankerConfig):
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError("UniMEV2RerankerConfig.backbone_config is required to build a UniMEV2Reranker")
        self.backbone = AutoModelForImageTextToText.from_config(config.backbone_config)
        self._backbone_processor: Any = None
        self._processor: UniMEV2RerankerProcessor | None = None
        self._processor_key: tuple | None = None
        self._scorer: JudgeScorer | None = None
        self.post_init()

    # ----------------------------------------------------------------------------------------- loading/saving
    @classmethod
    def from_backbone(
        cls,
        name_or_path: str,
        processor_name_or_path: str | None = None,
        released_typo: bool = False,
        **kwargs: Any,
    ) -> UniMEV2Reranker:
        """Wrap a plain VLM checkpoint (e.g. the authors' merged reranker, or Qwen2.5-VL-7B-Instruct as the judge).

        ``released_typo=True`` uses the pairwise instruction exactly as in the authors' released training data
        ("responed"), to match their released reranker. Keyword arguments naming :class:`UniMEV2RerankerConfig`
        fields (``pair_format``, ``batch_size``, ``image_resize``, ``min_pixels``, …) configure the reranker; the
        rest (``dtype``, ``attn_implementation``, ``revision``, …) go to ``from_pretrained``.
        """
        options = pop_config_fields(UniMEV2RerankerConfig, kwargs)
        if released_typo:
            options["pairwise_prompt"] = RERANK_PAIR_PROMPT_RELEASED
        vlm = load_supported_vlm(name_or_path, kwargs, "the reranker")
        config = UniMEV2RerankerConfig(backbone_config=vlm.config, **options)
        with torch.device("meta"):
            model = cls(config)
        model.backbone = vlm
        model.config._attn_implementation_internal = vlm.config._attn_implementation
        model.attach_processor(AutoProcessor.from_pretrained(processor_name_or_path or name_or_path))
        return model.eval()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, *args: Any, **kwargs: Any) -> UniMEV2Reranker:
        """Load a saved reranker and, when the checkpoint has one, its processor."""
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        try:
            model.attach_processor(
                AutoProcessor.from_pretrained(pretrained_model_name_or_path, **processor_kwargs(kwargs))
            )
        except (OSError, ValueError) as error:
            logger.warning(
                f"No processor found with {pretrained_model_name_or_path}: {error}; use attach_processor()."
            )
        return model

    def attach_processor(self, processor: Any) -> None:
        """Build prompts with ``processor``: the backbone's (with a chat template) or a
        :class:`UniMEV2RerankerProcessor` (its backbone processor is used; the settings come from the config)."""
        if isinstance(processor, UniMEV2RerankerProcessor):
            processor = processor.backbone
        self._backbone_processor = processor
        self._processor = None
        self._scorer = None

    @property
    def processor(self) -> UniMEV2RerankerProcessor | None:
        """The reranker's processor, built from the config (rebuilt when its prompt or image settings change)."""
        if self._backbone_processor is None:
            return None
        key = tuple(getattr(self.config, field) for field in _PROCESSOR_FIELDS)
        if self._processor is None or key != self._processor_key:
            self._processor = UniMEV2RerankerProcessor.from_config(self._backbone_processor, self.config)
            self._processor_key = key
        return self._processor

    # ----------------------------------------------------------------------------------------- model
    def get_input_embeddings(self) -> torch.nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: torch.nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.backbone.get_output_embeddings()

    def forward(self, **inputs: Any) -> Any:
        """The backbone's forward (causal-LM logits; ``logits_to_keep`` selects positions)."""
        return self.backbone(**inputs)

    @property
    def scorer(self) -> JudgeScorer:
        """The forward engine (prefix-shared P(Yes), generation) over this model's backbone and processor."""
        processor = self.processor
        if processor is None:
            raise ValueError("this reranker has no processor; load it with from_pretrained/from_backbone")
        if self._scorer is None or self._scorer.processor is not processor:
            was_training = self.backbone.training
            self._scorer = JudgeScorer(self.backbone, processor)
            self.backbone.train(was_training)
        self._scorer.batch_size = self.config.batch_size
        self._scorer.prefix_sharing = self.config.prefix_sharing
        return self._scorer

    # ----------------------------------------------------------------------------------------- inputs
    def _check_pairs_fit(self, encoded: EncodedPairs, where: str = "") -> None:
        limit = self.config.context_length
        if limit is None:
            return
        for index in range(len(encoded)):
            length = len(encoded.pair(index)) + 1
            if length > limit:
                raise ValueError(
                    f"{where}candidate {index}: the pairwise prompt needs {length} tokens, more than the model's "
                    f"context of {limit}; shorten the query or the candidate (or lower the image resolution)"
                )

    def _listwise_inputs(self, query: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The listwise prompt's inputs; a clear error when it does not fit the context, saying how many fit."""
        processor = self.processor
        piece = processor.listwise_piece(query, candidates)
        limit = self.config.context_length
        budget = self.config.max_new_tokens
        if limit is not None and len(piece) + budget > limit:
            fit = 0
            while fit < len(candidates):
                if len(processor.listwise_piece(query, candidates[: fit + 1])) + budget > limit:
                    break
                fit += 1
            raise ValueError(
                f"{len(candidates)} candidates do not fit the model's context: the listwise prompt needs "
                f"{len(piece)} tokens + {budget} for the answer, the context holds {limit}; "
                f"at most {fit} of these candidates fit (rerank fewer, e.g. a smaller top-k)"
            )
        return processor.inputs([piece])

    # ----------------------------------------------------------------------------------------- user API
    def sentence_transformers_config(self) -> dict[str, Any]:
        """sentence-transformers settings: a ``CrossEncoder`` whose ``predict`` is :meth:`score`'s P(Yes) (the
        module's scores are P(Yes), so the activation is the identity)."""
        return {
            "module": "UniMEV2STReranker",
            "files": ["sentence_transformers_unime_v2_reranker.py", "sentence_transformers_unime_v2.py"],
            "model_type": "CrossEncoder",
            "prompts": {},
            "default_prompt_name": None,
            "activation_fn": "torch.nn.modules.linear.Identity",
        }

    @torch.no_grad()
    def score(
        self, query: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]], batch_size: int | None = None
    ) -> torch.Tensor:
        """P(Yes) of each candidate for ``query`` (pairwise prompt), shape ``(n,)``, fp32 on CPU.

        One forward per ``batch_size`` candidates (default: the config's), the query's shared prefix run once
        (equal to scoring each whole pair alone; see tests).
        """
        scorer = self.scorer
        encoded = self.processor.encode_pairs(query, candidates)
        self._check_pairs_fit(encoded)
        scorer.batch_size = batch_size or self.config.batch_size
        scorer.model.eval()
        return torch.from_numpy(scorer.score_encoded(encoded))

    @torch.no_grad()
    def score_queries(
        self,
        queries: Sequence[Mapping[str, Any]],
        candidate_lists: Sequence[Sequence[Mapping[str, Any]]],
        queries_per_forward: int = 8,
    ) -> list[torch.Tensor]:
        """:meth:`score` for several queries, ``queries_per_forward`` queries (all their candidates) per forward.

        ``queries_per_forward=1`` is :meth:`score` per query (``batch_size`` candidates per forward); more fills a
        GPU that one query's short suffixes leave idle (docs/mining.md). Errors name ``query i``.
        """
        if len(queries) != len(candidate_lists):
            raise ValueError(f"{len(queries)} queries but {len(candidate_lists)} candidate lists")
        if queries_per_forward < 1:
            raise ValueError(f"queries_per_forward must be >= 1, got {queries_per_forward}")
        scorer = self.scorer
        scorer.model.eval()
        encoded = []
        for index, (query, candidates) in enumerate(zip(queries, candidate_lists)):
            encoded.append(self.processor.encode_pairs(query, candidates, where=f"query {index} "))
            self._check_pairs_fit(encoded[-1], where=f"query {index} ")
        if queries_per_forward == 1:
            scores = [scorer.score_encoded(pairs) for pairs in encoded]
        else:
            scores = scorer.score_many(encoded, queries_per_forward)
        return [torch.from_numpy(values) for values in scores]

    @torch.no_grad()
    def generate_answer(self, query: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]]) -> str:
        """The generated listwise answer text (e.g. ``"Ans: (2)"``) for ``query`` and its candidates."""
        inputs = self._listwise_inputs(query, candidates)
        self.backbone.eval()
        out = self.scorer.generate(inputs, max_new_tokens=self.config.max_new_tokens)
        new = out[0, inputs["input_ids"].shape[1] :]
        return self.processor.tokenizer.decode(new, skip_special_tokens=True)

    def rerank(
        self, query: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]], mode: str = "listwise"
    ) -> RerankResult:
        """Reorder ``candidates`` for ``query``, best first.

        ``listwise``: one prompt with all candidates numbered; the chosen one goes first, the rest keep the
        incoming order; an unparsable or out-of-range answer keeps the incoming order (``fallback=True``, logged).
        ``pairwise``: sort by P(Yes) (ties keep the incoming order).
        """
        if mode not in RERANK_MODES:
            raise ValueError(f"mode={mode!r}; choose one of {RERANK_MODES}")
        if mode == "pairwise":
            scores = self.score(query, candidates)
            order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
            return RerankResult(order, scores.tolist(), False, None)
        answer = self.generate_answer(query, candidates)
        choice = parse_answer(answer, len(candidates))
        if choice is None:
            logger.warning(f"unparsable or out-of-range listwise answer {answer!r}; the incoming order is kept")
        return RerankResult(listwise_order(choice, len(candidates)), None, choice is None, answer)
