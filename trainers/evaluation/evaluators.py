"""Evaluators of the paper's tables: MMEB precision@1, image–text retrieval recall@k and SugarCrepe accuracy.

Like sentence-transformers' evaluators, each is built from its data and called on a model: ``evaluator(model)``
returns a flat metrics dict (and keeps per-dataset details in ``per_dataset``, broken datasets in ``errors``).
They work standalone, under ``accelerate launch`` (encoding and reranking are shared between the processes; every
process returns the same numbers) and inside ``UniMEV2Trainer.evaluate``.

With a ``reranker`` (anything with ``rerank(query, candidates, mode) -> RerankResult``: ``order`` best first,
``fallback`` when a listwise answer could not be parsed) each query's embedder top-k is reordered by the reranker
and the metrics are reported again under ``rerank/``; fallbacks are counted. The top-k cut puts a ground truth
that ties with another candidate *after* it, so ties never favour the ground truth here either.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from .encoding import ItemEncoder, image_resolution
from .metrics import (
    MMEB_TASKS,
    MMEBTask,
    aggregate_mmeb,
    hits_at_k,
    mean,
    pairwise_accuracy,
    pessimistic_order,
    ranked_hits,
    sugarcrepe_groups,
)
from .readers import IMAGE_QUERY_TEXT, CompositionalSet, DatasetSource, MMEBDataset, RetrievalSet


logger = logging.getLogger(__name__)

BROKEN_DATASET_ERRORS = (ValueError, FileNotFoundError, OSError, KeyError, TypeError)
RERANK = "rerank/"


class Evaluator:
    """Shared machinery: datasets read one by one, broken ones reported and skipped, one encoder per call.

    Args:
        sources: the datasets (see :mod:`~unime_v2.trainers.evaluation.readers`).
        batch_size: items per forward pass of the embedder.
        resolution: ``low`` (336²), ``high`` (1344²) or ``None`` / ``checkpoint`` (the checkpoint's own setting).
        cache_dir: embedding cache folder (``None``: no cache).
        reranker: optional object with ``rerank(query, candidates, mode)``; adds the ``rerank/`` metrics.
        top_k: candidates per query handed to the reranker.
        rerank_mode: ``listwise`` or ``pairwise``, passed to ``rerank``.
        skip_broken: report a dataset that fails to read or encode in ``errors`` and go on (else raise).
        show_progress_bar: tqdm bars in items/s.
    """

    suite = ""

    def __init__(
        self,
        sources: Sequence[DatasetSource],
        batch_size: int = 16,
        resolution: str | None = None,
        cache_dir: str | None = None,
        reranker: Any = None,
        top_k: int = 10,
        rerank_mode: str = "listwise",
        skip_broken: bool = True,
        show_progress_bar: bool = False,
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if reranker is not None and not callable(getattr(reranker, "rerank", None)):
            raise TypeError(f"{type(reranker).__name__} has no rerank(query, candidates, mode) method")
        self.sources = list(sources)
        self.batch_size = batch_size
        self.resolution = None if resolution in (None, "checkpoint") else resolution
        self.cache_dir = cache_dir
        self.reranker = reranker
        self.top_k = top_k
        self.rerank_mode = rerank_mode
        self.skip_broken = skip_broken
        self.show_progress_bar = show_progress_bar
        self.per_dataset: dict[str, dict[str, float]] = {}
        self.errors: dict[str, str] = {}
        self.image_resize: int | None = None

    def __call__(self, model: Any) -> dict[str, float]:
        """Evaluate ``model`` on every dataset; returns the flat metrics of :meth:`summarize`."""
        self.per_dataset, self.errors = {}, {}
        settings = {"resolution": self.resolution or "checkpoint", "suite": self.suite}
        encoder = ItemEncoder(
            model, self.batch_size, self.cache_dir, settings, show_progress_bar=self.show_progress_bar
        )
        with image_resolution(model, self.resolution) as image_resize:
            self.image_resize = image_resize
            for source in self.sources:
                try:
                    self.per_dataset[source.name] = self.evaluate_dataset(source.load(), encoder)
                except BROKEN_DATASET_ERRORS as error:
                    if not self.skip_broken:
                        raise
                    self.errors[source.name] = f"{type(error).__name__}: {error}"
                    logger.error(f"{self.suite} dataset {source.name} skipped: {self.errors[source.name]}")
        return self.summarize()

    def evaluate_dataset(self, data: Any, encoder: ItemEncoder) -> dict[str, float]:
        raise NotImplementedError

    def summarize(self) -> dict[str, float]:
        raise NotImplementedError

    # -------------------------------------------------------------------------------------------- reranking
    def rerank_rankings(
        self,
        queries: Sequence[dict[str, Any]],
        candidates: Sequence[Sequence[dict[str, Any]]] | Any,
        scores: torch.Tensor,
        relevant: torch.Tensor,
        desc: str,
    ) -> tuple[list[list[int]], int]:
        """Per query: its embedder ranking with the top ``top_k`` reordered by the reranker; and the fallback count.

        ``candidates`` is a list per query, or one shared list. Queries are shared between the processes.
        """
        state = PartialState()
        with state.split_between_processes(list(range(len(queries)))) as mine:
            local = []
            for i in tqdm(mine, desc=desc, unit="query", disable=not self.show_progress_bar):
                row = torch.isfinite(scores[i])
                order = pessimistic_order(scores[i][row].numpy(), relevant[i][row].numpy())
                head, tail = order[: self.top_k], order[self.top_k :]
                pool = candidates[i] if isinstance(candidates[0], (list, tuple)) else candidates
                result = self.reranker.rerank(queries[i], [pool[j] for j in head], mode=self.rerank_mode)
                if sorted(result.order) != list(range(len(head))):
                    raise ValueError(
                        f"{desc} query {i}: reranker order {result.order} is not a permutation of the top-{len(head)}"
                    )
                local.append(([head[j] for j in result.order] + tail, bool(result.fallback)))
        if state.num_processes > 1:
            local = gather_object(local)
        return [ranking for ranking, _ in local], sum(fallback for _, fallback in local)


class MMEBEvaluator(Evaluator):
    """Precision@1 per MMEB dataset (ground truth strictly first), meta-task / IND / OOD / overall means.

    Metrics: ``precision_at_1/<dataset>``, ``precision_at_1`` (mean over datasets), ``precision_at_1/meta/<meta>``,
    ``precision_at_1/ind``, ``precision_at_1/ood``, ``num_rows``; with a reranker the same under ``rerank/`` and
    ``rerank/fallbacks``. Datasets not in ``tasks`` (and without their own task) count in the overall mean only.
    """

    suite = "mmeb"

    def __init__(self, sources: Sequence[DatasetSource], tasks: Sequence[MMEBTask] = MMEB_TASKS, **kwargs: Any):
        kwargs.setdefault("top_k", 5)
        super().__init__(sources, **kwargs)
        self.tasks = {task.name: task for task in tasks}

    def evaluate_dataset(self, data: MMEBDataset, encoder: ItemEncoder) -> dict[str, float]:
        if data.task is not None:
            self.tasks[data.name] = data.task
        n = len(data.queries)
        flat = [c for row in data.candidates for c in row]
        origins = [f"{data.name} row {i} query" for i in range(n)]
        origins += [
            f"{data.name} row {i} candidate {j}" for i, row in enumerate(data.candidates) for j in range(len(row))
        ]
        embeddings = encoder.encode(list(data.queries) + flat, origins, desc=f"encode {data.name}")
        queries, flat_embeddings = embeddings[:n], embeddings[n:]
        width = max(len(row) for row in data.candidates)
        scores = torch.full((n, width), float("-inf"))
        start = 0
        for i, row in enumerate(data.candidates):
            scores[i, : len(row)] = flat_embeddings[start : start + len(row)] @ queries[i]
            start += len(row)
        relevant = torch.zeros(n, width, dtype=torch.bool)
        relevant[:, 0] = True
        result = {"precision_at_1": float(hits_at_k(scores, relevant, (1,))[1].float().mean()), "num_rows": n}
        if self.reranker is not None:
            rankings, fallbacks = self.rerank_rankings(
                data.queries, data.candidates, scores, relevant, f"rerank {data.name}"
            )
            hits = [ranked_hits(r, relevant[i].numpy(), (1,))[1] for i, r in enumerate(rankings)]
            result.update({RERANK + "precision_at_1": mean([float(h) for h in hits]), RERANK + "fallbacks": fallbacks})
        return result

    def summarize(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for prefix in ("", RERANK) if self.reranker is not None else ("",):
            per = {name: d[prefix + "precision_at_1"] for name, d in self.per_dataset.items()}
            metrics.update({f"{prefix}precision_at_1/{name}": value for name, value in per.items()})
            means = aggregate_mmeb(per, list(self.tasks.values()))
            metrics[prefix + "precision_at_1"] = means.pop("overall") if per else 0.0
            metrics.update({f"{prefix}precision_at_1/{k}": v for k, v in means.items() if not math.isnan(v)})
        if self.reranker is not None:
            metrics[RERANK + "fallbacks"] = float(sum(d[RERANK + "fallbacks"] for d in self.per_dataset.values()))
        metrics["num_rows"] = float(sum(d["num_rows"] for d in self.per_dataset.values()))
        return metrics


class RetrievalEvaluator(Evaluator):
    """Recall@1/5/10 image→text (an image query; any of its captions is a hit) and text→image, per dataset.

    Metrics: ``<dataset>/i2t_R@k`` and ``<dataset>/t2i_R@k`` (and under ``rerank/`` with a reranker).
    """

    suite = "retrieval"
    ks = (1, 5, 10)

    def evaluate_dataset(self, data: RetrievalSet, encoder: ItemEncoder) -> dict[str, float]:
        image_items = [{"text": IMAGE_QUERY_TEXT, "image": image} for image in data.images]
        text_items = [{"text": caption, "image": None} for caption in data.captions]
        origins = [f"{data.name} image {i}" for i in range(len(image_items))]
        origins += [f"{data.name} caption {j}" for j in range(len(text_items))]
        embeddings = encoder.encode(image_items + text_items, origins, desc=f"encode {data.name}")
        images, texts = embeddings[: len(image_items)], embeddings[len(image_items) :]
        scores = images @ texts.T
        relevant = torch.as_tensor(data.caption_image)[None, :] == torch.arange(len(image_items))[:, None]
        result: dict[str, float] = {"num_images": len(image_items), "num_captions": len(text_items)}
        for direction, s, r in (("i2t", scores, relevant), ("t2i", scores.T, relevant.T)):
            for k, hits in hits_at_k(s, r, self.ks).items():
                result[f"{direction}_R@{k}"] = float(hits.float().mean())
        if self.reranker is not None:
            result.update(self._reranked(image_items, text_items, scores, relevant, data.name))
        return result

    def _reranked(
        self, image_items: list, text_items: list, scores: torch.Tensor, relevant: torch.Tensor, name: str
    ) -> dict[str, float]:
        out: dict[str, float] = {RERANK + "fallbacks": 0.0}
        for direction, queries, pool, s, r in (
            ("i2t", image_items, text_items, scores, relevant),
            ("t2i", text_items, image_items, scores.T, relevant.T),
        ):
            rankings, fallbacks = self.rerank_rankings(queries, pool, s, r, f"rerank {name} {direction}")
            hits = [ranked_hits(ranking, r[i].numpy(), self.ks) for i, ranking in enumerate(rankings)]
            for k in self.ks:
                out[f"{RERANK}{direction}_R@{k}"] = mean([float(h[k]) for h in hits])
            out[RERANK + "fallbacks"] += fallbacks
        return out

    def summarize(self) -> dict[str, float]:
        return {f"{name}/{key}": float(value) for name, d in self.per_dataset.items() for key, value in d.items()}


class SugarCrepeEvaluator(Evaluator):
    """Accuracy per SugarCrepe subset (positive caption strictly closer to the image) and replace/swap/add means.

    Metrics: ``accuracy/<subset>``, ``accuracy/replace``, ``accuracy/swap``, ``accuracy/add`` (and ``rerank/``).
    """

    suite = "sugarcrepe"

    def evaluate_dataset(self, data: CompositionalSet, encoder: ItemEncoder) -> dict[str, float]:
        n = len(data.images)
        items = [{"text": IMAGE_QUERY_TEXT, "image": image} for image in data.images]
        items += [{"text": t, "image": None} for t in list(data.positives) + list(data.negatives)]
        origins = [
            f"{data.name} row {i} {part}" for part in ("image", "caption", "negative_caption") for i in range(n)
        ]
        embeddings = encoder.encode(items, origins, desc=f"encode {data.name}")
        images, positives, negatives = embeddings[:n], embeddings[n : 2 * n], embeddings[2 * n :]
        pos, neg = (images * positives).sum(-1), (images * negatives).sum(-1)
        result = {"accuracy": pairwise_accuracy(pos, neg), "num_rows": n}
        if self.reranker is not None:
            pairs = [
                [{"text": p, "image": None}, {"text": q, "image": None}]
                for p, q in zip(data.positives, data.negatives)
            ]
            scores = torch.stack([pos, neg], dim=1)
            relevant = torch.tensor([[True, False]]).expand(n, 2)
            rankings, fallbacks = self.rerank_rankings(items[:n], pairs, scores, relevant, f"rerank {data.name}")
            result[RERANK + "accuracy"] = mean([float(r[0] == 0) for r in rankings])
            result[RERANK + "fallbacks"] = fallbacks
        return result

    def summarize(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for prefix in ("", RERANK) if self.reranker is not None else ("",):
            per = {name: d[prefix + "accuracy"] for name, d in self.per_dataset.items()}
            metrics.update({f"{prefix}accuracy/{name}": value for name, value in per.items()})
            metrics.update({f"{prefix}accuracy/{g}": v for g, v in sugarcrepe_groups(per).items()})
        if self.reranker is not None:
            metrics[RERANK + "fallbacks"] = float(sum(d[RERANK + "fallbacks"] for d in self.per_dataset.values()))
        return metrics


EVALUATORS = {"mmeb": MMEBEvaluator, "retrieval": RetrievalEvaluator, "sugarcrepe": SugarCrepeEvaluator}
