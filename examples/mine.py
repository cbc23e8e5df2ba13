"""Mine MLLM-as-a-Judge hard negatives (UniME-V2, SPEC §1–3) on one or many processes, resumably.

    accelerate launch --multi_gpu --num_processes 2 examples/mine.py --config examples/configs/mine_tiny.yaml \
        --output_dir out     # two processes; on a machine without GPUs they run on CPU (gloo)
    python examples/mine.py --config examples/configs/mine_tiny.yaml --output_dir out          # one process
    accelerate launch --multi_gpu --num_processes 8 examples/mine.py \
        --config examples/configs/mine_vlm2vec_qwen25vl7b.yaml --output_dir mined-mmeb --push_to_hub you/UniME-V2-mined

(``accelerate launch --cpu --num_processes N`` starts only ONE process unless MPI is used: accelerate's simple
launcher; use ``--multi_gpu``, which runs N processes through torchrun, on CPU too.)

Queries are split across processes; each writes judge-score shards (atomically); the main process merges, samples
and writes ``DIR/dataset`` (``load_from_disk``), ``report.json``/``report.md``, ``judge_scores.png`` and
``mined.json`` (the authors' format). Kill it at any moment and run the same command again: it resumes from the
saved embeddings, retrieval and shards and produces the same dataset.

Fault injection (tests): ``UNIME_V2_MINE_KILL_AFTER_SHARDS=k`` makes a process SIGKILL itself right after writing
its k-th judge shard.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env

from unime_v2.data_builders.mining.config import MiningConfig
from unime_v2.data_builders.mining.pipeline import mine


KILL_ENV = "UNIME_V2_MINE_KILL_AFTER_SHARDS"


def kill_after(count: int):
    """A shard callback that SIGKILLs this process once it has written ``count`` shards."""
    written = []

    def callback(shard: int, path: Path) -> None:
        written.append(shard)
        if len(written) >= count:
            os.kill(os.getpid(), signal.SIGKILL)

    return callback


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML file of MiningConfig fields")
    parser.add_argument("--output_dir", help="overrides the config's output_dir")
    parser.add_argument("--cache_dir", help="overrides the config's cache_dir")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=JSON",
        help="override fields, values parsed as JSON (e.g. --set beta=0.2 max_queries=100)",
    )
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="push the mined dataset with its card")
    return parser.parse_args()


def overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main() -> None:
    args = parse_args()
    config = MiningConfig.from_yaml(
        args.config, output_dir=args.output_dir, cache_dir=args.cache_dir, **overrides(args.set)
    )
    # cpu=True is what makes accelerate set up a gloo process group on CPU (MULTI_CPU) under a multi-process launch
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    kill = int(os.environ.get(KILL_ENV, "0"))
    result = mine(config, state, on_shard_written=kill_after(kill) if kill > 0 else None)
    if result is not None:
        counts = result.report["counts"]
        print(f"mined {counts['queries']} queries -> {result.output_dir / 'dataset'}")
        print(json.dumps(counts))
        if args.push_to_hub:
            result.push_to_hub(args.push_to_hub)


if __name__ == "__main__":
    main()
