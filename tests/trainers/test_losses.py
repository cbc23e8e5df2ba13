"""The objectives against independent float64 references, at extreme inputs, and against the authors' form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import logsumexp as np_logsumexp

from unime_v2.trainers.losses import (
    candidate_cosines,
    hard_label_loss,
    infonce_loss,
    js_divergence_loss,
    symmetric_kl_authors_loss,
    symmetric_kl_loss,
)


def _softmax64(logits: np.ndarray) -> np.ndarray:
    """Row softmax in float64 via log-sum-exp (scipy), a different route from torch's log_softmax."""
    return np.exp(logits - np_logsumexp(logits, axis=-1, keepdims=True))


def reference_symmetric_kl(sims: np.ndarray, scores: np.ndarray, tau: float) -> float:
    """½ (mean KL(P‖Q) + mean KL(Q‖P)), each KL summed term by term as p·log(p/q) in float64."""
    p, q = _softmax64(sims / tau), _softmax64(scores / tau)
    kl_pq = np.array([sum(pi * math.log(pi / qi) for pi, qi in zip(pr, qr) if pi > 0) for pr, qr in zip(p, q)])
    kl_qp = np.array([sum(qi * math.log(qi / pi) for pi, qi in zip(pr, qr) if qi > 0) for pr, qr in zip(p, q)])
    return 0.5 * (kl_pq.mean() + kl_qp.mean())


def reference_js(sims: np.ndarray, scores: np.ndarray, tau: float) -> float:
    """Mean JS divergence, from scipy's Jensen–Shannon *distance* (natural log) squared."""
    p, q = _softmax64(sims / tau), _softmax64(scores / tau)
    return float(np.mean([jensenshannon(pr, qr) ** 2 for pr, qr in zip(p, q)]))


def reference_infonce(query: np.ndarray, candidates: np.ndarray, targets: np.ndarray, tau: float) -> float:
    """−mean log softmax(cos/τ)[target], cosines from explicit norms, float64."""
    qn = query / np.linalg.norm(query, axis=1, keepdims=True)
    cn = candidates / np.linalg.norm(candidates, axis=1, keepdims=True)
    logits = qn @ cn.T / tau
    log_probs = logits - np_logsumexp(logits, axis=1, keepdims=True)
    return float(-np.mean(log_probs[np.arange(len(targets)), targets]))


def reference_authors(sims: np.ndarray, scores: np.ndarray, tau: float, eps: float) -> float:
    """The authors' arithmetic written out in float64 term by term: Σ Q(log Q − log(P+ε)) + P(log P − log(Q+ε))."""
    p, q = _softmax64(sims / tau), _softmax64(scores / tau)
    kl_q_p = np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0) - q * np.log(p + eps), axis=-1)
    kl_p_q = np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0) - p * np.log(q + eps), axis=-1)
    return float(0.5 * (kl_q_p.mean() + kl_p_q.mean()))


def _random_inputs(seed: int, n: int = 16, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, 1 + k)), rng.uniform(0, 1, (n, 1 + k))


