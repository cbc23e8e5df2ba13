"""Judge scoring batched across queries as well as candidates: several prefixes per forward, all their suffixes in one.

:meth:`JudgeScorer.score` runs one query at a time: its prefix (prompt + query image + query text) once, then its
candidates as a batch of suffixes on the repeated KV cache. At a 7B judge's real shapes a query's 50 text suffixes
of ~16 tokens are only ~800 tokens, too few to fill a GPU, and each query's prefix runs alone. Here
``queries_per_forward`` queries are scored together:

1. their prefixes run as one right-padded batch (one vision-tower call for all query images), giving a KV cache of
   ``Q`` rows;
2. the cache rows are selected ``n_g`` times each (``batch_select_indices``; candidate counts may differ), and all
   ``Σ n_g`` suffixes run in one forward. The attention mask spans ``[prefix row incl. its padding | suffix]``, so a
   suffix never sees another query's tokens or the padding, and its positions continue its own prefix.

Positions: a text-only suffix continues its prefix (1-D RoPE: ``prefix_length + arange``; Qwen-VL M-RoPE: the
prefix's largest position + 1 + ``arange`` on all three axes, which is what ``get_rope_index`` gives text after an
image), so ``get_rope_index`` runs once per prefix instead of once per pair; suffixes with an image get their
positions from ``get_rope_index`` over the whole pair, as in :meth:`JudgeScorer.score`. Pairs the chat template
cannot cut into prefix + suffix are scored whole. Scores equal :meth:`JudgeScorer.score` up to rounding (tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from unime_v2.modeling_unime_v2.scoring_unime_v2 import (  # the one import of the judge core in this module
    EncodedPairs,
    JudgeItem,
    JudgeScorer,
)


def score_queries(
    judge: JudgeScorer,
    queries: Sequence[JudgeItem],
    candidate_lists: Sequence[Sequence[JudgeItem]],
    queries_per_forward: int = 8,
) -> list[np.ndarray]:
    """Judge scores of each query's candidates (``float32``, one array per query), ``queries_per_forward`` at a time.

    Memory: one forward holds the KV cache of ``Σ n_g`` pairs (≈ 57 kB per token of each pair for a 7B Qwen2.5-VL
    judge in bf16: 16 queries × 50 pairs × 230 tokens ≈ 10 GB).
    """
    if len(queries) != len(candidate_lists):
        raise ValueError(f"{len(queries)} queries but {len(candidate_lists)} candidate lists")
    encoded = [judge.encode(query, candidates) for query, candidates in zip(queries, candidate_lists)]
    return score_encoded(judge, encoded, [len(candidates) for candidates in candidate_lists], queries_per_forward)


@torch.no_grad()
def score_encoded(
    judge: JudgeScorer, encoded: Sequence[EncodedPairs], counts: Sequence[int], queries_per_forward: int = 8
) -> list[np.ndarray]:
    """:func:`score_queries` on already tokenized queries (``counts[i]``: number of candidates of query i)."""
    if queries_per_forward < 1:
        raise ValueError(f"queries_per_forward must be >= 1, got {queries_per_forward}")
    results = [np.empty(count, dtype=np.float32) for count in counts]
    shared = [i for i, pairs in enumerate(encoded) if pairs.prefix is not None and pairs.suffixes]
    for start in range(0, len(shared), queries_per_forward):
        group = shared[start : start + queries_per_forward]
        scores = _score_group(judge, [encoded[i] for i in group])
        for i, values in zip(group, scores):
            results[i][list(encoded[i].suffixes)] = values
    for i, pairs in enumerate(encoded):
        whole = [j for j in range(counts[i]) if j not in pairs.suffixes]
        if whole:
            results[i][whole] = judge._score_whole([pairs.pair(j) for j in whole])
    return results


def _score_group(judge: JudgeScorer, group: Sequence[EncodedPairs]) -> list[np.ndarray]:
    """Prefill the group's prefixes as one batch, then run every suffix of every query in one forward."""
    device = judge.model.device
    prefixes = [pairs.prefix for pairs in group]
    prefill = judge._batch([p.input_ids for p in prefixes], [image for p in prefixes for image in p.images])
    prefix_positions = judge._positions(prefill)
    out = judge._forward(prefill, position_ids=prefix_positions.to(device), use_cache=True)
    cache = getattr(out, "cache", None)
    cache = cache if cache is not None else out.past_key_values

    owners = [g for g, pairs in enumerate(group) for _ in pairs.suffixes]
    suffixes = [suffix for pairs in group for suffix in pairs.suffixes.values()]
    cache.batch_select_indices(torch.tensor(owners, device=device))
    suffix_batch = judge._text_batch([s.input_ids for s in suffixes])
    prefix_mask = prefill["attention_mask"][owners]
    inputs = {
        "input_ids": suffix_batch["input_ids"],
        "attention_mask": torch.cat([prefix_mask, suffix_batch["attention_mask"]], dim=1),
    }
    if judge.uses_mrope:
        inputs["mm_token_type_ids"] = suffix_batch["mm_token_type_ids"]
    inputs.update(judge.images.join([image for s in suffixes for image in s.images]))
    positions = _suffix_positions(judge, group, owners, suffixes, prefix_positions, prefill["attention_mask"])
    kwargs: dict[str, Any] = {judge._cache_arg: cache, "use_cache": True}
    prefix_length, suffix_length = prefix_mask.shape[1], suffix_batch["input_ids"].shape[1]
    if judge._takes_cache_position:
        kwargs["cache_position"] = torch.arange(prefix_length, prefix_length + suffix_length, device=device)
    hidden = judge._forward(inputs, position_ids=positions.to(device), **kwargs).last_hidden_state
    last = torch.tensor([len(s.input_ids) - 1 for s in suffixes], device=hidden.device)
    scores = judge._yes_probability(hidden[torch.arange(len(suffixes), device=hidden.device), last])
    return list(np.split(scores.astype(np.float32), np.cumsum([len(p.suffixes) for p in group])[:-1]))


def _suffix_positions(
    judge: JudgeScorer,
    group: Sequence[EncodedPairs],
    owners: Sequence[int],
    suffixes: Sequence[Any],
    prefix_positions: torch.Tensor,
    prefix_mask: torch.Tensor,
) -> torch.Tensor:
    """Positions of every suffix token, continuing its own prefix: ``(n, L)`` (1-D RoPE) or ``(3, n, L)`` (M-RoPE)."""
    length = max(len(s.input_ids) for s in suffixes)
    steps = torch.arange(length)
    if not judge.uses_mrope:
        starts = prefix_mask.sum(-1)[owners]
        return starts[:, None] + steps[None, :]
    real = prefix_mask.bool()[None].expand_as(prefix_positions)
    last = prefix_positions.masked_fill(~real, -1).amax(-1).amax(0)  # largest position of each prefix
    positions = (last[owners][:, None] + 1 + steps[None, :]).unsqueeze(0).repeat(3, 1, 1)
    for row, (owner, suffix) in enumerate(zip(owners, suffixes)):
        if suffix.images:  # an image in the suffix: the pair's own M-RoPE grid positions
            prefix = group[owner].prefix
            full = judge._text_batch([torch.cat([prefix.input_ids, suffix.input_ids])])
            full["image_grid_thw"] = torch.cat([image["image_grid_thw"] for image in prefix.images + suffix.images])
            pair_positions = judge._positions(full)[..., len(prefix.input_ids) :]
            positions[:, row, : pair_positions.shape[-1]] = pair_positions[:, 0]
    return positions
