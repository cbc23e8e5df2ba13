"""How mining's wall time and peak memory grow with the number of queries (BENCHMARKS.md).

    python benchmarks/mining_scale.py --sizes 10000 50000 200000 --json benchmarks/results/mining_scale.json
    python benchmarks/mining_scale.py --tiny            # the smoke test's size (tests/benchmarks/test_mining_scale.py)
    python benchmarks/mining_scale.py --sizes 1000 --corpus_sizes 100000 300000 1000000 \
        --json benchmarks/results/mining_scale_corpus.json   # a corpus of candidates (pool=corpus) of each size

What runs is the real :func:`unime_v2.data_builders.mining.mine` (records, pools, embedding cache, faiss
retrieval, judge shards, sampling, streamed assembly, ``save_to_disk``, the authors' JSON) on synthetic
MMEB-train-like records: 20 sources; text→image, image→text, image+text→text and text→text pairs; small PNG images
as files under an image root (MMEB-train's layout, ``--images files``) or as bytes inside the dataset
(``--images bytes``); repeated class labels, so pools hold duplicates.

**The embedder and the judge are stubs of this harness**, not models: ``encode`` returns a hash-seeded random
vector per item and ``score`` a hash of the texts, behind the interfaces ``mine`` calls (``load_embedder(...)
.encode(items, batch_size=...)``, ``load_judge(...).score_queries(queries, candidate_lists)``). The pipeline still decodes every
image it hands them. So the times are the pipeline's own overhead (reading, decoding, caching, searching,
sampling, writing), not model time: on real models the embed and judge stages are dominated by the model.

Each size runs in a fresh subprocess. A sampling thread reads ``/proc/self/status`` every 10 ms and keeps, per
stage, the peak resident set (``VmRSS``) and its anonymous part (``RssAnon``: heap, arrays; without the pages of
memory-mapped files, which the kernel can drop). Stages: load (records + pools), embed, retrieve, judge, assemble
(sampling + Arrow parts), write (``dataset/`` + the authors' JSON + report). Output: one JSON with, per size and
stage, seconds and peaks, and per stage the fitted growth (time ~ n^b, peak memory linear in n) and the
projection to 662k queries (MMEB-train).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np


STAGES = ("load", "embed", "retrieve", "judge", "assemble", "write")
MMEB_TRAIN_QUERIES = 662_000
SOURCES = [f"source{i:02d}" for i in range(20)]
STUB_DIM = 64


# ------------------------------------------------------------------------------------------------ the stubs


def _seed(text: str, image: Any) -> int:
    extra = b"" if image is None else image.tobytes()[:64]
    return zlib.crc32(text.encode() + extra)


class StubEmbedder:
    """``encode`` like ``UniMEV2Model.encode``: a (n, 64) tensor, one hash-seeded random vector per item."""

    def encode(self, items: list[dict[str, Any]], batch_size: int = 16, num_workers: int = 0) -> Any:
        import torch

        rows = [np.random.default_rng(_seed(i["text"], i["image"])).standard_normal(STUB_DIM) for i in items]
        return torch.from_numpy(np.asarray(rows, dtype=np.float32))


class StubJudge:
    """``score_queries`` like ``UniMEV2Reranker.score_queries``: per query one float32 in [0, 1) per candidate, a
    hash of both texts."""

    def score(self, query: dict[str, Any], candidates: list[dict[str, Any]]) -> np.ndarray:
        return np.asarray(
            [zlib.crc32((query["text"] + "|" + c["text"]).encode()) / 2**32 for c in candidates], dtype=np.float32
        )

    def score_queries(
        self, queries: list[dict[str, Any]], candidate_lists: list[list[dict[str, Any]]], queries_per_forward: int = 8
    ) -> list[np.ndarray]:
        return [self.score(query, candidates) for query, candidates in zip(queries, candidate_lists)]


# ------------------------------------------------------------------------------------------------ memory probe


def _status() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                values[key] = int(rest.split()[0]) * 1024
    return values


class StageProbe:
    """Samples the resident set in a thread; ``stage(name)`` opens the window the next samples are counted in."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.current = "setup"
        self.peaks: dict[str, dict[str, int]] = {}
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        peak = self.peaks.setdefault(self.current, {"VmRSS": 0, "RssAnon": 0})
        for key, value in _status().items():
            peak[key] = max(peak[key], value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stage(self, name: str) -> None:
        self._sample()
        now = time.perf_counter()
        self.seconds[self.current] = self.seconds.get(self.current, 0.0) + now - self._started
        self.current, self._started = name, now
        self._sample()

    def close(self) -> None:
        self.stage("done")
        self._stop.set()
        self._thread.join()


def instrument(probe: StageProbe) -> None:
    """Wrap the pipeline's stage functions so the probe knows which stage is running."""
    from unime_v2.data_builders.mining import pipeline

    names = {
        "load_source": "load",
        "embed_all": "embed",
        "retrieve_all": "retrieve",
        "judge_all": "judge",
        "assemble": "assemble",
        "_write_outputs": "write",
    }
    for function, stage in names.items():
        original = getattr(pipeline, function)

        def wrapped(*args: Any, _original: Any = original, _stage: str = stage, **kwargs: Any) -> Any:
            probe.stage(_stage)
            return _original(*args, **kwargs)

        setattr(pipeline, function, wrapped)
    pipeline.load_embedder = lambda *args, **kwargs: StubEmbedder()
    pipeline.load_judge = lambda *args, **kwargs: StubJudge()


# ------------------------------------------------------------------------------------------------ the data


def _png(rng: np.random.Generator, size: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def build_source(n: int, folder: Path, images: str, image_px: int, seed: int = 0) -> Path:
    """``n`` MMEB-train-like records saved with ``save_to_disk``; images as files under ``folder/images`` or bytes."""
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    rng = np.random.default_rng(seed)
    image_type = ImageFeature() if images == "bytes" else Value("string")

    def image(name: str) -> Any:
        data = _png(rng, image_px)
        if images == "bytes":
            return {"bytes": data, "path": None}
        path = folder / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"images/{name}"

    def rows():
        for i in range(n):
            source, kind = SOURCES[i % len(SOURCES)], i % 4
            label = f"class {i % 997}"
            query_image = image(f"{source}/{i}_q.png") if kind in (1, 2) else None
            pos_image = image(f"{source}/{i}_p.png") if kind == 0 else None
            yield {
                "qry": (
                    f"<|image_1|>\nRepresent the given image with the following question: what is item {i}?"
                    if query_image
                    else f"Find an image that matches the caption: item {i} of {source}"
                ),
                "qry_image": query_image,
                "pos_text": "<|image_1|>\nRepresent the given image." if pos_image else label,
                "pos_image": pos_image,
                "dataset": source,
            }

    features = Features(
        {"qry": Value("string"), "qry_image": image_type, "pos_text": Value("string"), "pos_image": image_type}
        | {"dataset": Value("string")}
    )
    target = folder / "source"
    Dataset.from_generator(rows, features=features, cache_dir=str(folder / "hf")).save_to_disk(str(target))
    return target


def build_corpus(n: int, folder: Path, images_every: int, image_px: int, seed: int = 1) -> Path:
    """A corpus of ``n`` candidates as one Parquet file (``id``, ``text``, ``image``: every ``images_every``-th item
    an image file under ``folder/corpus_images`` instead of a text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    target = folder / "corpus.parquet"
    writer = None
    for start in range(0, n, 100_000):
        ids, texts, images = [], [], []
        for i in range(start, min(start + 100_000, n)):
            ids.append(f"doc{i}")
            if images_every and i % images_every == 0:
                path = folder / "corpus_images" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(_png(rng, image_px))
                texts.append(None)
                images.append(f"corpus_images/{i}.png")
            else:
                texts.append(f"document {i}: class {i % 997} of {SOURCES[i % len(SOURCES)]}")
                images.append(None)
        table = pa.table({"id": ids, "text": pa.array(texts, pa.string()), "image": pa.array(images, pa.string())})
        writer = writer or pq.ParquetWriter(str(target), table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()
    return target


# ------------------------------------------------------------------------------------------------ one size


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Build the records, mine them with the stubs, return seconds and peaks per stage (run in a subprocess)."""
    from unime_v2.data_builders.mining import MiningConfig, mine

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        source = build_source(args.one, folder, args.images, args.image_px)
        corpus = build_corpus(args.corpus, folder, args.corpus_images_every, args.image_px) if args.corpus else None
        stub = folder / "stub_model"
        stub.mkdir()
        (stub / "config.json").write_text('{"stub": "benchmarks/mining_scale.py"}')
        import matplotlib.pyplot  # noqa: F401  (the report's histogram: a constant ~100 MB, not part of the growth)

        probe = StageProbe()
        instrument(probe)
        config = MiningConfig(
            data=str(source),
            image_root=str(folder) if args.images == "files" else None,
            columns={} if args.images == "bytes" else {"query_image": "qry_image", "pos_image": "pos_image"},
            embedder=str(stub),
            judge=str(stub),
            delta=0.999,
            top_k=args.top_k,
            faiss_gpu=False,
            shard_size=args.shard_size,
            embed_chunk_size=args.embed_chunk_size,
            output_dir=str(folder / "mined"),
            progress=False,
            authors_json=args.authors_json,
            image_storage=args.image_storage,
            corpus=str(corpus) if corpus else None,
            corpus_image_root=str(folder) if corpus else None,
            pool="corpus" if corpus else "global",
        )
        baseline = _status()
        result = mine(config)
        probe.close()
        rows = len(result.dataset)
        row_image_bytes = sum(
            len(image["bytes"] or b"")
            for batch in result.dataset.with_format("arrow").iter(256)
            for column in ("query_image", "pos_image")
            for image in batch[column].to_pylist()
            if image
        ) + sum(
            len(image["bytes"] or b"")
            for batch in result.dataset.with_format("arrow").iter(256)
            for images in batch["neg_images"].to_pylist()
            for image in images
            if image
        )
    return {
        "queries": args.one,
        "corpus": args.corpus,
        "rows": rows,
        "baseline": baseline,
        "seconds": {stage: probe.seconds.get(stage, 0.0) for stage in STAGES},
        "peaks": {stage: probe.peaks.get(stage, {}) for stage in STAGES},
        "peak": {key: max(p.get(key, 0) for p in probe.peaks.values()) for key in ("VmRSS", "RssAnon")},
        "row_image_bytes": row_image_bytes,
    }


# ------------------------------------------------------------------------------------------------ driver


def fit(sizes: list[int], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage: time exponent b (time ~ n^b), per-query seconds, peak MB per 100k queries; 662k projections."""
    n = np.asarray(sizes, dtype=np.float64)
    out: dict[str, Any] = {}
    for stage in (*STAGES, "total"):
        if stage == "total":
            seconds = np.asarray([sum(r["seconds"].values()) for r in results])
            anon = np.asarray([r["peak"]["RssAnon"] for r in results], dtype=np.float64) / 2**20
        else:
            seconds = np.asarray([r["seconds"][stage] for r in results])
            anon = np.asarray([r["peaks"][stage].get("RssAnon", 0) for r in results], dtype=np.float64) / 2**20
        entry: dict[str, Any] = {"seconds_per_1k_queries": (seconds / n * 1000).round(4).tolist()}
        if len(sizes) > 1:
            exponent, log_a = np.polyfit(np.log(n), np.log(np.maximum(seconds, 1e-6)), 1)
            slope, intercept = np.polyfit(n, anon, 1)
            entry |= {
                "time_exponent": round(float(exponent), 3),
                "anon_mb_per_100k_queries": round(float(slope) * 1e5, 1),
                "projected_seconds_662k": round(float(np.exp(log_a) * MMEB_TRAIN_QUERIES**exponent), 1),
                "projected_anon_peak_mb_662k": round(float(intercept + slope * MMEB_TRAIN_QUERIES), 1),
            }
        out[stage] = entry
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000], help="queries per run")
    parser.add_argument("--tiny", action="store_true", help="one run of 300 queries (the smoke test)")
    parser.add_argument("--images", choices=["files", "bytes"], default="files", help="images as files or bytes")
    parser.add_argument("--image_px", type=int, default=16, help="side of the random-noise PNG images")
    parser.add_argument("--image_storage", choices=["embedded", "reference"], default="embedded")
    parser.add_argument("--authors_json", type=int, default=1, help="also write mined.json (1/0)")
    parser.add_argument("--top_k", type=int, default=50)
    parser.add_argument("--shard_size", type=int, default=64)
    parser.add_argument("--embed_chunk_size", type=int, default=1024, help="items per embedding chunk")
    parser.add_argument("--workdir", default=None, help="where the temporary data goes (default: the system's)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--corpus_sizes", type=int, nargs="+", help="mine the first of --sizes against a corpus of each size instead"
    )
    parser.add_argument("--corpus_images_every", type=int, default=50, help="every n-th corpus item is an image")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the subprocess of one size
    parser.add_argument("--corpus", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.one is not None:
        print("RESULT " + json.dumps(run_one(args)))
        return
    sizes = [300] if args.tiny else sorted(args.sizes)
    passed = [a for a in (argv if argv is not None else sys.argv[1:])]
    forwarded = [
        a
        for i, a in enumerate(passed)
        if a != "--tiny" and not _is_sizes(passed, i) and not _is_sizes(passed, i, "--corpus_sizes")
    ]
    runs = [(sizes[0], c) for c in sorted(args.corpus_sizes)] if args.corpus_sizes else [(n, 0) for n in sizes]
    if args.corpus_sizes:
        sizes = sorted(args.corpus_sizes)  # the fit is over the corpus size
    results = []
    for n, corpus in runs:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        command = [sys.executable, __file__, *forwarded, "--one", str(n), "--corpus", str(corpus)]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"{n} queries failed ({done.returncode}):\n{done.stderr[-3000:]}")
        results.append(json.loads(line[len("RESULT ") :]))
        r = results[-1]
        mb = {k: round(v / 2**20) for k, v in r["peak"].items()}
        corpus_note = f" x {corpus} corpus items" if corpus else ""
        print(f"{n:>8} queries{corpus_note}: {sum(r['seconds'].values()):8.1f} s, peak {mb} MB", flush=True)
        report = {
            "command": " ".join(["python", "benchmarks/mining_scale.py", *passed]),
            "note": "stub embedder and judge (this harness's): pipeline overhead only, not model time"
            + (
                "; the fit is over the corpus size (per 1k / 100k corpus items; projections: 662k items)"
                if corpus
                else ""
            ),
            "sizes": sizes[: len(results)],
            "runs": results,
            "fit": fit(sizes[: len(results)], results),
        }
        if args.json:  # after every size, so the finished sizes survive a later one that fails or is stopped
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=1))
    print(json.dumps(report["fit"], indent=1))


def _is_sizes(argv: list[str], i: int, flag: str = "--sizes") -> bool:
    """Whether ``argv[i]`` is ``flag`` or one of its values (each size gets its own subprocess)."""
    start = argv.index(flag) if flag in argv else -1
    if start < 0 or i < start:
        return False
    end = next((j for j in range(start + 1, len(argv)) if argv[j].startswith("--")), len(argv))
    return i < end


if __name__ == "__main__":
    main()
