"""``benchmarks/encode_workers.py``: a small run times every setting and finds the same embeddings in each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "encode_workers.py"
pytestmark = pytest.mark.slow  # a benchmark smoke run in a subprocess


def test_small_run_reports_rates_and_equal_embeddings(tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, str(SCRIPT), "--workers", "0", "2", "--items", "24", "--files", "4"]
    command += ["--batch_size", "4", "--rounds", "1", "--json", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["items_per_s"]) == {"0", "2"} and all(v > 0 for v in result["items_per_s"].values())
    assert result["ratio_to_first"]["0"] == 1.0
    assert result["max_abs_embedding_diff"] == 0.0
    assert "num_workers" in done.stdout
