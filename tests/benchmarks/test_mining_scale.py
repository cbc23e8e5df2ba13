"""``benchmarks/mining_scale.py``: the ``--tiny`` smoke run reports every stage, and mining's memory stays bounded
on a set whose rows, held in memory as the pre-streaming pipeline held them, would take several times as much."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mining_scale.py"
pytestmark = pytest.mark.slow  # benchmark smoke runs in subprocesses
STAGES = ("load", "embed", "retrieve", "judge", "assemble", "write")
MB = 2**20


def run_benchmark(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, str(SCRIPT), *args, "--workdir", str(tmp_path), "--json", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_tiny_run_times_and_measures_every_stage(tmp_path):
    result = run_benchmark(tmp_path, "--tiny")
    (run,) = result["runs"]
    assert run["queries"] == run["rows"] == 300
    for stage in STAGES:
        assert run["seconds"][stage] > 0, stage
        assert run["peaks"][stage]["RssAnon"] >= run["baseline"]["RssAnon"] * 0.5, stage
        assert result["fit"][stage]["seconds_per_1k_queries"][0] > 0
    assert "stub" in result["note"]


STREAMED_GROWTH_BOUND = 50 * MB
"""What mining may add to the process's anonymous memory (peak RssAnon minus RssAnon before ``mine``): the working
set of one embedding chunk (256 items), one query's 51 items, 64 buffered rows and a 16 MB row group."""


def test_streamed_mining_memory_is_bounded_where_in_memory_rows_would_not_be(tmp_path):
    """1500 queries with 128 px noise images stored as bytes: the mined rows carry ~170 MB of image bytes, which the
    pre-streaming pipeline held in one Python list and then in an in-memory Arrow table (``Dataset.from_list``),
    on top of every record's images. Streamed, the peak grows by less than ``STREAMED_GROWTH_BOUND``."""
    args = ("--sizes", "1500", "--images", "bytes", "--image_px", "128", "--authors_json", "0")
    result = run_benchmark(tmp_path, *args, "--embed_chunk_size", "256")
    (run,) = result["runs"]
    growth = run["peak"]["RssAnon"] - run["baseline"]["RssAnon"]
    assert run["row_image_bytes"] >= 3 * STREAMED_GROWTH_BOUND, "the set is too small to tell the approaches apart"
    assert growth <= STREAMED_GROWTH_BOUND, f"mining added {growth / MB:.0f} MB (bound {STREAMED_GROWTH_BOUND / MB})"
