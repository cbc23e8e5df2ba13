"""``UniMEV2Model.encode`` end to end: batches prepared in the calling process vs in ``num_workers`` processes.

    python benchmarks/encode_workers.py                       # CPU, tiny Qwen2-VL, 256 JPEG image items
    python benchmarks/encode_workers.py --workers 0 8 --device cuda --items 2048

Image items are read from JPEG files (640×480, as MMEB's are of that order), decoded, resized and tokenised by the
processor: the CPU work that ``num_workers`` moves into ``DataLoader`` worker processes, where it overlaps the model
and runs in parallel. The settings alternate (``--rounds``) so that a change in the machine's load hits all of
them; the table gives the median items/s of each and its ratio to ``num_workers=0``, and the script checks that
every setting returns the same embeddings.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import HfArgumentParser

from unime_v2.data_builders.tiny_backbones import build_tiny_backbone
from unime_v2.modeling_unime_v2 import UniMEV2Model


@dataclass
class EncodeWorkersConfig:
    workers: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "num_workers settings to time."})
    items: int = field(default=256, metadata={"help": "Image items per encode() call."})
    files: int = field(default=64, metadata={"help": "Distinct JPEG files the items cycle through."})
    batch_size: int = field(default=16, metadata={"help": "encode() batch size."})
    rounds: int = field(default=3, metadata={"help": "Timed calls per setting (alternating)."})
    threads: int = field(default=1, metadata={"help": "torch threads of the main process."})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda."})
    json: str | None = field(default=None, metadata={"help": "Write the results here."})


def image_files(folder: Path, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def measure(config: EncodeWorkersConfig, work: Path) -> tuple[dict[int, list[float]], dict[int, torch.Tensor]]:
    """Items/s of every ``num_workers`` setting per round, and each setting's last embeddings (scratch in ``work``)."""
    files = image_files(work, config.files)
    items = [{"text": "<|image_1|>\nRepresent the given image.\n", "image": files[i % len(files)]}
             for i in range(config.items)]  # fmt: skip
    backbone = build_tiny_backbone("qwen2_vl", work / "backbone", seed=0)
    model = UniMEV2Model.from_backbone(str(backbone), dtype=torch.float32).to(config.device)
    model.encode(items[: config.batch_size])  # warm-up
    rates: dict[int, list[float]] = {w: [] for w in config.workers}
    outputs: dict[int, torch.Tensor] = {}
    for _ in range(config.rounds):
        for workers in config.workers:
            start = time.perf_counter()
            outputs[workers] = model.encode(items, batch_size=config.batch_size, num_workers=workers)
            rates[workers].append(config.items / (time.perf_counter() - start))
    return rates, outputs


def main(argv: list[str] | None = None) -> dict:
    (config,) = HfArgumentParser(EncodeWorkersConfig).parse_args_into_dataclasses(argv)
    torch.set_num_threads(config.threads)
    with tempfile.TemporaryDirectory(prefix="encode_workers_") as work:
        rates, outputs = measure(config, Path(work))
    reference = outputs[config.workers[0]]
    worst = max(float((out - reference).abs().max()) for out in outputs.values())
    base = statistics.median(rates[config.workers[0]])
    result = {
        "settings": vars(config),
        "items_per_s": {str(w): round(statistics.median(r), 1) for w, r in rates.items()},
        "all_items_per_s": {str(w): [round(x, 1) for x in r] for w, r in rates.items()},
        "ratio_to_first": {str(w): round(statistics.median(r) / base, 2) for w, r in rates.items()},
        "max_abs_embedding_diff": worst,
    }
    print(f"{'num_workers':>12}{'items/s':>10}{'ratio':>8}")
    for w in config.workers:
        print(f"{w:>12}{result['items_per_s'][str(w)]:>10}{result['ratio_to_first'][str(w)]:>8}")
    print(f"max |Δembedding| between settings: {worst:.1e}")
    if config.json:
        Path(config.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
