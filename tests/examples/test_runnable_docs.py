"""Every code block of README.md and docs/ marked ``<!-- runnable -->`` runs as written, at tiny size."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]
MARKED = re.compile(r"<!-- runnable -->\s*\n```(python|bash)\n(.*?)\n```", re.S)


def runnable_blocks() -> list[tuple[str, str, str]]:
    """``(where, language, code)`` of each marked block."""
    blocks = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text()
        for match in MARKED.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{path.relative_to(REPO)}:{line}", match.group(1), match.group(2)))
    return blocks


def test_runnable_markers_precede_a_python_or_bash_block():
    marked = sum(text.count("<!-- runnable -->") for text in _docs())
    assert marked == len(runnable_blocks()) >= 1


def _docs() -> list[str]:
    return [p.read_text() for p in [REPO / "README.md", *(REPO / "docs").glob("*.md")]]


@pytest.mark.slow
@pytest.mark.parametrize(("where", "language", "code"), runnable_blocks(), ids=[b[0] for b in runnable_blocks()])
def test_runnable_block_runs(where, language, code, tmp_path):
    (tmp_path / "examples").symlink_to(REPO / "examples")  # commands name examples/… relative to the repository
    command = [sys.executable, "-c", code] if language == "python" else ["bash", "-euo", "pipefail", "-c", code]
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])  # the venv's accelerate
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PATH": path}
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, f"{where}:\n{done.stderr[-3000:]}"
