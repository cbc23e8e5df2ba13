"""Mine MLLM-as-a-Judge hard negatives (UniME-V2, docs/method.md §1–3) on one or many processes, resumably.

    accelerate launch --multi_gpu --num_processes 2 examples/mine.py --config examples/configs/mining/tiny.yaml \
        --output_dir out     # two processes; on a machine without GPUs they run on CPU (gloo)
    python examples/mine.py --config examples/configs/mining/tiny.yaml --output_dir out --beta 0.2   # one process
    accelerate launch --multi_gpu --num_processes 8 examples/mine.py \
        --config examples/configs/mining/vlm2vec_qwen25vl7b.yaml --output_dir mined-mmeb --push_to_hub you/UniME-V2-mined

Every field of ``MiningConfig`` can be set in the recipe and overridden on the command line (``--help`` lists
them); mappings (``columns``, ``mini_mmeb``) take JSON there, e.g. ``--columns '{"pos_image": "pos_image_path"}'``.

(``accelerate launch --cpu --num_processes N`` starts only ONE process unless MPI is used: accelerate's simple
launcher; use ``--multi_gpu``, which runs N processes through torchrun, on CPU too.)

Queries are split across processes; each writes judge-score shards (atomically); the main process merges, samples
and writes ``DIR/dataset`` (``load_from_disk``), ``report.json``/``report.md``, ``judge_scores.png`` and
``mined.json`` (the authors' format). Kill it at any moment and run the same command again: it resumes from the
saved embeddings, retrieval and shards ("resuming mining: 9 of 23 judge shards done") and produces the same dataset.
An output folder holding another run (other settings, or another kind of artifact) is refused unless
``--overwrite true``, which deletes the previous dataset, report and JSON and keeps ``cache/`` (its parts are keyed).

Fault injection (tests): ``UNIME_V2_MINE_KILL_AFTER_SHARDS=k`` makes a process SIGKILL itself right after writing
its k-th judge shard.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env

from unime_v2.data_builders.mining import MiningConfig, mine
from unime_v2.trainers.arguments import RecipeParser
from unime_v2.trainers.evaluation.run import check_model_roles
from unime_v2.trainers.run_folder import OutputFolderArguments, claim_output_dir, run_settings


KILL_ENV = "UNIME_V2_MINE_KILL_AFTER_SHARDS"


def kill_after(count: int):
    """A shard callback that SIGKILLs this process once it has written ``count`` shards."""
    written = []

    def callback(shard: int, path: Path) -> None:
        written.append(shard)
        if len(written) >= count:
            os.kill(os.getpid(), signal.SIGKILL)

    return callback


def main(argv: list[str] | None = None) -> None:
    config, folder = RecipeParser((MiningConfig, OutputFolderArguments), description=__doc__.split("\n\n")[0]).parse(
        argv
    )
    check_model_roles(config.embedder, config.judge, "--embedder", "--judge")
    # cpu=True is what makes accelerate set up a gloo process group on CPU (MULTI_CPU) under a multi-process launch
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    level = logging.INFO if state.is_main_process else logging.WARNING  # one log line per event, not per process
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines are tracebacks of CPU probes
    with state.main_process_first():  # one run per folder (docs/mining.md): another run's folder is refused
        settings = run_settings(config)
        claim_output_dir(config.output_dir, "mined_dataset", "examples/mine.py", settings, folder.overwrite,
                         write=state.is_main_process)  # fmt: skip
    kill = int(os.environ.get(KILL_ENV, "0"))
    result = mine(config, state, on_shard_written=kill_after(kill) if kill > 0 else None)
    if result is not None:
        counts = result.report["counts"]
        print(f"mined {counts['queries']} queries -> {result.output_dir / 'dataset'}")
        print(json.dumps(counts))
        if config.push_to_hub:
            result.push_to_hub(config.push_to_hub)


if __name__ == "__main__":
    main()
