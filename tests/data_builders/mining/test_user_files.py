"""Mining the files people have (docs/mining.md, "Data"): mini-MMEB's own JSONL export mines like the dataset it
came from; a path mining cannot read is named with the accepted forms."""

from __future__ import annotations

import pytest

from unime_v2.data_builders.mini_mmeb.builder import MiniMMEBConfig, build_mini_mmeb
from unime_v2.data_builders.mini_mmeb.export import export_mmeb_files
from unime_v2.data_builders.mining.config import MiningConfig
from unime_v2.data_builders.mining.pipeline import load_source, mine
from unime_v2.data_builders.sources import ACCEPTED_FORMS, UnreadableSourceError


MINI_MMEB = dict(
    seed=0,
    train_pairs=8,
    eval_queries=1,
    num_candidates=2,
    caption_images=0,
    long_caption_images=0,
    compositional_per_subset=0,
)


def test_mini_mmeb_jsonl_export_mines(tmp_path, tiny_backbone_dirs):
    built = build_mini_mmeb(MiniMMEBConfig(**MINI_MMEB))
    export_mmeb_files({"train": built["mmeb"]["train"]}, str(tmp_path / "export"))
    config = MiningConfig(
        data=str(tmp_path / "export" / "train"),
        image_root=str(tmp_path / "export"),
        columns={"query_image": "qry_image_path", "pos_image": "pos_image_path"},
        embedder=str(tiny_backbone_dirs["qwen2_vl"]),
        judge=str(tiny_backbone_dirs["qwen2_5_vl"]),
        delta=0.999,
        num_negatives=2,
        top_k=4,
        progress=False,
        faiss_gpu=False,
        output_dir=str(tmp_path / "out"),
        on_empty_pool="skip",
    )
    source = load_source(config)
    assert len(source) == 8
    assert set(source["dataset"]) == set(built["mmeb"]["train"]["dataset"])  # one source per file, named after it
    result = mine(config)
    assert len(result.dataset) == 8
    assert sorted(result.dataset["query_text"]) == sorted(built["mmeb"]["train"]["qry"])
    assert result.dataset["query_image_path"][0].startswith("images/train/")

    # the sampling knobs re-sample from the saved judge scores; a margin of 1 leaves only the fallback
    settings = dict(config.to_dict(), range_min=1, absolute_margin=1.0)
    narrowed = mine(MiningConfig(**settings))
    resume = narrowed.report["resume"]
    assert resume["judge_shards_reused"] == resume["judge_shards"]
    assert narrowed.report["counts"]["fallbacks"] == 8
    assert narrowed.report["settings"]["absolute_margin"] == 1.0


@pytest.mark.parametrize("data", ["pairs.jsonl", "no/such/folder"])
def test_an_unreadable_data_path_is_named_with_the_accepted_forms(tmp_path, data):
    path = str(tmp_path / data)
    with pytest.raises(UnreadableSourceError) as error:
        load_source(MiningConfig(data=path, output_dir=str(tmp_path / "out")))
    assert path in str(error.value) and ACCEPTED_FORMS in str(error.value)
