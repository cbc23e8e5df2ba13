"""Judge throughput: pairs/s of three ways to score query–candidate pairs, ratios printed in one run.

    (a) one ``generate(max_new_tokens=1)`` call per pair        (the authors' demo way)
    (b) batched full-pair forward, no generate                  (JudgeScorer.score_full_pairs)
    (c) prefix-shared forward: query prefix once, KV cache repeated, candidates as a batch of suffixes
                                                                (JudgeScorer.score)

for one image query with 50 text candidates and with 50 image candidates.

    python benchmarks/judge_throughput.py                       # "small" Qwen2.5-VL: hidden 256, 4 layers, CPU
    python benchmarks/judge_throughput.py --hidden 64 --layers 2   # the 2-layer, 64-wide tiny test backbone
    python benchmarks/judge_throughput.py --device cuda --dtype bfloat16 --hidden 1024 --layers 8

The default is a wider "small" model than the tests' tiny one: at 64 wide, 2 layers, per-call overheads dominate
and every method looks alike. The query image is 336x336 px (144 image tokens), like a real judge prompt where the
image dominates the prefix. Weights are random: only speed is measured (and (b) == (c) is checked).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from unime_v2.data_builders.tiny_backbones import build_tiny_backbone
from unime_v2.modeling_unime_v2 import JudgeScorer, set_pixel_budget


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="qwen2_5_vl", choices=["qwen2_vl", "qwen2_5_vl", "llava_onevision"])
    parser.add_argument("--hidden", type=int, default=256, help="language-model width")
    parser.add_argument("--layers", type=int, default=4, help="language-model depth")
    parser.add_argument("--image_size", type=int, default=336, help="query/candidate image side in pixels")
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=50, help="pairs per forward for (b) and (c)")
    parser.add_argument("--generate_pairs", type=int, default=10, help="pairs timed for (a) (it is slow)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of (b) and (c); the best is kept")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser.parse_args()


def build_judge(args: argparse.Namespace, folder: str) -> JudgeScorer:
    """The tiny backbone's tokenizer and processor with a wider/deeper random language model."""
    path = build_tiny_backbone(args.kind, folder, seed=0)
    processor = AutoProcessor.from_pretrained(path)
    config = AutoModelForImageTextToText.from_pretrained(path).config
    text = config.get_text_config()
    head_dim = 16 if args.hidden < 256 else 64
    text.hidden_size, text.num_hidden_layers, text.intermediate_size = args.hidden, args.layers, 4 * args.hidden
    text.num_attention_heads, text.num_key_value_heads = args.hidden // head_dim, max(1, args.hidden // head_dim // 2)
    text.head_dim = head_dim
    text.layer_types = ["full_attention"] * args.layers
    if args.kind != "llava_onevision":  # M-RoPE sections cover head_dim / 2 frequencies
        text.rope_parameters["mrope_section"] = [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]
    if args.kind == "qwen2_5_vl":
        config.vision_config.out_hidden_size = args.hidden
    elif args.kind == "qwen2_vl":
        config.vision_config.hidden_size = args.hidden
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config).to(getattr(torch, args.dtype))
    if args.kind != "llava_onevision":
        set_pixel_budget(processor, None, args.image_size * args.image_size)
    return JudgeScorer(model.to(args.device), processor, batch_size=args.batch_size)


def noise_image(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def best_time(function: Callable[[], object], repeats: int, device: str) -> float:
    """Fastest of ``repeats`` timed calls (after one warm-up call)."""
    function()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(judge: JudgeScorer, query: dict, candidates: list[dict], args: argparse.Namespace) -> dict[str, float]:
    n = len(candidates)
    few = candidates[: args.generate_pairs]
    t_generate = best_time(lambda: [judge.score_with_generate(query, c) for c in few], 1, args.device)
    t_full = best_time(lambda: judge.score_full_pairs(query, candidates), args.repeats, args.device)
    t_prefix = best_time(lambda: judge.score(query, candidates), args.repeats, args.device)
    difference = float(np.abs(judge.score(query, candidates) - judge.score_full_pairs(query, candidates)).max())
    rates = {"a_generate": len(few) / t_generate, "b_full_batch": n / t_full, "c_prefix_shared": n / t_prefix}
    return {
        **rates,
        "c_over_b": rates["c_prefix_shared"] / rates["b_full_batch"],
        "b_over_a": rates["b_full_batch"] / rates["a_generate"],
        "max_abs_diff_b_c": difference,
    }


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        judge = build_judge(args, folder)
        query = {
            "text": "Represent the given image with the following question: What is at the top left?",
            "image": noise_image(args.image_size, 0),
        }
        prefix = judge.encode(query, [{"text": "x", "image": None}]).prefix
        text_candidates = [
            {"text": f"a small red circle at the top left number {i}", "image": None} for i in range(args.candidates)
        ]
        image_candidates = [
            {"text": "Represent the given image.", "image": noise_image(args.image_size, i + 1)}
            for i in range(args.candidates)
        ]
        results = {
            "text candidates": measure(judge, query, text_candidates, args),
            "image candidates": measure(judge, query, image_candidates, args),
        }
    setup = (
        f"{args.kind}, LM hidden {args.hidden} x {args.layers} layers, {args.dtype} on {args.device} "
        f"({torch.get_num_threads()} CPU threads), query prefix {len(prefix.input_ids)} tokens, "
        f"{args.candidates} candidates, batch {args.batch_size}"
    )
    print(setup)
    print(
        f"{'candidates':<18}{'(a) generate':>14}{'(b) full batch':>16}{'(c) prefix':>12}{'c/b':>8}{'b/a':>8}"
        f"{'|b-c|':>10}"
    )
    for name, r in results.items():
        print(
            f"{name:<18}{r['a_generate']:>14.1f}{r['b_full_batch']:>16.1f}{r['c_prefix_shared']:>12.1f}"
            f"{r['c_over_b']:>8.1f}{r['b_over_a']:>8.1f}{r['max_abs_diff_b_c']:>10.1e}"
        )
    print("(pairs/s; c/b and b/a are speed-up ratios)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"setup": setup, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
