"""``UniMEV2RerankerTrainer``: ``Trainer`` with the reranker's loss ``L = L_pair + L_list`` (docs/reranker.md).

Per training record: (query, positive) → "Yes" and (query, hardest negatives by judge score) → "No" (pairwise);
the query and x + 1 numbered candidates → ``Ans: (i)`` (listwise). A set of judge pairs trains the pairwise half
only (the tiny judge recipe, ``examples/configs/reranker/tiny_judge.yaml``). Every setting of the objective is a
field of :class:`~unime_v2.trainers.reranker.training_args.UniMEV2RerankerTrainingArguments`, read from ``self.args``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from unime_v2.data_builders.formats.judge_pairs import check_pair_dataset

from ..hub_push import HubMixin
from .collator import RerankerCollator
from .losses import reranker_losses
from .training_args import UniMEV2RerankerTrainingArguments


def default_collator(
    model: torch.nn.Module, processor: Any, args: UniMEV2RerankerTrainingArguments
) -> RerankerCollator:
    """The collator the objective of ``args`` needs: candidate LM masks only with ``candidate_lm_weight``,
    listwise rows only with ``list_weight``."""
    return RerankerCollator.for_model(
        model,
        processor,
        candidate_lm=args.candidate_lm_weight > 0,
        listwise=args.list_weight > 0,
        num_list_negatives=args.num_list_negatives,
        num_pair_negatives=args.num_pair_negatives,
        seed=args.seed,
    )


def lora_settings(model: torch.nn.Module) -> str:
    """``"r, alpha, dropout"`` of the model's LoRA adapter, or ``"off"`` for a model without one."""
    config = getattr(model, "peft_config", {}).get("default")
    return f"{config.r}, {config.lora_alpha}, {config.lora_dropout}" if config is not None else "off"


class UniMEV2RerankerTrainer(HubMixin, Trainer):
    """``Trainer`` for ``L = pair_weight · L_pair + list_weight · L_list``, both terms logged separately.

    The training set is training records (listwise + pairwise) or judge pairs (pairwise only). ``data_collator``
    defaults to a :class:`~unime_v2.trainers.reranker.collator.RerankerCollator` of ``model`` and
    ``processing_class`` (:func:`default_collator`). A pair set that can be checked cheaply
    (:class:`~unime_v2.data_builders.formats.judge_pairs.JudgePairDataset`, or a ``datasets.Dataset`` with a
    ``label`` column) is validated first: every query needs a "Yes" and a "No" pair.
    ``compute_loss(..., return_outputs=True)`` also returns ``{"logits": (n, 2) [Yes, No] logits}`` of the pairs.

    Args:
        args: a :class:`~unime_v2.trainers.reranker.training_args.UniMEV2RerankerTrainingArguments` (the loss
            weights, the negatives).
        backbone, train_data: what the model card names as the starting checkpoint and the training data
            (default: the backbone's ``_name_or_path``, the training set's ``name``).
        *args, **kwargs: those of ``Trainer``.

    The final ``save_model()`` writes the merged reranker (adapter in ``adapter/``) and its card; ``push_to_hub``
    uploads them in one commit (:class:`~unime_v2.trainers.hub_push.HubMixin`).
    """

    def __init__(self, *args: Any, backbone: str | None = None, train_data: str | None = None, **kwargs: Any):
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        if not isinstance(training_args, UniMEV2RerankerTrainingArguments):
            name = type(training_args).__name__
            raise TypeError(f"UniMEV2RerankerTrainer needs args=UniMEV2RerankerTrainingArguments(...), got {name}")
        self.backbone, self.train_data = backbone, train_data
        if kwargs.get("data_collator") is None:
            model, processor = kwargs.get("model", args[0] if args else None), kwargs.get("processing_class")
            if processor is None or model is None:
                raise ValueError("UniMEV2RerankerTrainer needs data_collator= or model= and processing_class=")
            kwargs["data_collator"] = default_collator(model, processor, training_args)
        if kwargs.get("train_dataset") is not None:
            check_pair_dataset(kwargs["train_dataset"])
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # compute_loss returns a mean: Trainer divides by accumulation
        self._terms: dict[str, list[float]] = {}

    # the collator consumes whole records: keep every column
    def _remove_unused_columns(self, dataset: Any, description: str | None = None) -> Any:
        return dataset

    def _get_collator_with_removed_columns(self, data_collator: Any, description: str | None = None) -> Any:
        return data_collator

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        args = self.args
        out = reranker_losses(model, inputs, args.pair_weight, args.list_weight, args.candidate_lm_weight)
        if model.training:
            for name in ("pair_loss", "list_loss", "candidate_lm_loss"):
                if out[name] is not None:
                    self._terms.setdefault(name, []).append(float(out[name].detach()))
        if not return_outputs:
            return out["loss"]
        collator = self.data_collator
        yes = getattr(collator, "yes_token_id", None)
        no = getattr(collator, "no_token_id", None)
        logits = out["answer_logits"]
        pair = logits[:, [yes, no]].detach() if yes is not None and no is not None else logits.detach()
        return out["loss"], {"logits": pair}

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Adds the mean of each loss term since the last log (``pair_loss``, ``list_loss``, …) to training logs."""
        if "loss" in logs:
            for name, values in self._terms.items():
                logs[name] = round(sum(values) / len(values), 4)
            self._terms = {}
        super().log(logs, *args, **kwargs)

    # ----------------------------------------------------------------------------------------------- the card
    hub_artifact = "reranker"

    def card_train_data(self) -> str | None:
        return self.train_data or getattr(self.train_dataset, "name", None)

    def card_settings(self) -> dict[str, Any]:
        """The training settings the reranker's model card records (the paper's names in docs/method.md)."""
        args = self.args
        model = self.accelerator.unwrap_model(self.model)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        last = {
            key: entry[key] for entry in self.state.log_history for key in ("pair_loss", "list_loss") if key in entry
        }
        frozen = [p for name, p in base.named_parameters() if ".visual." in name or ".vision_tower." in name]
        backbone_config = getattr(base.config, "backbone_config", base.config)
        return {
            "backbone": self.backbone or getattr(backbone_config, "_name_or_path", None),
            "training data": self.card_train_data(),
            "listwise negatives (x)": args.num_list_negatives,
            "pairwise negatives per record": args.num_pair_negatives,
            "loss weights (pair, list)": f"{args.pair_weight}, {args.list_weight}",
            "LoRA (r, alpha, dropout)": lora_settings(model),
            "vision tower": "trained" if any(p.requires_grad for p in frozen) else "frozen",
            "learning rate, schedule": f"{args.learning_rate}, {args.lr_scheduler_type}",
            "steps": self.state.global_step,
            "seed": args.seed,
            **{f"final {key}": value for key, value in last.items()},
        }
