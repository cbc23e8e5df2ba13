"""The judge: prefix-shared scores equal each full pair scored alone, on Qwen2-VL, Qwen2.5-VL and LLaVA-OneVision.

The tiny random backbones are "sharpened" (weights re-drawn at unit scale) so that scores depend strongly on every
token and position: with the default 0.02 init, even wrong positions change a score by < 1e-4, and the equality
tests would prove nothing. ``test_wrong_positions_are_detected`` checks that the tests have that power.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from unime_v2.data_builders.tiny_backbones import BACKBONE_KINDS, load_tiny_backbone
from unime_v2.modeling_unime_v2 import JUDGE_PROMPT, JudgeScorer, answer_token_id


TOLERANCE = 1e-4


def sharpen(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 2 / parameter.shape[-1] ** 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def judges(tiny_backbone_dirs) -> dict[str, JudgeScorer]:
    out = {}
    for kind in BACKBONE_KINDS:
        model, processor = load_tiny_backbone(tiny_backbone_dirs[kind])
        out[kind] = JudgeScorer(sharpen(model), processor, batch_size=64)
    return out


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


IMAGE_QUERY = {
    "text": "Represent the given image with the following question: What is at the top left?",
    "image": noise_image(64, 64, 0),
}
TEXT_QUERY = {"text": "Find me an everyday image that matches the given caption: a small red circle", "image": None}
CANDIDATES = [
    {"text": "large purple star", "image": None},
    {"text": "Represent the given image.", "image": noise_image(56, 84, 1)},
    {"text": "red", "image": None},
    {"text": "", "image": noise_image(90, 40, 2)},
    {"text": "a small blue square at the bottom right of the picture", "image": None},
    {"text": "Represent the given cropped image of the object.", "image": noise_image(64, 64, 3)},
]


def reference_scores(judge: JudgeScorer, query, candidates) -> np.ndarray:
    """Each full pair alone through the plain model forward (the model computes its own positions)."""
    scores = []
    with torch.no_grad():
        for candidate in candidates:
            inputs = judge.full_pair_inputs(query, candidate)
            if not judge._takes_mm_types:
                inputs.pop("mm_token_type_ids", None)
            logits = judge.model(**inputs).logits[0, -1, [judge.yes_token_id, judge.no_token_id]]
            scores.append(float(logits.float().softmax(-1)[0]))
    return np.array(scores)


@pytest.mark.parametrize("kind", BACKBONE_KINDS)
@pytest.mark.parametrize("query", [IMAGE_QUERY, TEXT_QUERY], ids=["image-query", "text-query"])
def test_prefix_shared_scores_equal_full_pairs_alone(judges, kind, query):
    judge = judges[kind]
    expected = reference_scores(judge, query, CANDIDATES)
    assert expected.std() > 1e-3, "scores must vary across candidates for this test to mean anything"
    for batch_size in (1, 4, 64):  # one suffix per forward, a ragged last batch, all in one
        judge.batch_size = batch_size
        np.testing.assert_allclose(judge.score(query, CANDIDATES), expected, atol=TOLERANCE, rtol=0)
    judge.batch_size = 64


@pytest.mark.parametrize("kind", BACKBONE_KINDS)
def test_batched_full_pairs_and_generate_equal_the_reference(judges, kind):
    judge = judges[kind]
    expected = reference_scores(judge, IMAGE_QUERY, CANDIDATES)
    np.testing.assert_allclose(judge.score_full_pairs(IMAGE_QUERY, CANDIDATES), expected, atol=TOLERANCE, rtol=0)
    generated = [judge.score_with_generate(IMAGE_QUERY, c) for c in CANDIDATES[:2]]
    np.testing.assert_allclose(generated, expected[:2], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("kind", BACKBONE_KINDS)
def test_wrong_positions_are_detected(judges, kind, monkeypatch):
    """Suffix positions off by 5 (a plausible bug) must move the scores far beyond the tolerance."""
    judge = judges[kind]
    expected = reference_scores(judge, IMAGE_QUERY, CANDIDATES)
    correct = JudgeScorer._positions

    def off_by_five(self, inputs):
        positions = correct(self, inputs)
        is_suffix_batch = inputs["input_ids"].shape[0] > 1  # the prefill has one row, the suffix batch several
        return (positions - 5).clamp(min=0) if is_suffix_batch else positions

    monkeypatch.setattr(JudgeScorer, "_positions", off_by_five)
    assert np.abs(judge.score(IMAGE_QUERY, CANDIDATES) - expected).max() > 100 * TOLERANCE


@pytest.mark.parametrize("kind", BACKBONE_KINDS)
def test_prompt_is_the_papers_prompt_in_the_chat_template(judges, kind):
    judge = judges[kind]
    candidate = CANDIDATES[1]
    encoded = judge.encode(IMAGE_QUERY, [candidate])
    prefix = encoded.prefix
    ids = encoded.pair(0).input_ids.tolist()
    tokenizer = judge.processor.tokenizer
    text = tokenizer.decode(ids)
    image_token = judge.processor.image_token
    while image_token * 2 in text:
        text = text.replace(image_token * 2, image_token)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": JUDGE_PROMPT},
                {"type": "text", "text": " Query:"},
                {"type": "image"},
                {"type": "text", "text": IMAGE_QUERY["text"]},
                {"type": "text", "text": ", Candidates:"},
                {"type": "image"},
                {"type": "text", "text": candidate["text"]},
                {"type": "text", "text": "."},
            ],
        }
    ]
    assert text == judge.processor.backbone.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "respond with 'No'. Query:" in text and text.index(", Candidates:") > text.index(IMAGE_QUERY["text"])
    # the shared prefix is a token prefix of every whole pair, including the reference inputs
    encoded = judge.encode(IMAGE_QUERY, CANDIDATES)
    for c in CANDIDATES:
        full = judge.full_pair_inputs(IMAGE_QUERY, c)["input_ids"][0].cpu()
        assert torch.equal(full[: len(encoded.prefix.input_ids)], encoded.prefix.input_ids)
    assert len(prefix.images) == 1 and len(encoded.prefix.images) == 1  # the query image, never a candidate's


def test_yes_and_no_ids_come_from_the_tokenizer(judges):
    for judge in judges.values():
        tokenizer = judge.processor.tokenizer
        assert tokenizer.decode([judge.yes_token_id]) == "Yes"
        assert tokenizer.decode([judge.no_token_id]) == "No"
        assert judge.yes_token_id == tokenizer.encode("Yes", add_special_tokens=False)[0]


def test_answer_that_is_not_a_single_token_raises(judges):
    characters = {c: i for i, c in enumerate(sorted(set("YesNo abcdefghijklmnopqrstuvwxyz")))}
    char_level = Tokenizer(models.BPE(vocab=characters, merges=[]))
    char_level.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=char_level)
    with pytest.raises(ValueError, match=r"'Yes' as 3 tokens.*single token"):
        answer_token_id(tokenizer, "Yes")
    judge = judges["qwen2_vl"]
    processor = copy.copy(judge.processor.backbone)
    processor.tokenizer = tokenizer
    with pytest.raises(ValueError, match="single token"):
        JudgeScorer(judge.model, processor)


def test_template_that_moves_images_first_shares_a_shorter_prefix(judges):
    """LLaVA-OneVision's Hub template renders all images first: the pairs still share their longest common prefix,
    which then ends before the first candidate image (here right after the query image), and scores stay exact."""
    judge = judges["llava_onevision"]
    processor = copy.deepcopy(judge.processor.backbone)
    processor.chat_template = (  # the structure of llava-hf/llava-onevision-qwen2-*-ov-hf's template
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}<image>{% endfor %}"
        "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}\n{{ part['text'] }}{% endfor %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    images_first = JudgeScorer(judge.model, processor)
    encoded = images_first.encode(IMAGE_QUERY, CANDIDATES)
    query_run = images_first.processor.inputs([encoded.pair(0)])["input_ids"][0].eq(processor.image_token_id)
    assert len(encoded.prefix.images) == 1 and int(encoded.prefix.input_ids.eq(processor.image_token_id).sum()) == int(
        query_run.sum()
    )
    assert all(len(s.images) == int(CANDIDATES[i]["image"] is not None) for i, s in enumerate(encoded.suffixes))
    expected = reference_scores(images_first, IMAGE_QUERY, CANDIDATES)
    np.testing.assert_allclose(images_first.score(IMAGE_QUERY, CANDIDATES), expected, atol=TOLERANCE, rtol=0)
    # two image candidates whose runs are equally long: the prefix still stops before them
    same_size = [CANDIDATES[5], {"text": "other", "image": noise_image(64, 64, 9)}]
    encoded = images_first.encode({"text": "a text query", "image": None}, same_size)
    assert not encoded.prefix.images and not encoded.prefix.input_ids.eq(processor.image_token_id).any()
    expected = reference_scores(images_first, {"text": "a text query", "image": None}, same_size)
    np.testing.assert_allclose(
        images_first.score({"text": "a text query", "image": None}, same_size), expected, atol=TOLERANCE, rtol=0
    )
