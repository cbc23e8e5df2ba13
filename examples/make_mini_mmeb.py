"""Generate Mini-MMEB, save it with ``save_to_disk`` and export it in MMEB's own file formats.

    python examples/make_mini_mmeb.py --output_dir DIR --seed 0 [--train_pairs 20000 --eval_queries 150
                                                         --num_candidates 100 --image_size 64]

Writes ``DIR/hf/<name>/`` (one ``DatasetDict`` per set: mmeb, caption_retrieval, long_caption, compositional) and
``DIR/mmeb/`` (``train/<dataset>.jsonl``, ``eval/<dataset>.jsonl``, ``companion/<name>.jsonl``, PNGs under
``images/``), then prints a per-task summary table and the time of each stage. A folder holding another run (other
settings, or another kind of artifact) is refused unless ``--overwrite true`` (docs/training.md, "One run per output
folder").
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

from unime_v2.data_builders.mini_mmeb import (
    MiniMMEBConfig,
    build_mini_mmeb,
    export_companion_files,
    export_mmeb_files,
    format_summary,
    make_vocab,
    summary_rows,
)
from unime_v2.trainers.arguments import RecipeParser
from unime_v2.trainers.run_folder import OutputFolderArguments, OutputFolderError, claim_output_dir, run_settings


@dataclass
class MakeMiniMMEBArguments:
    """What to generate and where (defaults are ``MiniMMEBConfig``'s)."""

    output_dir: str = field(metadata={"help": "Output folder."})
    seed: int = field(default=MiniMMEBConfig.seed, metadata={"help": "Everything is deterministic by seed."})
    train_pairs: int = field(default=MiniMMEBConfig.train_pairs, metadata={"help": "MMEB-train style records."})
    eval_queries: int = field(default=MiniMMEBConfig.eval_queries, metadata={"help": "Eval queries per task."})
    num_candidates: int = field(default=MiniMMEBConfig.num_candidates, metadata={"help": "Candidates per query."})
    image_size: int = field(default=MiniMMEBConfig.image_size, metadata={"help": "Image side, 64-112 px."})
    no_save: bool = field(default=False, metadata={"help": "Skip save_to_disk."})
    no_export: bool = field(default=False, metadata={"help": "Skip the MMEB JSONL + PNG export."})


def main(argv: list[str] | None = None) -> int:
    """Build, save, export, summarise."""
    parser = RecipeParser((MakeMiniMMEBArguments, OutputFolderArguments), description=__doc__.split("\n\n")[0])
    args, folder = parser.parse(argv)
    try:
        config = MiniMMEBConfig(
            seed=args.seed,
            train_pairs=args.train_pairs,
            eval_queries=args.eval_queries,
            num_candidates=args.num_candidates,
            image_size=args.image_size,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not (args.no_save and args.no_export):
        try:
            claim_output_dir(args.output_dir, "mini_mmeb", "examples/make_mini_mmeb.py", run_settings(args),
                             folder.overwrite)  # fmt: skip
        except OutputFolderError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    timings: dict[str, float] = {}
    start = time.perf_counter()
    built = build_mini_mmeb(config, progress=True)
    timings["generate"] = time.perf_counter() - start
    if not args.no_save:
        start = time.perf_counter()
        for name, dsd in built.items():
            dsd.save_to_disk(os.path.join(args.output_dir, "hf", name))
        timings["save_to_disk"] = time.perf_counter() - start
    if not args.no_export:
        start = time.perf_counter()
        export_mmeb_files(built["mmeb"], os.path.join(args.output_dir, "mmeb"))
        export_companion_files(built, os.path.join(args.output_dir, "mmeb"))
        timings["export_mmeb_files"] = time.perf_counter() - start
    print()
    print(format_summary(summary_rows(built)))
    print()
    for name in ("caption_retrieval", "long_caption", "compositional"):
        print(f"{name}: {len(built[name]['test'])} rows")
    print(f"held-out colour x shape combos (OOD): {[' '.join(p) for p in make_vocab(config).heldout]}")
    print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    print(f"output: {os.path.abspath(args.output_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
