"""The collator packs query, positive and k negatives of each record into one batch, in a fixed order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from unime_v2.modeling_unime_v2 import UniMEV2Model
from unime_v2.trainers import UniMEV2Collator


def colour_image(seed: int) -> Image.Image:
    return Image.new("RGB", (64, 64), ((seed * 53) % 256, (seed * 97) % 256, (seed * 31) % 256))


def toy_records(num_records: int = 3, k: int = 2) -> list[dict]:
    """Records mixing image-only, text-only and image+text items (MMEB style texts)."""
    records = []
    for r in range(num_records):
        records.append(
            {
                "query": {"text": f"<|image_1|>\nRepresent the given image {r}", "image": colour_image(r)},
                "positive": {"text": f"a red circle number {r}", "image": None},
                "negatives": [
                    {"text": "<|image_1|>\nRepresent the given image.\n", "image": colour_image(10 * r + j + 1)}
                    if j % 2 == 0
                    else {"text": f"a blue square {r} {j}", "image": None}
                    for j in range(k)
                ],
                "scores": [1.0] + [0.1 * (j + 1) for j in range(k)],
                "record_index": 100 + r,
                "query_id": f"toy-{r}",
            }
        )
    return records


@pytest.mark.parametrize("kind", ["qwen2_vl", "llava_onevision"])
def test_one_forward_gives_each_items_own_embedding(kind: str, tiny_backbone_dirs: dict[str, Path]) -> None:
    """Row i·(2+k)+j of the packed batch embeds record i's item j exactly as encoding that item alone does."""
    model = UniMEV2Model.from_backbone(str(tiny_backbone_dirs[kind]), dtype=torch.float32)
    records = toy_records()
    batch = UniMEV2Collator(model.processor)(records)
    assert batch["judge_scores"].shape == (3, 3) and batch["judge_scores"].dtype == torch.float32
    assert torch.equal(batch["judge_scores"][1], torch.tensor([1.0, 0.1, 0.2]))
    assert batch["input_ids"].shape[0] == 3 * 4
    if kind == "qwen2_vl":
        assert {"pixel_values", "image_grid_thw", "mm_token_type_ids"} <= set(batch)
        assert batch["image_grid_thw"].shape[0] == 3 * 2  # each query and negative 0 have an image
    inputs = {key: value for key, value in batch.items() if key != "judge_scores"}
    with torch.no_grad():
        packed = model(**inputs).embeddings
    items = [item for r in records for item in (r["query"], r["positive"], *r["negatives"])]
    alone = torch.cat([model.encode([item]) for item in items])
    torch.testing.assert_close(packed, alone, atol=2e-5, rtol=1e-4)


def test_processor_errors_name_the_record_and_role(tiny_qwen2_vl_dir: Path, tmp_path: Path) -> None:
    model = UniMEV2Model.from_backbone(str(tiny_qwen2_vl_dir))
    records = toy_records()
    records[1]["negatives"][0]["image"] = str(tmp_path / "gone.png")
    with pytest.raises(FileNotFoundError, match=r"^record 101 \(toy-1\), negative 0: image file .*gone.png"):
        UniMEV2Collator(model.processor)(records)


def test_records_with_different_k_cannot_share_a_batch(tiny_qwen2_vl_dir: Path) -> None:
    model = UniMEV2Model.from_backbone(str(tiny_qwen2_vl_dir))
    records = toy_records()
    records[2]["negatives"] = records[2]["negatives"][:1]
    with pytest.raises(ValueError, match=r"record 102 \(toy-2\): 1 negatives"):
        UniMEV2Collator(model.processor)(records)
