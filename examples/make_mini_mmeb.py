"""Generate Mini-MMEB, save it with ``save_to_disk`` and export it in MMEB's own file formats.

    python examples/make_mini_mmeb.py --out DIR --seed 0 [--train-pairs 20000 --eval-queries 150
                                                         --num-candidates 100 --image-size 64]

Writes ``DIR/hf/<name>/`` (one ``DatasetDict`` per set: mmeb, caption_retrieval, long_caption, compositional) and
``DIR/mmeb/`` (``train/<dataset>.jsonl``, ``eval/<dataset>.jsonl``, ``companion/<name>.jsonl``, PNGs under
``images/``), then prints a per-task summary table and the time of each stage.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from unime_v2.data_builders.mini_mmeb import (
    MiniMMEBConfig,
    build_mini_mmeb,
    export_companion_files,
    export_mmeb_files,
    format_summary,
    make_vocab,
    summary_rows,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults are MiniMMEBConfig's)."""
    defaults = MiniMMEBConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--train-pairs", type=int, default=defaults.train_pairs)
    p.add_argument("--eval-queries", type=int, default=defaults.eval_queries, help="eval queries per task")
    p.add_argument("--num-candidates", type=int, default=defaults.num_candidates)
    p.add_argument("--image-size", type=int, default=defaults.image_size, help="64-112 px")
    p.add_argument("--no-save", action="store_true", help="skip save_to_disk")
    p.add_argument("--no-export", action="store_true", help="skip the MMEB JSONL + PNG export")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build, save, export, summarise."""
    args = parse_args(argv)
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
    timings: dict[str, float] = {}
    start = time.perf_counter()
    built = build_mini_mmeb(config, progress=True)
    timings["generate"] = time.perf_counter() - start
    if not args.no_save:
        start = time.perf_counter()
        for name, dsd in built.items():
            dsd.save_to_disk(os.path.join(args.out, "hf", name))
        timings["save_to_disk"] = time.perf_counter() - start
    if not args.no_export:
        start = time.perf_counter()
        export_mmeb_files(built["mmeb"], os.path.join(args.out, "mmeb"))
        export_companion_files(built, os.path.join(args.out, "mmeb"))
        timings["export_mmeb_files"] = time.perf_counter() - start
    print()
    print(format_summary(summary_rows(built)))
    print()
    for name in ("caption_retrieval", "long_caption", "compositional"):
        print(f"{name}: {len(built[name]['test'])} rows")
    print(f"held-out colour x shape combos (OOD): {[' '.join(p) for p in make_vocab(config).heldout]}")
    print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    print(f"output: {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