@pytest.mark.parametrize("tau", [0.02, 0.05, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_symmetric_kl_matches_float64_reference(seed: int, tau: float) -> None:
    sims, scores = _random_inputs(seed)
    ours = symmetric_kl_loss(torch.tensor(sims, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32), tau)
    expected = reference_symmetric_kl(sims.astype(np.float32).astype(np.float64), scores.astype(np.float32), tau)
    assert ours.dtype == torch.float32
    assert ours.item() == pytest.approx(expected, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("tau", [0.02, 0.05, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_js_matches_scipy_jensen_shannon(seed: int, tau: float) -> None:
    sims, scores = _random_inputs(seed)
    ours = js_divergence_loss(torch.tensor(sims, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32), tau)
    expected = reference_js(sims.astype(np.float32).astype(np.float64), scores.astype(np.float32), tau)
    assert ours.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert 0.0 <= ours.item() <= math.log(2) + 1e-6


@pytest.mark.parametrize("with_hard_negatives", [False, True])
def test_infonce_matches_reference_with_in_batch_and_hard_negatives(with_hard_negatives: bool) -> None:
    rng = np.random.default_rng(3)
    n, m, k, d, offset = 4, 12, 3, 16, 4  # 4 local queries among 12 gathered positives, theirs at rows 4..7
    query, positives = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    negatives = rng.normal(size=(m, k, d))
    candidates = np.concatenate([positives, negatives.reshape(-1, d)]) if with_hard_negatives else positives
    expected = reference_infonce(query, candidates, np.arange(n) + offset, 0.05)
    ours = infonce_loss(
        torch.tensor(query),
        torch.tensor(positives),
        torch.tensor(negatives) if with_hard_negatives else None,
        tau=0.05,
        query_offset=offset,
    )
    assert ours.item() == pytest.approx(expected, rel=1e-5)
    module = infonce_loss(torch.tensor(query), torch.tensor(positives), None, 0.05, offset)
    assert module.item() == pytest.approx(reference_infonce(query, positives, np.arange(n) + offset, 0.05), rel=1e-5)


@pytest.mark.parametrize("tau", [0.02, 0.5])
def test_hard_labels_are_infonce_over_each_querys_own_candidates_only(tau: float) -> None:
    """Per query, InfoNCE with that query alone in the batch (its positive and its own hard negatives) and no
    other query's candidates; the batch loss is the mean over queries, in float64 by another route too."""
    rng = np.random.default_rng(5)
    n, k, d = 5, 4, 16
    query, positives, negatives = rng.normal(size=(n, d)), rng.normal(size=(n, d)), rng.normal(size=(n, k, d))
    candidates = torch.tensor(np.concatenate([positives[:, None], negatives], axis=1))
    ours = hard_label_loss(candidate_cosines(torch.tensor(query), candidates), tau)
    alone = [
        infonce_loss(
            torch.tensor(query[i : i + 1]), torch.tensor(positives[i : i + 1]), candidates[i : i + 1, 1:], tau
        )
        for i in range(n)
    ]
    assert ours.item() == pytest.approx(torch.stack(alone).mean().item(), rel=1e-6)
    per_query = [reference_infonce(query[i : i + 1], candidates[i].numpy(), np.array([0]), tau) for i in range(n)]
    assert ours.item() == pytest.approx(float(np.mean(per_query)), rel=1e-6)
    in_batch = infonce_loss(torch.tensor(query), torch.tensor(positives), candidates[:, 1:], tau)
    assert in_batch.item() > ours.item()  # other queries' candidates only add to the denominator


def test_candidate_cosines_are_per_query_cosines() -> None:
    rng = np.random.default_rng(4)
    query, candidates = rng.normal(size=(3, 8)), rng.normal(size=(3, 5, 8))
    expected = np.array(
        [[q @ c / (np.linalg.norm(q) * np.linalg.norm(c)) for c in cands] for q, cands in zip(query, candidates)]
    )
    ours = candidate_cosines(torch.tensor(query), torch.tensor(candidates))
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-6)


def _extreme_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    sims = torch.tensor([[1.0, -1.0, -1.0, 1.0], [-1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]], requires_grad=True)
    scores = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    return sims, scores


@pytest.mark.parametrize("loss_fn", [symmetric_kl_loss, js_divergence_loss])
def test_divergences_are_finite_at_extreme_scores(loss_fn) -> None:
    """Cosines ±1 against judge scores 0/1 at τ = 0.01: probabilities of e^-200 must not produce inf or NaN."""
    sims, scores = _extreme_inputs()
    loss = loss_fn(sims, scores, tau=0.01)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(sims.grad).all()
    reference = reference_symmetric_kl if loss_fn is symmetric_kl_loss else reference_js
    assert loss.item() == pytest.approx(
        reference(sims.detach().double().numpy(), scores.double().numpy(), 0.01), rel=1e-4
    )


def test_infonce_is_finite_at_extreme_cosines() -> None:
    embeddings = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    loss = infonce_loss(embeddings, -embeddings, torch.stack([embeddings, embeddings], dim=1), tau=0.01)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(embeddings.grad).all()


def test_divergences_vanish_when_similarities_equal_scores() -> None:
    sims, scores = _random_inputs(5)
    same = torch.tensor(scores, dtype=torch.float32)
    assert symmetric_kl_loss(same, same).item() == pytest.approx(0.0, abs=1e-6)
    assert js_divergence_loss(same, same).item() == pytest.approx(0.0, abs=1e-6)


def test_bf16_inputs_are_computed_in_fp32() -> None:
    sims, scores = _random_inputs(6)
    sims_bf16 = torch.tensor(sims).to(torch.bfloat16)
    scores_bf16 = torch.tensor(scores).to(torch.bfloat16)
    loss = symmetric_kl_loss(sims_bf16, scores_bf16)
    assert loss.dtype == torch.float32
    expected = reference_symmetric_kl(sims_bf16.double().numpy(), scores_bf16.double().numpy(), 0.02)
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_authors_loss_matches_its_float64_reference() -> None:
    sims, scores = _random_inputs(5, n=24)
    for tau in (0.02, 0.2):
        ours = symmetric_kl_authors_loss(torch.tensor(sims), torch.tensor(scores), tau, dtype=torch.float64).item()
        assert ours == pytest.approx(reference_authors(sims, scores, tau, 1e-8), rel=1e-9, abs=1e-12)


def test_authors_loss_without_epsilon_is_symmetric_kl_in_value_and_gradient() -> None:
    sims, scores = _random_inputs(6, n=32)
    sims_exact = torch.tensor(sims, dtype=torch.float32, requires_grad=True)
    sims_authors = torch.tensor(sims, dtype=torch.float32, requires_grad=True)
    target = torch.tensor(scores, dtype=torch.float32)
    exact = symmetric_kl_loss(sims_exact, target, 0.2)
    authors = symmetric_kl_authors_loss(sims_authors, target, 0.2, epsilon=0.0)
    exact.backward()
    authors.backward()
    assert abs(exact.item() - authors.item()) < 1e-6
    assert torch.allclose(sims_exact.grad, sims_authors.grad, atol=1e-6)


def test_authors_epsilon_gap_follows_the_documented_first_order_relation() -> None:
    """Where ε ≪ every probability: L_ε − L ≈ −ε/2 · mean_i Σ_j (P/Q + Q/P) — not −ε/2 · Σ (P−Q)²/(PQ), which
    would vanish at P = Q; checked also at P = Q, where the gap is −ε(1 + k)."""
    sims, scores = _random_inputs(8, n=32)
    tau, eps = 0.2, 1e-8
    p, q = _softmax64(sims / tau), _softmax64(scores / tau)
    assert min(p.min(), q.min()) > 1e3 * eps  # first-order regime
    predicted = -0.5 * eps * np.mean(np.sum(p / q + q / p, axis=-1))
    sims_t, scores_t = torch.tensor(sims), torch.tensor(scores)
    gap = symmetric_kl_authors_loss(sims_t, scores_t, tau, dtype=torch.float64).item() - reference_symmetric_kl(
        sims, scores, tau
    )
    assert gap == pytest.approx(predicted, rel=1e-3)
    at_target = symmetric_kl_authors_loss(scores_t, scores_t, tau, dtype=torch.float64).item()
    assert at_target == pytest.approx(-eps * scores.shape[1], rel=1e-3)


def test_epsilon_kills_the_gradient_of_a_candidate_the_similarities_all_but_exclude() -> None:
    """τ = 0.02, one query: the judge likes candidate 2 (Q ≈ 0.27) but its cosine is 0.5 below the positive's, so
    P_2 ≈ e^-25 ≪ ε. Exact Eq. 4 pulls its similarity up with ≈ −Q_2/(2τ); the authors' ε leaves ≈ 0."""
    tau = 0.02
    sims = torch.tensor([[0.9, 0.6, 0.4]], dtype=torch.float64)
    scores = torch.tensor([[0.9, 0.2, 0.88]], dtype=torch.float64)
    q = torch.softmax(scores / tau, dim=-1)[0, 2].item()
    p = torch.softmax(sims / tau, dim=-1)[0, 2].item()
    assert p < 1e-10 and q > 0.1
    grads = {}
    for name, fn in (("exact", symmetric_kl_loss), ("authors", symmetric_kl_authors_loss)):
        leaf = sims.clone().requires_grad_(True)
        kwargs = {"dtype": torch.float64} if name == "authors" else {}
        fn(leaf, scores, tau, **kwargs).backward()
        grads[name] = leaf.grad[0, 2].item()
    assert grads["exact"] == pytest.approx(-q / (2 * tau), rel=1e-3)
    assert abs(grads["authors"]) < 1e-2 * abs(grads["exact"])  # ~700x smaller here
    assert grads["authors"] == pytest.approx(-q * p / (2 * tau * (p + 1e-8)), rel=1e-2, abs=1e-9)


def test_authors_loss_computes_in_the_input_dtype_unless_told() -> None:
    """bf16 inputs: the arithmetic runs in bf16 (the authors'), and differs from the same loss in fp32."""
    sims, scores = _random_inputs(9, n=8)
    sims_bf16, scores_t = torch.tensor(sims, dtype=torch.bfloat16), torch.tensor(scores)
    in_bf16 = symmetric_kl_authors_loss(sims_bf16, scores_t, 0.02)
    p = torch.softmax(sims_bf16 / 0.02, dim=-1)
    q = torch.softmax(scores_t.bfloat16() / 0.02, dim=-1)
    manual = 0.5 * (
        torch.nn.functional.kl_div(torch.log(p + 1e-8), q, reduction="batchmean")
        + torch.nn.functional.kl_div(torch.log(q + 1e-8), p, reduction="batchmean")
    )
    assert in_bf16.item() == manual.float().item()
    in_fp32 = symmetric_kl_authors_loss(sims_bf16, scores_t, 0.02, dtype=torch.float32)
    assert in_fp32.item() != in_bf16.item()


def test_shape_and_tau_errors_are_clear() -> None:
    with pytest.raises(ValueError, match=r"\(N, 1 \+ k\) with k >= 1, got \(2, 1\)"):
        hard_label_loss(torch.zeros(2, 1))
    with pytest.raises(ValueError, match="tau must be > 0"):
        hard_label_loss(torch.zeros(2, 3), tau=-1.0)
    with pytest.raises(ValueError, match=r"\(N, 1 \+ k\)"):
        symmetric_kl_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="tau"):
        js_divergence_loss(torch.zeros(2, 3), torch.zeros(2, 3), tau=0.0)
