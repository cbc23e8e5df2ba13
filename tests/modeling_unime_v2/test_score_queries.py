"""Several queries per forward (``UniMEV2Reranker.score_queries``) give the scores of scoring each query alone.

Queries differ in length (so prefixes are padded in the batch), in having an image or not, and in their number of
candidates; candidates mix texts of different lengths and images of different sizes. The tiny judges are sharpened
as in ``test_scoring.py``, so a wrong position or a leaked padding token moves scores far beyond the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from unime_v2.data_builders.tiny_backbones import BACKBONE_KINDS
from unime_v2.modeling_unime_v2 import JudgeScorer, UniMEV2Reranker


TOLERANCE = 1e-4


def sharpen(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 2 / parameter.shape[-1] ** 0.5)
    return model.eval()


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


QUERIES = [
    {"text": "What is at the top left?", "image": noise_image(64, 64, 0)},
    {"text": "Find me an everyday image that matches the given caption: a small red circle", "image": None},
    {
        "text": "Represent the given image with the following question: which colour is the large shape?",
        "image": noise_image(56, 84, 1),
    },
    {"text": "a", "image": noise_image(64, 64, 2)},
]
CANDIDATE_LISTS = [
    [
        {"text": "large purple star", "image": None},
        {"text": "red", "image": None},
        {"text": "a small blue square at the bottom right of the picture", "image": None},
    ],
    [{"text": "Represent the given image.", "image": noise_image(56, 84, 3)}, {"text": "green circle", "image": None}],
    [
        {"text": "", "image": noise_image(90, 40, 4)},
        {"text": "yes", "image": None},
        {"text": "a tiny white triangle above a cyan ellipse", "image": None},
        {"text": "no", "image": None},
    ],
    [{"text": "orange", "image": None}],
]


@pytest.fixture(scope="module")
def judges(tiny_backbone_dirs) -> dict[str, UniMEV2Reranker]:
    """The mining judge: each tiny backbone wrapped as a reranker in the judge layout, sharpened."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    for kind in BACKBONE_KINDS:
        judge = UniMEV2Reranker.from_backbone(str(tiny_backbone_dirs[kind]), pair_format="judge", dtype=torch.float32)
        sharpen(judge.backbone)
        out[kind] = judge
    yield out
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", BACKBONE_KINDS)
def test_several_queries_per_forward_equal_one_query_at_a_time(judges, kind):
    judge = judges[kind]
    expected = [judge.score(query, candidates) for query, candidates in zip(QUERIES, CANDIDATE_LISTS)]
    assert torch.cat(expected).std() > 1e-3, "scores must vary for this test to mean anything"
    for per_forward in (1, 3, 8):  # one query per forward, a ragged last group, all in one
        got = judge.score_queries(QUERIES, CANDIDATE_LISTS, queries_per_forward=per_forward)
        assert [len(g) for g in got] == [len(c) for c in CANDIDATE_LISTS]
        for g, e in zip(got, expected):
            assert g.dtype == torch.float32
            torch.testing.assert_close(g, e, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("kind", ["qwen2_5_vl", "llava_onevision"])
def test_wrong_suffix_positions_are_detected(judges, kind, monkeypatch):
    """Positions one step too far (a plausible off-by-one) must move scores far beyond the tolerance."""
    judge = judges[kind]
    expected = torch.cat([judge.score(q, c) for q, c in zip(QUERIES, CANDIDATE_LISTS)])
    correct = JudgeScorer._suffix_positions
    monkeypatch.setattr(JudgeScorer, "_suffix_positions", lambda *args: correct(*args) + 1)
    got = torch.cat(judge.score_queries(QUERIES, CANDIDATE_LISTS, queries_per_forward=4))
    assert float((got - expected).abs().max()) > 100 * TOLERANCE


def test_mismatched_lengths_raise(judges):
    with pytest.raises(ValueError, match="2 queries but 1 candidate lists"):
        judges["qwen2_vl"].score_queries(QUERIES[:2], CANDIDATE_LISTS[:1])
    with pytest.raises(ValueError, match="query 1 candidate 0: has neither text nor image"):
        judges["qwen2_vl"].score_queries(QUERIES[:2], [CANDIDATE_LISTS[0], [{"text": "", "image": None}]])
