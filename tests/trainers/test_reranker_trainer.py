"""Pairwise judge training: the loss is the judge's own answer cross-entropy, training makes a better judge, the
saved folder is a judge, and bad pair data fails loudly.

The loss-equality tests use a "sharpened" tiny Qwen2.5-VL (weights re-drawn at unit scale) so that reading the
wrong position or the wrong token would change the loss visibly (checked in the test itself).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainingArguments

from unime_v2.data_builders.formats.judge_pairs import (
    JudgePair,
    JudgePairDataset,
    build_judge_pairs,
    check_pair_dataset,
    judge_text,
    positive_keys,
    split_queries,
)
from unime_v2.data_builders.mini_mmeb import MiniMMEBConfig, build_mini_mmeb
from unime_v2.data_builders.tiny_backbones import BACKBONE_KINDS, load_tiny_backbone, scratch_init_
from unime_v2.modeling_unime_v2.scoring_unime_v2 import JudgeScorer
from unime_v2.trainers.evaluation.judge_quality import judge_quality, rankdata, roc_auc, spearman
from unime_v2.trainers.reranker import (
    RerankerCollator,
    UniMEV2RerankerTrainer,
    UniMEV2RerankerTrainingArguments,
    answer_logits,
    judge_losses,
)


def sharpen(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 2 / parameter.shape[-1] ** 0.5)
    return model.eval()


def trainer_args(tmp_path: Path, **kwargs) -> UniMEV2RerankerTrainingArguments:
    return UniMEV2RerankerTrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        **kwargs,
    )


@pytest.fixture(scope="module")
def mini_train():
    """Ten mini-MMEB training records per IND task (90), with images."""
    config = MiniMMEBConfig(
        seed=1,
        train_pairs=90,
        eval_queries=1,
        num_candidates=2,
        caption_images=0,
        long_caption_images=0,
        compositional_per_subset=0,
    )
    return build_mini_mmeb(config)["mmeb"]["train"]


@pytest.fixture(scope="module")
def sharp_judges(tiny_backbone_dirs) -> dict[str, JudgeScorer]:
    out = {}
    for kind in BACKBONE_KINDS:
        model, processor = load_tiny_backbone(tiny_backbone_dirs[kind])
        out[kind] = JudgeScorer(sharpen(model), processor)
    return out


@pytest.fixture(scope="module")
def sharp_judge(sharp_judges) -> JudgeScorer:
    return sharp_judges["qwen2_5_vl"]


@pytest.fixture(scope="module")
def mixed_features(mini_train):
    """One pair per task, Yes and No alternating: text / image queries, text / image candidates."""
    pairs = build_judge_pairs(mini_train, num_negatives=1, seed=0)
    out, seen = [], set()
    for i in range(len(pairs)):
        item = pairs[i]
        if item["source"] in seen or item["label"] != len(seen) % 2:
            continue
        seen.add(item["source"])
        out.append(item)
    assert len(out) == 9
    return out


# ------------------------------------------------------------------------------------------ loss = judge's CE
def reference_ce(scorer: JudgeScorer, feature: dict, offset: int = 1) -> torch.Tensor:
    """−log softmax over the vocabulary at the judge's answer position, from one plain forward of the full pair."""
    target = scorer.yes_token_id if feature["label"] else scorer.no_token_id
    with torch.no_grad():
        logits = scorer.model(**scorer.full_pair_inputs(feature["query"], feature["candidate"])).logits[0, -offset]
    return -logits.float().log_softmax(-1)[target]


