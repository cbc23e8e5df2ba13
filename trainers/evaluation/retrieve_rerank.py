"""Retrieve, then rerank: the embedder's top-k from a faiss index, reordered by the UniME-V2-Reranker.

In the spirit of sentence-transformers' retrieve & re-rank: :meth:`RetrieveThenRerank.index` embeds a candidate
set once (inner product over L2-normalised embeddings = cosine), :meth:`RetrieveThenRerank.search` takes each
query's top-k and reranks them (listwise by default, as the paper's "+ reranker" rows; pairwise sorts by P(Yes)).
Listwise answers that cannot be parsed keep the embedder's order and are counted (``num_fallbacks``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import torch
from tqdm.auto import tqdm


Item = Mapping[str, Any]


@dataclass
class QueryRanking:
    """One query's final ranking.

    Args:
        order: indices into the indexed candidates, best first (the reranked top-k).
        embed_order: the embedder's top-k, best first (what was reranked).
        embed_scores: cosine similarity of each of ``embed_order``.
        rerank_scores: P(Yes) per ``embed_order`` entry (pairwise mode), else ``None``.
        fallback: the listwise answer was unparsable / out of range (``order == embed_order``).
        answer: the raw listwise answer.
    """

    order: list[int]
    embed_order: list[int]
    embed_scores: list[float]
    rerank_scores: list[float] | None
    fallback: bool
    answer: str | None


class RetrieveThenRerank:
    """Embed candidates with ``embedder`` (a ``UniMEV2Model``), retrieve top-k by cosine, rerank with ``reranker``.

    Args:
        embedder: has ``encode(items, batch_size, show_progress_bar) -> (n, d)`` tensor.
        reranker: a ``UniMEV2Reranker`` (``rerank(query, candidates, mode)``); ``None`` returns the embedder order.
        top_k: candidates reranked per query (paper: 10).
        mode: ``"listwise"`` or ``"pairwise"``.
        batch_size: items per embedding batch.
        progress: show progress bars (items embedded, queries reranked).
    """

    def __init__(
        self,
        embedder: Any,
        reranker: Any = None,
        top_k: int = 10,
        mode: str = "listwise",
        batch_size: int = 32,
        progress: bool = True,
    ):
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.embedder, self.reranker = embedder, reranker
        self.top_k, self.mode, self.batch_size, self.progress = top_k, mode, batch_size, progress
        self.candidates: list[Item] = []
        self.faiss_index: faiss.Index | None = None
        self.num_fallbacks = 0

    def _embed(self, items: Sequence[Item]) -> np.ndarray:
        embeddings = self.embedder.encode(list(items), batch_size=self.batch_size, show_progress_bar=self.progress)
        embeddings = torch.nn.functional.normalize(embeddings.float(), dim=-1)
        return np.ascontiguousarray(embeddings.numpy(), dtype=np.float32)

    def index(self, candidates: Sequence[Item]) -> RetrieveThenRerank:
        """Embed and index ``candidates`` (replaces any previous index)."""
        if not candidates:
            raise ValueError("no candidates to index")
        embeddings = self._embed(candidates)
        self.faiss_index = faiss.IndexFlatIP(embeddings.shape[1])
        self.faiss_index.add(embeddings)
        self.candidates = list(candidates)
        return self

    def retrieve(self, queries: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, indices)`` of each query's top-k by cosine, each ``(n_queries, k)``."""
        if self.faiss_index is None:
            raise ValueError("index(candidates) first")
        k = min(self.top_k, len(self.candidates))
        return self.faiss_index.search(self._embed(queries), k)

    def search(self, queries: Sequence[Item]) -> list[QueryRanking]:
        """The final ranking of each query (embedder top-k, reranked), with a progress bar over queries."""
        scores, indices = self.retrieve(queries)
        results = []
        for query, row_scores, row in tqdm(
            zip(queries, scores, indices), total=len(queries), desc="rerank", unit="query", disable=not self.progress
        ):
            embed_order = [int(i) for i in row]
            result = QueryRanking(embed_order, embed_order, [float(s) for s in row_scores], None, False, None)
            if self.reranker is not None:
                reranked = self.reranker.rerank(query, [self.candidates[i] for i in embed_order], mode=self.mode)
                result.order = [embed_order[i] for i in reranked.order]
                result.rerank_scores, result.fallback, result.answer = (
                    reranked.scores,
                    reranked.fallback,
                    reranked.answer,
                )
                self.num_fallbacks += int(reranked.fallback)
            results.append(result)
        return results


def rerank_precision_at_1(pipeline: RetrieveThenRerank, rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Precision@1 of the embedder alone and embedder + reranker on MMEB-eval rows (ground truth = candidate 0):
    each row's candidates are indexed, its query retrieves the top-k, the reranker reorders them.

    Returns ``{"embedder": p@1, "reranked": p@1, "fallbacks": count, "rows": n}``.
    """
    hits = {"embedder": 0, "reranked": 0}
    fallbacks = pipeline.num_fallbacks
    for row in tqdm(rows, desc="rows", unit="row", disable=not pipeline.progress):
        candidates = [{"text": t, "image": i} for t, i in zip(row["tgt_text"], row["tgt_image"])]
        pipeline.index(candidates)
        (result,) = pipeline.search([{"text": row["qry_text"], "image": row["qry_image"]}])
        hits["embedder"] += int(result.embed_order[0] == 0)
        hits["reranked"] += int(result.order[0] == 0)
    n = max(len(rows), 1)
    return {
        "embedder": hits["embedder"] / n,
        "reranked": hits["reranked"] / n,
        "fallbacks": pipeline.num_fallbacks - fallbacks,
        "rows": len(rows),
    }
