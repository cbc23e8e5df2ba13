"""The UniME-V2-Reranker: prefix-shared scores equal pairs scored alone, listwise parsing and fallback, answer-only
labels per backbone family, the listwise positive's position, bad input, the remote-code round trip, mining's judge."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from unime_v2.data_builders.tiny_backbones import BACKBONE_KINDS
from unime_v2.modeling_unime_v2 import RERANK_LIST_PROMPT, UniMEV2Reranker, UniMEV2RerankerProcessor, parse_answer
from unime_v2.modeling_unime_v2.modeling_unime_v2_reranker import listwise_order
from unime_v2.modeling_unime_v2.scoring_unime_v2 import JudgeScorer
from unime_v2.trainers.reranker import IGNORE_INDEX, RerankerCollator, listwise_candidates


def _image(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> Image.Image:
    image = Image.new("RGB", size, color)
    image.paste((255 - color[0], 255 - color[1], 255 - color[2]), (8, 8, 30, 40))
    return image


QUERY = {"text": "<|image_1|> Find the picture that matches this one.", "image": _image((220, 30, 30))}
CANDIDATES = [
    {"text": "a red square on a white background", "image": None},
    {"text": None, "image": _image((20, 40, 230), (96, 64))},
    {"text": "a blue circle", "image": _image((30, 200, 30))},
    {"text": "nothing at all", "image": None},
]


def sharpen(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Unit-scale weights, so that a wrong position or token changes the scores visibly."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 2 / parameter.shape[-1] ** 0.5)
    return model


@pytest.fixture(scope="module")
def rerankers(tiny_backbone_dirs) -> dict[str, UniMEV2Reranker]:
    out = {}
    for kind in BACKBONE_KINDS:
        reranker = UniMEV2Reranker.from_backbone(str(tiny_backbone_dirs[kind]), dtype=torch.float32)
        sharpen(reranker.backbone)
        out[kind] = reranker.eval()
    return out


def pair_alone(reranker: UniMEV2Reranker, query: dict, candidate: dict) -> float:
    """P(Yes) of one pair from a plain full-vocabulary forward of the whole pair (no cache, no prefix)."""
    processor = reranker.processor
    with torch.no_grad():
        logits = reranker.backbone(**processor.pair_inputs(query, candidate)).logits[0, -1]
    return float(logits[[processor.yes_token_id, processor.no_token_id]].float().softmax(-1)[0])


@pytest.mark.parametrize("kind", BACKBONE_KINDS)
def test_prefix_shared_scores_equal_pairs_scored_alone(kind, rerankers):
    reranker = rerankers[kind]
    scores = reranker.score(QUERY, CANDIDATES, batch_size=3)
    alone = torch.tensor([pair_alone(reranker, QUERY, c) for c in CANDIDATES])
    assert scores.shape == (len(CANDIDATES),) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, alone, atol=1e-4, rtol=0)
    assert float(scores.max() - scores.min()) > 1e-3  # the candidates are told apart: the check has power
    text_query = {"text": "a red square", "image": None}
    torch.testing.assert_close(
        reranker.score(text_query, CANDIDATES),
        torch.tensor([pair_alone(reranker, text_query, c) for c in CANDIDATES]),
        atol=1e-4,
        rtol=0,
    )


def test_pairwise_rerank_sorts_by_score(rerankers):
    reranker = rerankers["qwen2_5_vl"]
    result = reranker.rerank(QUERY, CANDIDATES, mode="pairwise")
    scores = reranker.score(QUERY, CANDIDATES).tolist()
    assert result.order == sorted(range(len(scores)), key=lambda i: -scores[i]) and not result.fallback
    np.testing.assert_allclose(result.scores, scores, atol=1e-6)


def test_layouts_and_released_typo(tiny_backbone_dirs):
    path = str(tiny_backbone_dirs["qwen2_vl"])
    released = UniMEV2Reranker.from_backbone(path, released_typo=True, dtype=torch.float32)
    judge = UniMEV2Reranker.from_backbone(path, pair_format="judge", dtype=torch.float32)
    query, candidate = {"text": "q text", "image": None}, {"text": "c text", "image": None}
    released_text = released.processor.tokenizer.decode(
        released.processor.pair_inputs(query, candidate)["input_ids"][0]
    )
    judge_text = judge.processor.tokenizer.decode(judge.processor.pair_inputs(query, candidate)["input_ids"][0])
    assert "if it doesn't, responed with 'No'.Query:q textCandidate:c text" in released_text
    assert "if it doesn't, respond with 'No'. Query:q text, Candidates:c text." in judge_text
    # the judge layout is JudgeScorer's default: a plain VLM judge and the wrapped one give the same scores
    plain = JudgeScorer(judge.backbone, judge.processor.backbone)
    np.testing.assert_allclose(judge.score(QUERY, CANDIDATES).numpy(), plain.score(QUERY, CANDIDATES), atol=1e-6)


# ------------------------------------------------------------------------------------------ listwise
@pytest.mark.parametrize(
    ("answer", "expected"),
    [("Ans: (3)", 2), ("(3)", 2), ("3", 2), (" Ans: (1) because", 0), ("Ans: (5)", None), ("(0)", None), ("no", None)],
)
def test_parse_answer(answer, expected):
    assert parse_answer(answer, num_candidates=4) == expected


def test_listwise_fallback_keeps_the_incoming_order(rerankers, monkeypatch):
    reranker = rerankers["qwen2_5_vl"]
    answers = iter(["Ans: (3)", "garbage", "Ans: (7)"])
    monkeypatch.setattr(reranker, "generate_answer", lambda query, candidates: next(answers))
    chosen = reranker.rerank(QUERY, CANDIDATES)
    assert chosen.order == [2, 0, 1, 3] and not chosen.fallback and chosen.scores is None
    for _ in range(2):
        kept = reranker.rerank(QUERY, CANDIDATES)
        assert kept.order == [0, 1, 2, 3] and kept.fallback
    assert listwise_order(None, 3) == [0, 1, 2]


@pytest.mark.parametrize("kind", BACKBONE_KINDS)
def test_real_listwise_generation_gives_a_permutation(kind, rerankers):
    result = rerankers[kind].rerank(QUERY, CANDIDATES)
    assert sorted(result.order) == list(range(len(CANDIDATES))) and isinstance(result.answer, str)
    assert result.fallback == (parse_answer(result.answer, len(CANDIDATES)) is None)


# ------------------------------------------------------------------------------------------ training rows
@pytest.mark.parametrize("kind", BACKBONE_KINDS)
def test_only_answer_tokens_carry_labels(kind, rerankers):
    reranker = rerankers[kind]
    collator = RerankerCollator.for_model(reranker, reranker.processor, num_list_negatives=3, seed=1)
    record = {
        "query": QUERY,
        "positive": CANDIDATES[0],
        "negatives": CANDIDATES[1:],
        "scores": [1.0, 0.2, 0.9, 0.5],
    }
    batch = collator([record])
    tokenizer = reranker.processor.tokenizer
    listwise = batch["listwise"]
    labelled = listwise["labels"][0] != IGNORE_INDEX
    answer = tokenizer.decode(listwise["input_ids"][0][labelled])
    position = parse_answer(answer, 4)
    assert answer == f"Ans: ({position + 1})<|im_end|>\n"  # the answer turn as the chat template closes it
    assert torch.equal(listwise["labels"][0][labelled], listwise["input_ids"][0][labelled])
    prompt = tokenizer.decode(listwise["input_ids"][0][~labelled])
    assert prompt.rstrip().endswith("assistant") and RERANK_LIST_PROMPT in prompt  # the answer follows the turn
    # the positive sits at the answered position: its text is after "(position + 1) "
    assert f"({position + 1}) a red square" in prompt
    # pairs: positive -> Yes, the hardest negative by judge score (0.9: the image-only one) -> No
    assert [tokenizer.decode([t]) for t in batch["labels"].tolist()] == ["Yes", "No"]
    last = batch["attention_mask"].sum(-1) - 1
    assert tokenizer.decode(batch["input_ids"][1, : last[1] + 1]).count("a red square") == 0


def test_pairwise_negatives_are_the_hardest_by_judge_score(rerankers):
    """``num_pair_negatives=2``: one Yes pair (the positive) and No pairs for the two negatives with the highest
    judge scores, hardest first."""
    reranker = rerankers["qwen2_5_vl"]
    collator = RerankerCollator.for_model(reranker, reranker.processor, listwise=False, num_pair_negatives=2)
    record = {"query": QUERY, "positive": CANDIDATES[0], "negatives": CANDIDATES[1:], "scores": [1.0, 0.2, 0.9, 0.5]}
    batch = collator([record])
    tokenizer = reranker.processor.tokenizer
    assert [tokenizer.decode([t]) for t in batch["labels"].tolist()] == ["Yes", "No", "No"]
    texts = [tokenizer.decode(row[mask.bool()]) for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
    for text, candidate in zip(texts, ("a red square", "a blue circle", "nothing at all")):
        assert candidate in text and sum(c["text"] in text for c in CANDIDATES if c["text"]) == 1
    with pytest.raises(ValueError, match="num_pair_negatives must be >= 1"):
        RerankerCollator.for_model(reranker, reranker.processor, num_pair_negatives=0)


def test_listwise_positive_position_is_uniform_over_all_slots():
    rng = random.Random(0)
    negatives, scores = list("abcdefg"), [0.1, 0.9, 0.5, 0.7, 0.3, 0.8, 0.2]
    draws = 6000
    positions = Counter()
    for _ in range(draws):
        candidates, position = listwise_candidates("P", negatives, scores, 5, rng)
        assert candidates[position] == "P" and [c for c in candidates if c != "P"] == ["b", "f", "d", "c", "e"]
        positions[position] += 1
    assert sorted(positions) == list(range(6))  # the last slot too
    expected = draws / 6
    tolerance = 4 * (draws * (1 / 6) * (5 / 6)) ** 0.5  # 4 standard deviations
    assert all(abs(count - expected) < tolerance for count in positions.values()), positions


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input_errors_are_clear(rerankers, tmp_path):
    reranker = rerankers["qwen2_5_vl"]
    with pytest.raises(ValueError, match="empty candidate list"):
        reranker.score(QUERY, [])
    with pytest.raises(ValueError, match="empty candidate list"):
        reranker.rerank(QUERY, [])
    missing = {"text": "x", "image": str(tmp_path / "missing.png")}
    with pytest.raises(FileNotFoundError, match=r"candidate 1: image file .*missing.png"):
        reranker.score(QUERY, [CANDIDATES[0], missing])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"candidate 2: cannot read image file .*broken.png"):
        reranker.rerank(QUERY, [CANDIDATES[0], CANDIDATES[3], {"text": None, "image": str(broken)}])
    many = [{"text": f"candidate number {i} with some words", "image": None} for i in range(40)]
    one = len(reranker.processor.listwise_piece({"text": "q", "image": None}, many[:1]))
    reranker.config.max_length = one + reranker.config.max_new_tokens + 30
    try:
        with pytest.raises(ValueError, match=r"40 candidates do not fit .* at most [1-9]\d* of these candidates fit"):
            reranker.rerank({"text": "q", "image": None}, many)
        with pytest.raises(ValueError, match="candidate 0: the pairwise prompt needs"):
            reranker.score({"text": "q " * 200, "image": None}, many[:1])
    finally:
        reranker.config.max_length = None


# ------------------------------------------------------------------------------------------ round trip
@pytest.mark.slow
def test_save_load_with_automodel_in_a_new_process(rerankers, tmp_path):
    reranker = rerankers["qwen2_5_vl"]
    reranker.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["auto_map"]["AutoModel"].endswith("UniMEV2Reranker")
    _image((220, 30, 30)).save(tmp_path / "q.png")
    query = {"text": QUERY["text"], "image": str(tmp_path / "q.png")}
    texts = [{"text": c["text"] or "x", "image": None} for c in CANDIDATES]
    expected = reranker.score(query, texts)
    answer = reranker.rerank(query, texts).answer
    script = textwrap.dedent(
        f"""
        import json, torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True, dtype=torch.float32)
        query, texts = {query!r}, {texts!r}
        torch.save({{"module": type(model).__module__, "scores": model.score(query, texts),
                    "answer": model.rerank(query, texts).answer}}, {str(tmp_path / "out.pt")!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    result = torch.load(tmp_path / "out.pt")
    assert result["module"].startswith("transformers_modules.")
    torch.testing.assert_close(result["scores"], expected, atol=1e-5, rtol=0)
    assert result["answer"] == answer


def test_mining_judge_is_the_rerankers_scoring_core(tiny_backbone_dirs, rerankers, tmp_path):
    from unime_v2.data_builders.mining.config import MiningConfig
    from unime_v2.data_builders.mining.models import load_judge

    path = str(tiny_backbone_dirs["qwen2_5_vl"])
    config = MiningConfig(judge=path, judge_dtype="float32", judge_batch_size=2)
    judge = load_judge(path, config, torch.device("cpu"))
    assert isinstance(judge, UniMEV2Reranker) and judge.config.pair_format == "judge"
    reference = JudgeScorer.from_pretrained(path, device="cpu")  # the plain VLM in the judge layout
    np.testing.assert_allclose(judge.score(QUERY, CANDIDATES).numpy(), reference.score(QUERY, CANDIDATES), atol=1e-6)
    assert judge.config.batch_size == 2 and judge.scorer.batch_size == 2
    # a saved reranker folder is a judge too, in its own (reranker) layout
    saved = tmp_path / "reranker"
    rerankers["qwen2_vl"].save_pretrained(saved)
    judge = load_judge(str(saved), MiningConfig(judge=str(saved), judge_dtype="float32"), torch.device("cpu"))
    torch.testing.assert_close(judge.score(QUERY, CANDIDATES), rerankers["qwen2_vl"].score(QUERY, CANDIDATES))
    # the processor alone (no model), from either folder, renders as the loaded model does
    for folder, model in ((str(saved), rerankers["qwen2_vl"]), (path, load_judge(path, config, torch.device("cpu")))):
        alone = UniMEV2RerankerProcessor.from_pretrained(folder).pair_inputs(QUERY, CANDIDATES[2])
        expected = model.processor.pair_inputs(QUERY, CANDIDATES[2])
        assert alone.keys() == expected.keys() and all(torch.equal(alone[k], expected[k]) for k in alone)