@pytest.mark.parametrize("kind", BACKBONE_KINDS)
def test_loss_is_cross_entropy_at_the_judges_answer_position(kind, sharp_judges, mixed_features, tmp_path):
    sharp_judge = sharp_judges[kind]
    collator = RerankerCollator(sharp_judge.processor)
    batch = collator(mixed_features)
    trainer = UniMEV2RerankerTrainer(model=sharp_judge.model, args=trainer_args(tmp_path), data_collator=collator)
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(sharp_judge.model, dict(batch), return_outputs=True)
    reference = torch.stack([reference_ce(sharp_judge, f) for f in mixed_features]).mean()
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)

    # the trained position is the one the judge reads: softmax([Yes, No]) of the answer logits == JudgeScorer.score
    yes_probability = outputs["logits"].float().softmax(-1)[:, 0].numpy()
    scores = np.array([sharp_judge.score(f["query"], [f["candidate"]])[0] for f in mixed_features])
    np.testing.assert_allclose(yes_probability, scores, atol=1e-4)

    # the test has power: the position before, or the other answer token, gives a clearly different loss
    shifted = torch.stack([reference_ce(sharp_judge, f, offset=2) for f in mixed_features]).mean()
    flipped = torch.stack([reference_ce(sharp_judge, {**f, "label": 1 - f["label"]}) for f in mixed_features]).mean()
    assert abs(float(shifted - reference)) > 1e-2 and abs(float(flipped - reference)) > 1e-2


def test_the_trainer_reads_its_loss_settings_from_its_arguments(sharp_judge, mixed_features, tmp_path):
    """The objective's settings live in UniMEV2RerankerTrainingArguments only: the trainer reads them from
    ``self.args`` (the loss weights, and through its default collator the candidate LM masks and the listwise rows)."""
    model, processor = sharp_judge.model, sharp_judge.processor

    def trainer(**settings) -> UniMEV2RerankerTrainer:
        return UniMEV2RerankerTrainer(model=model, args=trainer_args(tmp_path, **settings), processing_class=processor)

    def loss(**settings) -> torch.Tensor:
        built = trainer(**settings)
        with torch.no_grad():
            return built.compute_loss(model, dict(built.data_collator(mixed_features)))

    torch.testing.assert_close(loss(pair_weight=2.0), 2 * loss())
    collator = trainer(list_weight=0.0, candidate_lm_weight=0.5).data_collator
    assert collator.candidate_lm and not collator.listwise
    with pytest.raises(TypeError, match="pair_weight"):
        UniMEV2RerankerTrainer(model=model, args=trainer_args(tmp_path), processing_class=processor, pair_weight=2.0)
    with pytest.raises(TypeError, match="needs args=UniMEV2RerankerTrainingArguments"):
        UniMEV2RerankerTrainer(model=model, args=TrainingArguments(str(tmp_path)), processing_class=processor)
    with pytest.raises(ValueError, match="list_weight must be >= 0"):
        trainer_args(tmp_path, list_weight=-1.0)


def test_collator_rows_are_the_judges_full_pair_inputs(sharp_judge, mixed_features):
    collator = RerankerCollator(sharp_judge.processor)
    batch = collator(mixed_features)
    lengths = batch["attention_mask"].sum(-1)
    patches = 0
    for row, feature in enumerate(mixed_features):
        reference = sharp_judge.full_pair_inputs(feature["query"], feature["candidate"])
        n = int(lengths[row])
        assert torch.equal(batch["input_ids"][row, :n], reference["input_ids"][0])
        assert torch.equal(batch["mm_token_type_ids"][row, :n].long(), reference["mm_token_type_ids"][0].long())
        assert not batch["attention_mask"][row, n:].any()
        patches += reference["pixel_values"].shape[0] if "pixel_values" in reference else 0
    assert batch["pixel_values"].shape[0] == patches
    assert batch["image_grid_thw"].shape[0] == sum(
        (f["query"]["image"] is not None) + (f["candidate"]["image"] is not None) for f in mixed_features
    )
    expected = [collator.yes_token_id if f["label"] else collator.no_token_id for f in mixed_features]
    assert batch["labels"].tolist() == expected

    one = mixed_features[0]
    for label, token in ((True, collator.yes_token_id), ("No", collator.no_token_id), (1, collator.yes_token_id)):
        assert collator([{**one, "label": label}])["labels"].tolist() == [token]
    with pytest.raises(ValueError, match="pair 0: label must be"):
        collator([{**one, "label": 2}])
    with pytest.raises(KeyError, match="pair 0: a judge pair needs 'query' and 'candidate'"):
        collator([{"query": one["query"], "label": 1}])


