"""The report's judge-score summary and histogram, read a chunk at a time from memory-mapped float32 scores."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from unime_v2.data_builders.mining import report
from unime_v2.data_builders.mining.report import plot_score_histogram, score_summary


def numpy_summary(values: np.ndarray) -> dict[str, float]:
    """What the report held before: NumPy's mean and linear quartiles of the scores as one float64 array."""
    array = np.asarray(values, dtype=np.float64)
    q1, median, q3 = np.quantile(array, [0.25, 0.5, 0.75])
    return {
        "count": len(array),
        "mean": float(array.mean()),
        "q1": float(q1),
        "median": float(median),
        "q3": float(q3),
    }


@pytest.mark.parametrize("n", [1, 2, 3, 8, 257, 1000, 5003])
@pytest.mark.parametrize("kind", ["uniform", "ties", "signed"])
def test_chunked_summary_of_mapped_scores_equals_numpy_bit_for_bit(tmp_path, monkeypatch, n, kind):
    """Chunks of 64 values (so the pairwise sum and the order statistics span many chunks) give NumPy's figures
    exactly: ``==``, not approximately."""
    monkeypatch.setattr(report, "SCORE_CHUNK", 64)
    rng = np.random.default_rng(n)
    values = {
        "uniform": rng.random(n, dtype=np.float32),
        "ties": (rng.integers(0, 4, n) / 3).astype(np.float32),
        "signed": rng.standard_normal(n).astype(np.float32),
    }[kind]
    values.tofile(tmp_path / "scores.f32")
    mapped = np.memmap(tmp_path / "scores.f32", dtype=np.float32, mode="r")
    assert score_summary(mapped) == numpy_summary(values)
    assert score_summary(values.astype(np.float64).tolist()) == numpy_summary(values)  # a list of Python floats too
    assert score_summary(np.empty(0, dtype=np.float32)) == {"count": 0}


def test_histogram_of_mapped_scores_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "SCORE_CHUNK", 100)
    rng = np.random.default_rng(0)
    rng.random(1000, dtype=np.float32).tofile(tmp_path / "c.f32")
    candidates = np.memmap(tmp_path / "c.f32", dtype=np.float32, mode="r")
    path = plot_score_histogram(candidates[:20], candidates, np.empty(0, np.float32), tmp_path / "h.png")
    with Image.open(path) as image:
        assert image.size[0] > 100 and image.format == "PNG"
