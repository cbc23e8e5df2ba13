"""The build report of a mining run: counts, timings, settings (JSON + markdown) and a judge-score histogram."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unime_v2.hub_cards.markdown import markdown_table


logger = logging.getLogger(__name__)


COUNT_DESCRIPTIONS = {
    "records": "training pairs read from the source",
    "queries": "queries in the mined dataset",
    "skipped_empty_pool": "queries left out: no candidate in their pool (on_empty_pool=skip)",
    "pairs_judged": "query–candidate pairs scored by the judge (positives included)",
    "false_negatives_removed": "candidates removed as false negatives (s > s_pos − β)",
    "queries_with_false_negatives": "queries that lost at least one candidate as a false negative",
    "padded": "queries with fewer than num_negatives distinct negatives (list repeated)",
    "fallbacks": "queries with no surviving candidate (random draw, score 1.0)",
    "pools_smaller_than_top_k": "queries with fewer than top_k retrieved candidates",
    "near_duplicates_dropped": "candidates dropped for cos ≥ δ",
    "duplicate_candidates": "repeated positives folded into one pool candidate",
    "duplicate_queries": "records whose query (text + image) repeats an earlier record's (kept)",
}


NEAR_POSITIVE_MARGIN = 0.1


class NegativeStatistics:
    """The statistics of :func:`negative_statistics`, accumulated one query at a time (constant memory)."""

    def __init__(self) -> None:
        self.min_gap: float | None = None
        self.within = self.records_within = self.known = self.other = self.other_rows = 0

    def add(
        self,
        positive_score: float,
        negative_scores: Sequence[float],
        query_source: str,
        negative_sources: Sequence[str],
        fallback: bool = False,
    ) -> None:
        """Count one query (arguments as one entry of each list of :func:`negative_statistics`)."""
        if not fallback:
            gaps = [positive_score - score for score in negative_scores]
            near = sum(gap < NEAR_POSITIVE_MARGIN for gap in gaps)
            self.within += near
            self.records_within += near > 0
            smallest = min(gaps, default=None)
            if smallest is not None and (self.min_gap is None or smallest < self.min_gap):
                self.min_gap = smallest
        known = [source for source in negative_sources if source]
        self.known += len(known)
        self.other += sum(query_source != source for source in known)
        self.other_rows += any(source and source != query_source for source in negative_sources)

    def result(self) -> dict[str, Any]:
        return {
            "min_positive_gap": self.min_gap,
            "negatives_within_margin": self.within,
            "records_with_negatives_within_margin": self.records_within,
            "margin": NEAR_POSITIVE_MARGIN,
            "negatives_with_known_dataset": self.known,
            "negatives_from_other_dataset": self.other,
            "share_from_other_dataset": self.other / self.known if self.known else None,
            "records_with_negatives_from_other_dataset": self.other_rows,
        }


def negative_statistics(
    positive_scores: Sequence[float],
    negative_scores: Sequence[Sequence[float]],
    query_sources: Sequence[str],
    negative_sources: Sequence[Sequence[str]],
    fallbacks: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """What makes a mined set comparable with the authors' released one (docs/method.md §3).

    Args:
        positive_scores: s₊ per query.
        negative_scores: the stored negatives' judge scores per query.
        query_sources: the dataset of each query.
        negative_sources: the dataset of each stored negative (``""`` when unknown: a text-only negative of the
            authors' JSON carries no path). The mining pipeline names a candidate by the first dataset whose
            positive it is, so a candidate shared by several datasets can count as "other" even in per-dataset
            pools.
        fallbacks: queries whose negatives are a random draw with score 1.0 (left out of the gap statistics).

    Returns:
        ``min_positive_gap`` (the smallest s₊ − s over kept negatives: an upper bound of the β that produced
        them), ``negatives_within_margin`` (s₊ − s < 0.1) and the records holding them, and the share of negatives
        with a known dataset that come from another dataset than their query (only global retrieval gives any).
    """
    fallbacks = fallbacks or [False] * len(positive_scores)
    statistics = NegativeStatistics()
    for row in zip(positive_scores, negative_scores, query_sources, negative_sources, fallbacks):
        statistics.add(*row)
    return statistics.result()


JUDGE_HEALTH_THRESHOLDS: dict[str, float | None] = {
    "max_fallback_share": 0.05,
    "min_auc_mean": 0.6,
    "max_share_negative_above_positive": None,
    "max_share_positive_below_half": 0.5,
}
"""When the report warns about the judge (docs/mining.md, "Judge health"); ``None`` never warns. The authors'
released sample: no fallback, 30% of positives below 0.5 (:data:`AUTHORS_SAMPLE_JUDGE_HEALTH`)."""

AUTHORS_SAMPLE_JUDGE_HEALTH: dict[str, Any] = {
    "pool": "stored negatives",
    "queries": 50,
    "auc_mean": 1.0,
    "auc_pooled": 1.0,
    "queries_with_negative_above_positive": 0,
    "share_negative_above_positive": 0.0,
    "positives_below_half": 15,
    "share_positive_below_half": 0.3,
    "positive_score_mean": 0.6484100791998207,
    "fallbacks": 0,
    "fallback_share": 0.0,
}
""":func:`judge_health_of_mined` of the authors' released sample (``tests/fixtures/official-mined-negatives-example
.json``, recomputed by ``tests/data_builders/mining/test_report_judge_health.py``); only its stored negatives were
released, not the judged pools."""


class JudgeHealth:
    """How far the judge agrees with the labels, accumulated one query at a time (constant memory).

    A query's reference ``s₊`` is its smallest positive score, the sampling rule's reference (docs/mining.md,
    "Several positives"; one positive: its score). Per query, over its ``P_q`` positives ``p`` and its ``n_q``
    judged candidates ``c`` (positives excluded), ``AUC_q = (#{(p, c): s_c < s_p} + ½ #{(p, c): s_c = s_p}) /
    (P_q n_q)``: the chance that the judge ranks a labelled positive above one of them. ``auc_mean`` averages
    ``AUC_q`` over queries; ``auc_pooled`` pools the (positive, candidate) pairs of all queries (each query weighted
    by ``P_q n_q``; pairs are never formed across queries). The other figures use ``s₊`` (docs/mining.md, "Judge
    health").
    """

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.queries = self.auc_sum = self.wins = self.pairs = 0.0
        self.above = self.below_half = self.fallbacks = 0
        self.positive_sum = 0.0

    def add(
        self, positive_scores: float | Sequence[float], candidate_scores: Sequence[float], fallback: bool = False
    ) -> None:
        """Count one query: its positives' judge scores (one score or a list), its candidates' scores, whether it
        fell back."""
        positives = np.atleast_1d(np.asarray(positive_scores, dtype=np.float64))
        scores = np.asarray(candidate_scores, dtype=np.float64)
        reference = float(positives.min())
        self.queries += 1
        self.positive_sum += reference
        self.below_half += reference < 0.5
        self.fallbacks += bool(fallback)
        if scores.size:
            wins = float((scores < positives[:, None]).sum() + 0.5 * (scores == positives[:, None]).sum())
            pairs = positives.size * scores.size
            self.auc_sum += wins / pairs
            self.wins += wins
            self.pairs += pairs
            self.above += bool((scores > reference).any())

    def result(self, thresholds: Mapping[str, float | None] | None = None) -> dict[str, Any]:
        """The figures and, past ``thresholds`` (default :data:`JUDGE_HEALTH_THRESHOLDS`), ``warnings``."""
        n = int(self.queries)
        figures: dict[str, Any] = {
            "pool": self.pool,
            "queries": n,
            "auc_mean": self.auc_sum / n if n else None,
            "auc_pooled": self.wins / self.pairs if self.pairs else None,
            "queries_with_negative_above_positive": self.above,
            "share_negative_above_positive": self.above / n if n else None,
            "positives_below_half": self.below_half,
            "share_positive_below_half": self.below_half / n if n else None,
            "positive_score_mean": self.positive_sum / n if n else None,
            "fallbacks": self.fallbacks,
            "fallback_share": self.fallbacks / n if n else None,
        }
        limits = {**JUDGE_HEALTH_THRESHOLDS, **(thresholds or {})}
        return {**figures, "thresholds": limits, "warnings": judge_health_warnings(figures, limits)}


def judge_health_thresholds(value: Mapping[str, Any] | None) -> dict[str, float | None]:
    """:data:`JUDGE_HEALTH_THRESHOLDS` updated with ``value``; an unknown key raises, naming the valid ones."""
    unknown = sorted(set(value or {}) - set(JUDGE_HEALTH_THRESHOLDS))
    if unknown:
        raise ValueError(
            f"judge_health_thresholds: unknown key(s) {unknown}; valid: {sorted(JUDGE_HEALTH_THRESHOLDS)}"
        )
    return {**JUDGE_HEALTH_THRESHOLDS, **(value or {})}


def judge_health_warnings(figures: Mapping[str, Any], limits: Mapping[str, float | None]) -> list[str]:
    """One sentence per figure past its threshold (``max_*``: above; ``min_*``: below)."""
    checks = (
        ("fallback_share", "max_fallback_share", "of queries fell back to random negatives scored 1.0"),
        ("auc_mean", "min_auc_mean", "mean AUC of the positive against its judged candidates"),
        (
            "share_negative_above_positive",
            "max_share_negative_above_positive",
            "of queries have a candidate the judge scores above the positive",
        ),  # fmt: skip
        ("share_positive_below_half", "max_share_positive_below_half", "of positives score below 0.5"),
    )
    warnings = []
    for name, limit_name, what in checks:
        value, limit = figures.get(name), limits.get(limit_name)
        if value is None or limit is None:
            continue
        if (limit_name.startswith("max_") and value > limit) or (limit_name.startswith("min_") and value < limit):
            side = "above" if limit_name.startswith("max_") else "below"
            warnings.append(f"judge health: {value:.3g} {what} ({side} {limit_name}={limit})")
    return warnings


def log_judge_health(health: dict[str, Any]) -> dict[str, Any]:
    """Log each judge-health warning (the report lists them too); returns ``health``."""
    for warning in health.get("warnings", []):
        logger.warning(warning)
    return health


def judge_health_of_mined(
    dataset: Any, thresholds: Mapping[str, float | None] | None = None, batch_size: int = 4096
) -> dict[str, Any]:
    """:class:`JudgeHealth` of a mined dataset's stored negatives (``pos_score``, ``neg_scores``, and
    ``more_pos_scores`` when the rows have several positives): comparable with the authors' released data, which
    holds no judged pool. Fallback rows are those of :func:`~unime_v2.data_builders.formats.mined.is_fallback_row`."""
    from ..formats.mined import is_fallback_row

    more = "more_pos_scores" in dataset.column_names
    health = JudgeHealth("stored negatives")
    table = dataset.select_columns(["pos_score", "neg_scores", *(["more_pos_scores"] if more else [])])
    table = table.with_format("arrow")
    for start in range(0, len(dataset), batch_size):
        batch = table[start : start + batch_size].to_pydict()
        further = batch["more_pos_scores"] if more else [[]] * len(batch["pos_score"])
        for positive, others, negatives in zip(batch["pos_score"], further, batch["neg_scores"]):
            health.add([positive, *(others or [])], negatives, is_fallback_row(negatives))
    return health.result(thresholds)


SCORE_CHUNK = 1 << 20
"""Scores read at once by :func:`score_summary` and :func:`plot_score_histogram` (they may be memory-mapped)."""


def _chunks(values: Sequence[float]) -> Iterator[np.ndarray]:
    array = np.asarray(values)
    for start in range(0, len(array), SCORE_CHUNK):
        yield np.asarray(array[start : start + SCORE_CHUNK])


def _pairwise_sum(values: np.ndarray, start: int, n: int) -> float:
    """``np.sum`` of ``values[start:start+n]`` as float64, bit for bit, reading at most ``SCORE_CHUNK`` at a time.

    NumPy sums a float64 array pairwise, halving it (rounded down to a multiple of 8) until a block is small; the
    same halving down to chunks, each summed by NumPy, gives the same additions in the same order.
    """
    if n <= SCORE_CHUNK:
        return float(np.add.reduce(np.asarray(values[start : start + n], dtype=np.float64)))
    half = n // 2
    half -= half % 8
    return _pairwise_sum(values, start, half) + _pairwise_sum(values, start + half, n - half)


def _sort_keys(chunk: np.ndarray) -> np.ndarray:
    """float32 values as uint32 keys in the same order (sign bit flipped for positives, all bits for negatives)."""
    bits = chunk.view(np.uint32)
    return np.where(bits & 0x80000000, ~bits, bits | 0x80000000).astype(np.uint32)


def _from_sort_key(key: int) -> float:
    bits = key & 0x7FFFFFFF if key & 0x80000000 else ~key & 0xFFFFFFFF
    return float(np.array([bits], dtype=np.uint32).view(np.float32)[0])


def _order_statistics(values: Sequence[float], ranks: Sequence[int]) -> dict[int, float]:
    """The ``rank``-th smallest of ``values`` (float32) for each rank, exactly, in constant memory.

    Two counting passes over the 32-bit sort keys (upper 16 bits, then the lower 16 bits inside each bin that holds
    a wanted rank) pin down each order statistic's bits without sorting or copying the values.
    """
    high = np.zeros(1 << 16, dtype=np.int64)
    for chunk in _chunks(values):
        high += np.bincount(_sort_keys(chunk) >> 16, minlength=1 << 16)
    high_end = np.cumsum(high)
    tops = {rank: int(np.searchsorted(high_end, rank, side="right")) for rank in set(ranks)}
    lows = {top: np.zeros(1 << 16, dtype=np.int64) for top in set(tops.values())}
    for chunk in _chunks(values):
        keys = _sort_keys(chunk)
        upper = keys >> 16
        for top, low in lows.items():
            low += np.bincount(keys[upper == top] & 0xFFFF, minlength=1 << 16)
    out = {}
    for rank, top in tops.items():
        below = int(high_end[top - 1]) if top else 0
        bottom = int(np.searchsorted(np.cumsum(lows[top]), rank - below, side="right"))
        out[rank] = _from_sort_key((top << 16) | bottom)
    return out


def _quantiles(values: Sequence[float], qs: Sequence[float]) -> list[float]:
    """``np.quantile(values, qs)`` (linear), bit for bit: each is the same interpolation between the two order
    statistics around ``q · (n − 1)``, done by NumPy on those two values."""
    n = len(values)
    positions = np.asarray(qs, dtype=np.float64) * (n - 1)
    below = np.floor(positions).astype(np.int64)
    stats = _order_statistics(values, [*below.tolist(), *np.minimum(below + 1, n - 1).tolist()])
    return [
        float(np.quantile(np.asarray([stats[b], stats[min(b + 1, n - 1)]]), position - b))
        for b, position in zip(below.tolist(), positions.tolist())
    ]


def score_summary(values: Sequence[float]) -> dict[str, float]:
    """Count, mean, and quartiles of judge scores.

    float32 scores (the pipeline's, possibly memory-mapped) are read a chunk at a time; the figures equal
    ``np.mean`` and ``np.quantile`` of them as a float64 array, without that array. Other inputs are summarised
    as a float64 array.
    """
    array = np.asarray(values)
    if array.size == 0:
        return {"count": 0}
    if array.dtype == np.float32:
        q1, median, q3 = _quantiles(array, [0.25, 0.5, 0.75])
    else:
        array = array.astype(np.float64)
        q1, median, q3 = (float(q) for q in np.quantile(array, [0.25, 0.5, 0.75]))
    return {
        "count": int(array.size),
        "mean": _pairwise_sum(array, 0, len(array)) / len(array),
        "q1": q1,
        "median": median,
        "q3": q3,
    }


def report_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: settings, counts (with what each means), timings, score summaries."""
    counts = {f"{key} — {COUNT_DESCRIPTIONS.get(key, '')}": value for key, value in report["counts"].items()}
    parts = [
        "# Mining report",
        "## Settings",
        markdown_table(report["settings"], ("setting", "value")),
        "## Counts",
        markdown_table(counts, ("count", "value")),
        *_judge_health_markdown(report.get("judge_health")),
        "## Negatives (compare with the authors' released data: docs/method.md §3)",
        markdown_table(report.get("negatives", {}), ("statistic", "value")),
        "## Timings (seconds)",
        markdown_table(report["timings_s"], ("stage", "seconds")),
        "## Judge scores",
        markdown_table(
            {f"{group} {k}": v for group, summary in report["scores"].items() for k, v in summary.items()},
            ("statistic", "value"),
        ),
    ]
    return "\n\n".join(parts) + "\n"


def _judge_health_markdown(health: Mapping[str, Any] | None) -> list[str]:
    """The "Judge health" section: warnings, then the figures beside the authors' released sample's."""
    if not health:
        return []
    warnings = [f"**Warning:** {w}" for w in health.get("warnings", [])] or ["No warning."]
    rows = {
        key: f"{health.get(key)} (authors' sample, stored negatives: {AUTHORS_SAMPLE_JUDGE_HEALTH.get(key, '—')})"
        for key in AUTHORS_SAMPLE_JUDGE_HEALTH
    }
    rows["thresholds"] = health.get("thresholds")
    return ["## Judge health (docs/mining.md)", "\n\n".join(warnings), markdown_table(rows, ("statistic", "value"))]


def plot_score_histogram(
    positives: Sequence[float], candidates: Sequence[float], selected: Sequence[float], path: str | Path
) -> Path:
    """PNG histogram of judge scores: positives vs all judged candidates vs the selected negatives.

    The bin counts are accumulated a chunk at a time, so the scores may be memory-mapped arrays of any length.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0.0, 1.0, 41)
    for values, label in (
        (candidates, "retrieved candidates"),
        (selected, "selected negatives"),
        (positives, "positives"),
    ):
        if len(values):
            counts = sum(np.histogram(chunk, bins=bins)[0] for chunk in _chunks(values))
            axis.hist(
                bins[:-1], bins=bins, weights=counts, alpha=0.55, density=True, label=f"{label} (n={len(values)})"
            )
    axis.set_xlabel("judge score s = P(Yes)")
    axis.set_ylabel("density")
    axis.set_title("MLLM-as-a-Judge scores")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def write_report(report: Mapping[str, Any], output_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` to ``output_dir``."""
    output_dir = Path(output_dir)
    json_path, md_path = output_dir / "report.json", output_dir / "report.md"
    json_path.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    md_path.write_text(report_markdown(report), encoding="utf-8")
    return json_path, md_path
