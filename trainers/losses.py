"""Training objectives of the UniME-V2 embedder (paper Eq. 2–4) and the InfoNCE baseline (VLM2Vec).

All losses are plain functions on tensors. They work in fp32 whatever the input dtype (bf16 logits at τ = 0.02
lose too much), use ``log_softmax`` (no epsilon), and return the mean over queries. The divergence losses only
compare each query with its own 1 + k candidates, so a batch's loss is a mean of independent per-query terms:
plain gradient accumulation (and data parallelism) give exactly the gradient of the large batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


LOSS_TYPES = ("symmetric_kl", "js", "infonce")


def candidate_cosines(query_embeddings: torch.Tensor, candidate_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine of each query with each of its own candidates.

    Args:
        query_embeddings: ``(N, d)``.
        candidate_embeddings: ``(N, 1 + k, d)``, the positive first.

    Returns:
        ``(N, 1 + k)`` fp32 cosines.
    """
    query = F.normalize(query_embeddings.float(), dim=-1)
    candidates = F.normalize(candidate_embeddings.float(), dim=-1)
    return torch.einsum("nd,nkd->nk", query, candidates)


def _log_distributions(
    similarities: torch.Tensor, judge_scores: torch.Tensor, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    if similarities.shape != judge_scores.shape or similarities.dim() != 2:
        raise ValueError(
            f"similarities {tuple(similarities.shape)} and judge_scores {tuple(judge_scores.shape)} must both be "
            "(N, 1 + k)"
        )
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    log_p = F.log_softmax(similarities.float() / tau, dim=-1)
    log_q = F.log_softmax(judge_scores.float().to(similarities.device) / tau, dim=-1)
    return log_p, log_q


def symmetric_kl_loss(similarities: torch.Tensor, judge_scores: torch.Tensor, tau: float = 0.02) -> torch.Tensor:
    r"""UniME-V2's loss, paper Eq. 4: the symmetric (Jeffreys) KL between similarity and judge distributions.

    .. math::
        P_i = \mathrm{softmax}(\cos(e_{q_i}, e_{c_{ij}}) / \tau)_j,\quad
        Q_i = \mathrm{softmax}(s_{ij} / \tau)_j,\quad
        L = \tfrac12\big(\tfrac1N\sum_i \mathrm{KL}(P_i\|Q_i) + \tfrac1N\sum_i \mathrm{KL}(Q_i\|P_i)\big)
          = \tfrac1{2N}\sum_i\sum_j (P_{ij} - Q_{ij})(\log P_{ij} - \log Q_{ij}).

    Args:
        similarities: ``(N, 1 + k)`` cosines of each query with its positive (column 0) and k hard negatives.
        judge_scores: ``(N, 1 + k)`` judge scores ``[s+, s1..sk]`` in [0, 1].
        tau: temperature of both softmaxes (paper: 0.02).

    Difference from the authors' release: they take ``softmax`` and then ``log(p + 1e-8)`` on bf16 tensors. Here
    both distributions come from fp32 ``log_softmax``: exact Eq. 4, finite for any scores (a vanishing probability
    contributes 0 · finite = 0), and fp32 instead of bf16's ~3 significant digits per probability. To first order
    the epsilon changes each query's term by ``−ε/2 · Σ_j (P_j − Q_j)² / (P_j Q_j)`` (ε = 1e-8): negligible
    (< 1e-6) when P and Q are both well above ε and not wildly different, as in a converging model; large where a
    candidate is probable under one distribution and below ~1e-6 under the other (routine at τ = 0.02, where a
    cosine gap of 0.3 is a factor e^-15), because log(p + 1e-8) saturates at −18.4 and so does its gradient.
    """
    log_p, log_q = _log_distributions(similarities, judge_scores, tau)
    per_query = ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1)
    return 0.5 * per_query.mean()


def js_divergence_loss(similarities: torch.Tensor, judge_scores: torch.Tensor, tau: float = 0.02) -> torch.Tensor:
    r"""True Jensen–Shannon divergence between the similarity and judge distributions (what the paper's text names).

    .. math::
        M_i = \tfrac12 (P_i + Q_i),\quad
        L = \tfrac1N \sum_i \big(\tfrac12 \mathrm{KL}(P_i\|M_i) + \tfrac12 \mathrm{KL}(Q_i\|M_i)\big),

    with :math:`P_i, Q_i` as in :func:`symmetric_kl_loss`. Bounded by log 2 per query. ``log M`` is computed as
    ``logaddexp(log P, log Q) − log 2``, so no probability is ever logged directly.
    """
    log_p, log_q = _log_distributions(similarities, judge_scores, tau)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(-1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(-1)
    return (0.5 * (kl_pm + kl_qm)).mean()


def infonce_loss(
    query_embeddings: torch.Tensor,
    positive_embeddings: torch.Tensor,
    hard_negative_embeddings: torch.Tensor | None = None,
    tau: float = 0.02,
    query_offset: int = 0,
) -> torch.Tensor:
    r"""InfoNCE with in-batch negatives and optional hard negatives (the VLM2Vec baseline, paper Table 4 row 1).

    .. math::
        L = -\frac1N \sum_i \log \frac{\exp(\cos(q_i, p_{o+i}) / \tau)}
            {\sum_{m} \exp(\cos(q_i, p_m)/\tau) + \sum_{m, j} \exp(\cos(q_i, h_{mj})/\tau)}

    Every query is scored against every positive and every hard negative given (its own and other queries').

    Args:
        query_embeddings: ``(N, d)``.
        positive_embeddings: ``(M, d)``, M ≥ N; query i's positive is row ``query_offset + i`` (M > N when the
            candidates were gathered from several processes).
        hard_negative_embeddings: ``(M, k, d)`` or ``(M·k, d)``, or ``None`` for in-batch negatives only.
        tau: temperature.
        query_offset: index of the first query's positive in ``positive_embeddings``.
    """
    query = F.normalize(query_embeddings.float(), dim=-1)
    candidates = positive_embeddings.float()
    if hard_negative_embeddings is not None and hard_negative_embeddings.numel():
        flat = hard_negative_embeddings.float().reshape(-1, candidates.shape[-1])
        candidates = torch.cat([candidates, flat])
    if query_offset + query.shape[0] > positive_embeddings.shape[0]:
        raise ValueError(
            f"{query.shape[0]} queries at offset {query_offset} but only {positive_embeddings.shape[0]} positives"
        )
    logits = query @ F.normalize(candidates, dim=-1).T / tau
    targets = torch.arange(query.shape[0], device=logits.device) + query_offset
    return F.cross_entropy(logits, targets)