def test_candidate_lm_term(sharp_judge, mixed_features):
    """The optional LM term targets exactly the positive's text tokens, each predicted from the position before."""
    collator = RerankerCollator(sharp_judge.processor, candidate_lm=True)
    batch = collator(mixed_features)
    mask = batch["candidate_lm_mask"]
    tokenizer = sharp_judge.processor.tokenizer
    expected_lm = []
    for row, feature in enumerate(mixed_features):
        marked = batch["input_ids"][row][mask[row]]
        text = feature["candidate"]["text"]
        if feature["label"] and text:
            assert tokenizer.decode(marked) == text
            with torch.no_grad():
                inputs = sharp_judge.full_pair_inputs(feature["query"], feature["candidate"])
                logits = sharp_judge.model(**inputs).logits[0]
            positions = mask[row].nonzero().squeeze(-1)
            expected_lm.append(
                -logits[positions - 1]
                .float()
                .log_softmax(-1)
                .gather(1, batch["input_ids"][row, positions][:, None])
                .squeeze(-1)
            )
        else:
            assert not mask[row].any()
    assert expected_lm, "no Yes pair with candidate text in the batch"
    with torch.no_grad():
        loss, answer, lm_loss = judge_losses(sharp_judge.model, batch, candidate_lm_weight=0.5)
        plain, _, none = judge_losses(sharp_judge.model, batch, candidate_lm_weight=0.0)
    torch.testing.assert_close(lm_loss, torch.cat(expected_lm).mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, plain + 0.5 * lm_loss, rtol=1e-6, atol=1e-6)
    assert none is None
    with torch.no_grad():
        torch.testing.assert_close(answer, answer_logits(sharp_judge.model, batch), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ training helps
def describe(scene: dict) -> str:
    objects = " and ".join(f"{o['size']} {o['color']} {o['shape']}" for o in scene["objects"])
    return f"{objects} on a {scene['background']} background"


@pytest.fixture(scope="module")
def text_records():
    """Mini-MMEB classification pairs with the query image replaced by its scene described in words.

    A text-only judge task (learnable in seconds on a CPU) with the real oracle: the records keep their scene
    columns, so quality is measured exactly as for image queries.
    """
    config = MiniMMEBConfig(
        seed=2,
        train_pairs=700,
        eval_queries=1,
        num_candidates=2,
        caption_images=0,
        long_caption_images=0,
        compositional_per_subset=0,
        tasks=["MiniImageNet-cls"],
    )
    rows = build_mini_mmeb(config)["mmeb"]["train"].remove_columns(["qry_image", "pos_image"])
    return [
        {
            "qry": f"Classify: {describe(json.loads(r['qry_scene'])['scene'])}",
            "qry_image": None,
            "pos_text": r["pos_text"],
            "pos_image": None,
            "dataset": r["dataset"],
            "qry_scene": r["qry_scene"],
            "pos_scene": r["pos_scene"],
        }
        for r in rows
    ]


@pytest.fixture(scope="module")
def trained(tiny_backbone_dirs, text_records, tmp_path_factory):
    """A tiny judge trained briefly from scratch; returns the quality before / after and the saved folder."""
    path = tiny_backbone_dirs["qwen2_5_vl"]
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(path)
    scratch_init_(model, seed=0)
    train_ids, heldout_ids = split_queries(text_records, heldout_fraction=0.2, seed=0)
    pairs = build_judge_pairs(text_records, num_negatives=1, seed=0, query_indices=train_ids)

    def quality():
        return judge_quality(
            JudgeScorer(model, processor), text_records, query_indices=heldout_ids, num_candidates=3, seed=1
        )

    before = quality()
    out = tmp_path_factory.mktemp("trained_judge")
    trainer = UniMEV2RerankerTrainer(
        model=model.train(),
        args=trainer_args(
            out,
            max_steps=500,
            per_device_train_batch_size=16,
            learning_rate=1e-3,
            warmup_steps=10,
            lr_scheduler_type="constant_with_warmup",
            seed=0,
            logging_steps=50,
            list_weight=0.0,
            candidate_lm_weight=1.0,
        ),
        train_dataset=pairs,
        processing_class=processor,
    )
    trainer.train()
    after = quality()
    trainer.save_model(str(out))
    processor.save_pretrained(str(out))
    return {
        "before": before,
        "after": after,
        "dir": out,
        "model": model.eval(),
        "processor": processor,
        "records": text_records,
        "heldout": heldout_ids,
    }


@pytest.mark.slow  # the 500-step training fixture
def test_training_raises_heldout_auc_against_the_oracle(trained):
    before, after = trained["before"], trained["after"]
    print(f"held-out AUC {before.auc:.3f} -> {after.auc:.3f}, Spearman {before.spearman:.3f} -> {after.spearman:.3f}")
    assert abs(before.auc - 0.5) < 0.15, before
    assert after.auc > before.auc + 0.2 and after.auc > 0.8, (before, after)
    assert after.spearman > before.spearman + 0.2, (before, after)
    assert after.num_queries == len(trained["heldout"]) and after.num_false_negatives >= 0


@pytest.mark.slow  # the 500-step training fixture
def test_saved_folder_is_a_judge(trained):
    judge = JudgeScorer.from_pretrained(str(trained["dir"]), device="cpu")
    in_memory = JudgeScorer(trained["model"], trained["processor"])
    records = trained["records"]
    pairs = build_judge_pairs(records, 3, seed=5, query_indices=trained["heldout"][:3])
    for query, group in pairs.by_query().items():
        candidates = [pairs.positive_item(p.candidate_index) for p in group]
        np.testing.assert_allclose(
            judge.score(pairs.query_item(query), candidates),
            in_memory.score(pairs.query_item(query), candidates),
            atol=1e-5,
        )


# ------------------------------------------------------------------------------------------ pair building
def test_pairs_are_in_pool_distinct_and_seeded(mini_train):
    pairs = build_judge_pairs(mini_train, num_negatives=3, seed=7)
    keys = positive_keys(mini_train)
    sources = mini_train["dataset"]
    groups = pairs.by_query()
    assert sorted(groups) == list(range(len(mini_train)))
    for query, group in groups.items():
        assert group[0] == JudgePair(query, query, 1, sources[query])
        negatives = [p.candidate_index for p in group[1:]]
        assert 1 <= len(negatives) <= 3 and all(p.label == 0 for p in group[1:])
        assert all(sources[j] == sources[query] for j in negatives)
        assert all(keys[j] != keys[query] for j in negatives)
        assert len({keys[j] for j in negatives}) == len(negatives)
    again = build_judge_pairs(mini_train, num_negatives=3, seed=7)
    assert again.pairs == pairs.pairs
    assert build_judge_pairs(mini_train, num_negatives=3, seed=8).pairs != pairs.pairs
    # a record's draw depends on (seed, record), not on which other records are queries
    some = build_judge_pairs(mini_train, 3, seed=7, query_indices=[5, 40], pool_indices=range(len(mini_train)))
    assert some.by_query()[40] == groups[40] and some.by_query()[5] == groups[5]
    item = pairs[1]
    assert item["query"]["text"] == judge_text(mini_train[0]["qry"]) and "<|image_1|>" not in item["query"]["text"]
    assert pairs.num_positive == len(mini_train) and pairs.num_negative == len(pairs) - len(mini_train)


def test_split_queries_is_stratified(mini_train):
    train, heldout = split_queries(mini_train, heldout_fraction=0.2, seed=0)
    assert sorted(train + heldout) == list(range(len(mini_train)))
    sources = mini_train["dataset"]
    assert {sources[i] for i in heldout} == set(sources) == {sources[i] for i in train}
    with pytest.raises(ValueError, match="heldout_fraction"):
        split_queries(mini_train, heldout_fraction=1.0)


def toy(source: str, query: str, positive: str) -> dict:
    return {"qry": query, "qry_image": None, "pos_text": positive, "pos_image": None, "dataset": source}


def test_empty_pool_names_the_record():
    records = [toy("A", "q0", "p0"), toy("A", "q1", "p1"), toy("Solo", "lonely query", "p2")]
    lonely = r"record 2 \(dataset 'Solo', query 'lonely query'\) has an empty candidate pool"
    with pytest.raises(ValueError, match=lonely):
        build_judge_pairs(records)
    same = [toy("B", "q0", "same"), toy("B", "q1", "same")]  # one distinct positive: nothing to contrast
    with pytest.raises(ValueError, match=r"record 0 \(dataset 'B', query 'q0'\) has an empty candidate pool"):
        build_judge_pairs(same)
    with pytest.raises(ValueError, match="num_negatives must be an int >= 1"):
        build_judge_pairs(records[:2], num_negatives=0)


def test_pairs_without_negatives_are_refused(tmp_path, tiny_backbone_dirs):
    records = [toy("A", "first query", "p0"), toy("A", "q1", "p1")]
    only_yes = JudgePairDataset(records, [JudgePair(0, 0, 1, "A"), JudgePair(1, 1, 1, "A"), JudgePair(1, 0, 0, "A")])
    named = r"no negative \('No'\) pair for record 0 \(dataset 'A', query 'first query'\)"
    with pytest.raises(ValueError, match=named):
        check_pair_dataset(only_yes)
    model, processor = load_tiny_backbone(tiny_backbone_dirs["qwen2_5_vl"])
    with pytest.raises(ValueError, match=r"no negative \('No'\) pair for record 0"):
        UniMEV2RerankerTrainer(
            model=model, args=trainer_args(tmp_path), train_dataset=only_yes, processing_class=processor
        )
    import datasets

    table = datasets.Dataset.from_dict({"query_index": [0, 1], "label": [1, 1]})
    with pytest.raises(ValueError, match=r"no negative \('No'\) pair for query record 0"):
        check_pair_dataset(table)


# ------------------------------------------------------------------------------------------ metrics
def test_rank_metrics():
    np.testing.assert_array_equal(rankdata([3, 1, 4, 1, 5]), [3, 1.5, 4, 1.5, 5])
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 40), rng.integers(0, 4, 60)  # many ties
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert math.isclose(roc_auc(pos, neg), brute, rel_tol=1e-12)
    assert roc_auc([1.0], [0.0, 0.5]) == 1.0 and roc_auc([0.0], [0.5]) == 0.0 and math.isnan(roc_auc([], [1.0]))
    assert math.isclose(spearman([1, 2, 2, 3], [1, 3, 2, 4]), 0.9486832980505138, rel_tol=1e-12)  # scipy's value
    assert spearman([1, 2, 3], [3, 2, 1]) == -1.0 and math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_quality_of_trivial_scorers(mini_train):
    class Constant:
        def score(self, query, candidates):
            return np.full(len(candidates), 0.5, dtype=np.float32)

    quality = judge_quality(Constant(), mini_train, num_candidates=2, seed=0)
    assert quality.auc == 0.5 and quality.query_auc == 0.5 and math.isnan(quality.spearman)
    assert quality.num_queries == len(mini_train) and len(quality.per_dataset) == 9


