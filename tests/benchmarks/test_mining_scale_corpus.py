"""``benchmarks/mining_scale.py --corpus_sizes``: mining against a corpus of candidates runs at each corpus size and
reports every stage (BENCHMARKS.md, "Mining with a corpus of candidates")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mining_scale.py"
pytestmark = pytest.mark.slow  # benchmark smoke runs in subprocesses


def test_corpus_sizes_run_against_a_corpus(tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, str(SCRIPT), "--sizes", "40", "--corpus_sizes", "300", "600", "--top_k", "5"]
    command += ["--workdir", str(tmp_path), "--json", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [(run["queries"], run["corpus"], run["rows"]) for run in result["runs"]] == [(40, 300, 40), (40, 600, 40)]
    assert result["sizes"] == [300, 600] and "corpus size" in result["note"]
    assert all(run["seconds"]["retrieve"] > 0 for run in result["runs"])
