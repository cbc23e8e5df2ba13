"""MMEB precision@1 as an ``evaluate`` metric: ``evaluate.load("<repo>/trainers/evaluation/mmeb_precision_at_1")``.

Inputs per row: ``predictions`` — the candidates' scores (ground truth at index 0, MMEB's convention); optionally
``references`` — the dataset each row belongs to. A row is a hit only when the ground truth scores strictly above
every other candidate: a tie is a miss (docs/evaluation.md). The result is ``precision_at_1``, the mean over
datasets of their precision (as MMEB averages its sub-tasks), and ``precision_at_1/<dataset>`` per dataset.
"""

import datasets
import evaluate
import torch

from unime_v2.trainers.evaluation.metrics import hits_at_k, mean


_DESCRIPTION = "MMEB precision@1 with ties counted as misses; mean over datasets."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of lists of floats, the candidate scores of each row (ground truth first).
    references: list of str, the dataset of each row (optional: "all").
Returns:
    precision_at_1: mean over datasets; precision_at_1/<dataset>: per dataset; num_rows.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MMEBPrecisionAt1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        per_dataset: dict[str, list[bool]] = {}
        for scores, dataset in zip(predictions, references):
            if len(scores) == 0:
                raise ValueError(f"a row of dataset {dataset!r} has no candidate scores")
            row = torch.tensor([scores], dtype=torch.float64)
            relevant = torch.zeros_like(row, dtype=torch.bool)
            relevant[0, 0] = True
            per_dataset.setdefault(dataset or "all", []).append(bool(hits_at_k(row, relevant, (1,))[1][0]))
        result = {f"precision_at_1/{name}": mean([float(h) for h in hits]) for name, hits in per_dataset.items()}
        result["precision_at_1"] = mean(list(result.values()))
        result["num_rows"] = len(predictions)
        return result
