"""Training throughput: our one-pass step vs a GradCache-style two-pass step, on the tiny recipe's data and model.

    python benchmarks/train_throughput.py                      # CPU, tiny Qwen2-VL, 16 queries x (1 + 8) candidates
    python benchmarks/train_throughput.py --batch 32 --steps 10 --chunk 2 --device cuda

Both steps compute the same loss (symmetric KL, τ = 0.02) and the same gradients for the same batch; the script
checks that, then times them and prints queries/s and the ratio in one run.

* **ours** (``UniMEV2Trainer``): one processor call and one forward + backward over all B·(2 + k) sequences.
* **GradCache** (what the authors' trainer does): the queries and the candidates are two lists cut into chunks;
  pass 1 embeds every chunk without gradients, the loss is computed on those detached embeddings to get ∂L/∂e,
  pass 2 re-embeds every chunk with gradients and back-propagates ∂L/∂e through it. Every forward runs twice.
  Inputs are processed once per chunk and reused by both passes (the timing favours GradCache slightly).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from unime_v2.data_builders.formats.training_records import TrainingRecords, oracle_mini_mmeb  # noqa: E402
from unime_v2.data_builders.tiny_backbones import build_tiny_backbone  # noqa: E402
from unime_v2.trainers import (  # noqa: E402
    UniMEV2Collator,
    UniMEV2ModelArguments,
    UniMEV2TrainingArguments,
    base_embedder,
    build_embedder,
    candidate_cosines,
    symmetric_kl_loss,
)


TINY_TASKS = ["MiniImageNet-cls", "MiniCOCO-i2t", "MiniCOCO-t2i"]


def embed(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    return model(**inputs).embeddings


def one_pass_step(model: torch.nn.Module, collator: UniMEV2Collator, records: Sequence[dict], device: str) -> float:
    """Our step: one processor call, one forward and one backward over all sequences; returns the loss."""
    batch = collator(records).to(device)
    scores = batch.pop("judge_scores")
    group = scores.shape[1] + 1
    embeddings = embed(model, batch).view(len(records), group, -1)
    loss = symmetric_kl_loss(candidate_cosines(embeddings[:, 0], embeddings[:, 1:]), scores)
    loss.backward()
    return loss.item()


def grad_cache_step(
    model: torch.nn.Module, processor: Callable, records: Sequence[dict], device: str, chunk: int
) -> float:
    """The authors' scheme: query list and candidate list, chunked, embedded twice (no-grad, then with grad)."""
    queries = [record["query"] for record in records]
    candidates = [item for record in records for item in (record["positive"], *record["negatives"])]
    scores = torch.tensor([record["scores"] for record in records], device=device)
    chunks = [
        processor(items[start : start + chunk]).to(device)
        for items in (queries, candidates)
        for start in range(0, len(items), chunk)
    ]
    num_query_chunks = -(-len(queries) // chunk)
    with torch.no_grad():
        cached = [embed(model, inputs) for inputs in chunks]
    query_cache = torch.cat(cached[:num_query_chunks]).requires_grad_()
    candidate_cache = torch.cat(cached[num_query_chunks:]).requires_grad_()
    candidate_view = candidate_cache.view(len(records), scores.shape[1], -1)
    loss = symmetric_kl_loss(candidate_cosines(query_cache, candidate_view), scores)
    loss.backward()
    gradients = list(query_cache.grad.split(chunk)) + list(candidate_cache.grad.split(chunk))
    for inputs, gradient in zip(chunks, gradients):
        embed(model, inputs).backward(gradient)
    return loss.item()


def trainable_gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def time_steps(
    step: Callable[[], float], model: torch.nn.Module, steps: int, warmup: int, device: str, desc: str
) -> list[float]:
    durations = []
    for index in tqdm(range(warmup + steps), desc=desc, leave=False):
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        if index >= warmup:
            durations.append(time.perf_counter() - start)
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="queries per step")
    parser.add_argument("--k", type=int, default=8, help="hard negatives per query")
    parser.add_argument("--chunk", type=int, default=2, help="GradCache chunk size (authors' scripts: 2)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="unime_v2_throughput_") as tmp:  # the model is in memory after this
        workdir = Path(tmp)
        backbone = build_tiny_backbone("qwen2_vl", workdir / "tiny_qwen2_vl", seed=0)
        mined, _ = oracle_mini_mmeb(0, max(8, args.batch), extra={"tasks": TINY_TASKS})
        dataset = TrainingRecords(mined, num_hard_negatives=args.k)
        records = [
            dataset[i]
            for i in torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[: args.batch].tolist()
        ]
        training_args = UniMEV2TrainingArguments(output_dir=str(workdir / "out"), report_to="none")
        model_args = UniMEV2ModelArguments(backbone=str(backbone), lora_dropout=0.0, use_dora=False)
        torch.manual_seed(0)
        model = build_embedder(str(backbone), model_args, training_args).to(args.device).train()
        processor = base_embedder(model).processor
        collator = UniMEV2Collator(processor)

    model.zero_grad(set_to_none=True)
    loss_ours = one_pass_step(model, collator, records, args.device)
    grads_ours = trainable_gradients(model)
    model.zero_grad(set_to_none=True)
    loss_cache = grad_cache_step(model, processor, records, args.device, args.chunk)
    grads_cache = trainable_gradients(model)
    worst = max((grads_ours[n] - grads_cache[n]).abs().max().item() for n in grads_ours)
    scale = max(g.abs().max().item() for g in grads_ours.values())

    ours = time_steps(
        lambda: one_pass_step(model, collator, records, args.device),
        model,
        args.steps,
        args.warmup,
        args.device,
        "ours",
    )
    cache = time_steps(
        lambda: grad_cache_step(model, processor, records, args.device, args.chunk),
        model,
        args.steps,
        args.warmup,
        args.device,
        "gradcache",
    )
    ours_qps, cache_qps = args.batch / statistics.median(ours), args.batch / statistics.median(cache)
    result = {
        "device": args.device if args.device != "cuda" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "batch_queries": args.batch,
        "k": args.k,
        "gradcache_chunk": args.chunk,
        "loss_ours": loss_ours,
        "loss_gradcache": loss_cache,
        "max_grad_diff": worst,
        "max_grad": scale,
        "ours_queries_per_s": round(ours_qps, 2),
        "gradcache_queries_per_s": round(cache_qps, 2),
        "speedup": round(ours_qps / cache_qps, 2),
    }
    print(
        f"tiny Qwen2-VL, {args.batch} queries x (1+{args.k}) candidates, {result['device']}, {result['threads']} threads: "
        f"ours {ours_qps:.1f} queries/s, GradCache (chunk {args.chunk}) {cache_qps:.1f} queries/s, "
        f"speed-up {ours_qps / cache_qps:.2f}x; same loss ({loss_ours:.6f} vs {loss_cache:.6f}), "
        f"max |grad diff| {worst:.2e} (max |grad| {scale:.2e})"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