@pytest.mark.parametrize(("use_lora", "freeze_vision_tower"), [(True, False), (False, True), (False, False)])
def test_gradient_checkpointing_leaves_a_frozen_vision_tower_out_of_backward(
    use_lora: bool, freeze_vision_tower: bool, tiny_backbone_dirs, tmp_path
):
    """With gradient checkpointing the LM input needs a gradient; a frozen vision tower's output does not (else
    every step recomputes and back-propagates the whole tower for nothing), a trained one's does. LoRA adapts the
    LM only, so with LoRA the tower is frozen whatever ``freeze_vision_tower`` says."""
    from unime_v2.trainers.arguments import UniMEV2ModelArguments
    from unime_v2.trainers.reranker import build_reranker

    path = str(tiny_backbone_dirs["qwen2_5_vl"])
    args = UniMEV2RerankerTrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", gradient_checkpointing=True
    )
    model_args = UniMEV2ModelArguments(
        backbone=path, backbone_dtype="float32", freeze_vision_tower=freeze_vision_tower, use_lora=use_lora,
    )  # fmt: skip
    model, processor = build_reranker(model_args, args, path)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # as Trainer does
    backbone = (model.get_base_model() if use_lora else model).backbone.model
    image = processor.image_processor(images=[Image.new("RGB", (64, 64), (9, 99, 199))], return_tensors="pt")
    tower_out = backbone.visual(image["pixel_values"], grid_thw=image["image_grid_thw"])
    assert tower_out.pooler_output.requires_grad is not (use_lora or freeze_vision_tower)
    assert backbone.get_input_embeddings()(torch.tensor([[1, 2]])).requires_grad
