"""Pre-train the tiny VLM that the demo's embedder, judge and reranker start from (the pretrained-MLLM stand-in).

    OMP_NUM_THREADS=1 python examples/pretrain_tiny_vlm.py --output_dir runs/tiny_vlm            # defaults below
    OMP_NUM_THREADS=1 python examples/pretrain_tiny_vlm.py --output_dir /tmp/v --hidden_size 64 --num_layers 2 \
        --max_steps 30 --records 200 --eval_rows 0                                                  # a smoke run

Writes an ordinary checkpoint folder (``AutoModelForImageTextToText.from_pretrained(DIR)``; ``examples/train.py
--backbone DIR``) with ``TINY_PRETRAIN.json``: the arguments, the LM loss on held-out corpus examples before and after
training, and the zero-shot precision@1 of its last-token embeddings on held-out mini-MMEB rows. Recipe, figures and
reasons: ``docs/tiny_pretrained_vlm.md``. A folder holding another run (other settings, or another kind of artifact) is
refused unless ``--overwrite true`` (docs/training.md, "One run per output folder").
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from unime_v2.trainers import tiny_pretrain as tp
from unime_v2.trainers.arguments import RecipeParser
from unime_v2.trainers.run_folder import OutputFolderArguments, claim_output_dir, run_settings


def pretrain_settings(args: tp.PretrainArguments) -> dict:
    """The settings that make the checkpoint (``threads`` only changes the speed; ``batch_size`` matters here)."""
    settings = {**run_settings(args), "batch_size": args.batch_size}
    settings.pop("threads", None)
    return settings


def main(argv: list[str] | None = None) -> dict:
    parser = RecipeParser((tp.PretrainArguments, OutputFolderArguments), description=__doc__.split("\n\n")[0])
    args, folder = parser.parse(argv)
    claim_output_dir(args.output_dir, "tiny_vlm", "examples/pretrain_tiny_vlm.py", pretrain_settings(args),
                     folder.overwrite)  # fmt: skip
    torch.set_num_threads(args.threads)
    logging.getLogger("transformers").setLevel(logging.ERROR)

    start = time.time()
    size = tp.TinyVLMSize(args.hidden_size, args.num_layers, args.vision_embed_dim, args.vision_depth, args.image_side)
    corpus = tp.build_corpus(args.seed, records=args.records)
    train, heldout = tp.split_corpus(corpus, args.heldout_examples, args.seed)
    model, processor = tp.build_tiny_vlm(args.kind, size, args.seed)
    before = tp.lm_loss(model, processor, heldout)
    print(
        f"corpus {len(train)} train / {len(heldout)} held-out examples; {sum(p.numel() for p in model.parameters())} "
        f"parameters; held-out LM loss {before['all']:.3f}  [{time.time() - start:.1f} s]",
        flush=True,
    )
    settings = tp.PretrainSettings(
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        seed=args.seed,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        lr_scheduler_type=args.lr_scheduler_type,
    )
    train_start = time.time()
    history = []
    if args.max_steps > 0:  # 0: save the untrained model (the equal-architecture random start)
        with tempfile.TemporaryDirectory() as work:
            history = tp.pretrain(model, processor, train, settings, work)
    train_seconds = time.time() - train_start
    after = tp.lm_loss(model, processor, heldout)
    info = {
        "args": asdict(args),
        "size": tp.size_info(size, model),
        "corpus_train": len(train),
        "corpus_heldout": len(heldout),
        "lm_loss_before": before,
        "lm_loss_after": after,
        "train_seconds": round(train_seconds, 1),
        "loss_curve": [(e["step"], round(e["loss"], 4)) for e in history if "loss" in e],
    }
    tp.save_pretrained_vlm(model, processor, args.output_dir, info)
    print(
        f"trained {args.max_steps} steps in {train_seconds:.1f} s; held-out LM loss {before['all']:.3f} -> "
        f"{after['all']:.3f}; per kind: " + ", ".join(f"{k} {v:.3f}" for k, v in after.items()),
        flush=True,
    )
    if args.eval_rows > 0:
        info["zero_shot"] = tp.zero_shot_precision(args.output_dir, args.eval_rows, args.eval_candidates, args.seed)
        print(f"zero-shot precision@1 ({args.eval_candidates} candidates): {info['zero_shot']['precision_at_1']:.3f}")
    info["total_seconds"] = round(time.time() - start, 1)
    (Path(args.output_dir) / "TINY_PRETRAIN.json").write_text(json.dumps(info, indent=2, default=str))
    print(json.dumps({"tiny_pretrain": {k: info[k] for k in ("lm_loss_after", "train_seconds", "total_seconds")}}))
    return info


if __name__ == "__main__":
    main(sys.argv[1:])
