"""``UniMEV2Trainer``: the Hugging Face ``Trainer`` with UniME-V2's loss, exact accumulation and LoRA saving.

One training step embeds every query and candidate of the micro-batch in a single forward pass (the collator
packs them) and computes the loss from those embeddings. There is no GradCache and no second pass:

* ``symmetric_kl`` / ``js`` / ``hard_labels`` compare each query only with its own 1 + k candidates, so the
  micro-batch loss is a mean of independent per-query terms; Trainer's gradient accumulation (loss / accumulation
  steps) and DDP's gradient averaging then give exactly the gradient of the global batch (equal micro-batch sizes).
* ``infonce`` (baseline) uses in-batch negatives, which couple queries across processes. Every process gathers
  all query and candidate embeddings (``accelerate.gather``; the local slice is replaced by the local tensors so
  their gradients flow), computes the *global* batch loss, and scales its gradient by the world size to undo
  DDP's averaging: each process then contributes exactly ∂L/∂(its own embeddings), and the averaged parameter
  gradient equals the single-process one. Accumulated micro-batches of InfoNCE see only their own in-batch
  negatives (as in VLM2Vec without GradCache).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from peft import get_peft_model
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments, set_seed

from unime_v2.modeling_unime_v2 import UniMEV2Model
from unime_v2.modeling_unime_v2.configuration_unime_v2 import eval_image_resize

from .arguments import EMBEDDER_LM_LAYERS, UniMEV2ModelArguments, freeze_vision_tower_
from .bucketing import embed_inputs
from .evaluation.mmeb import mmeb_evaluator
from .hub_push import HubMixin
from .losses import (
    candidate_cosines,
    hard_label_loss,
    infonce_loss,
    js_divergence_loss,
    symmetric_kl_authors_loss,
    symmetric_kl_loss,
)
from .training_args import UniMEV2TrainingArguments


logger = logging.getLogger(__name__)


@contextmanager
def _image_resize(config: Any, size: int | None) -> Iterator[None]:
    """Embed with ``config.image_resize = size`` inside the block (evaluation resolution), restored after."""
    saved, config.image_resize = config.image_resize, size
    try:
        yield
    finally:
        config.image_resize = saved


def build_embedder(
    backbone: str, model_args: UniMEV2ModelArguments, args: UniMEV2TrainingArguments
) -> torch.nn.Module:
    """Load the checkpoint folder ``backbone`` as a ``UniMEV2Model`` with the training arguments' prompt/image
    settings and the model arguments' dtype and pixel budget, then add LoRA.

    With ``use_lora`` the model is a ``peft.PeftModel`` whose adapters sit on ``model_args.peft_target_modules()``
    (the language model only); without it, every weight trains except the vision tower and projector when
    ``freeze_vision_tower``.
    """
    model = UniMEV2Model.from_backbone(
        backbone,
        prompt_format=args.prompt_format,
        image_resize=args.image_resize,
        marker_without_image=args.marker_without_image,
        eval_resolution=args.eval_resolution,
        query_instruction=args.query_instruction,
        candidate_instruction=args.candidate_instruction,
        tau=args.tau,
        **model_args.load_kwargs(args),
    )
    if model_args.use_lora:
        set_seed(args.seed)  # the adapters' random init: reproducible whatever ran before (loading, building)
        return get_peft_model(model, model_args.lora_config(EMBEDDER_LM_LAYERS))
    if model_args.freeze_vision_tower:
        freeze_vision_tower_(model)
    return model


def base_embedder(model: torch.nn.Module) -> torch.nn.Module:
    """The ``UniMEV2Model`` inside a ``PeftModel`` (LoRA layers still in place), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class DatasetEpochCallback(TrainerCallback):
    """At each epoch's start, ``set_epoch(int(state.epoch))`` on the train dataset when it has one.

    accelerate's data loader passes the epoch on to the dataset only when its sampler takes none (a one-process
    run); this gives it on every process, so records drawn per epoch (``SeveralPositives``, docs/mining.md "Several
    positives") change each epoch on several processes too.
    """

    def on_epoch_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        train_dataloader: Any = None,
        **kwargs: Any,
    ) -> None:
        dataset = getattr(train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(int(state.epoch or 0))


class UniMEV2Trainer(HubMixin, Trainer):
    """``Trainer`` for the UniME-V2 embedder.

    Saving, the model card and ``push_to_hub`` (one commit, merged model, adapter in ``adapter/``) come from
    :class:`~unime_v2.trainers.hub_push.HubMixin`; :class:`DatasetEpochCallback` gives the train dataset its epoch.

    Use with :class:`~unime_v2.trainers.UniMEV2TrainingArguments`, :class:`~unime_v2.trainers.UniMEV2Collator`
    and ``processing_class=model.processor`` (saved with every checkpoint).

    Args:
        mmeb_eval_rows: optional MMEB-eval style rows; :meth:`evaluate` then reports precision@1 on them
            (``eval_precision_at_1``, per dataset, meta-task, IND/OOD) through the one MMEB evaluator
            (:class:`~unime_v2.trainers.evaluation.MMEBEvaluator`), its encoding shared by the processes.
        mmeb_image_root: image root for rows that carry relative image paths.
        *args, **kwargs: as for ``Trainer``.
    """

    def __init__(
        self,
        *args: Any,
        mmeb_eval_rows: Sequence[Mapping[str, Any]] | None = None,
        mmeb_image_root: str | None = None,
        **kwargs: Any,
    ):
        training_args = kwargs.get("args") or (args[1] if len(args) > 1 else None)
        if not isinstance(training_args, UniMEV2TrainingArguments):
            raise TypeError("UniMEV2Trainer needs args=UniMEV2TrainingArguments(...)")
        if training_args.remove_unused_columns:
            raise ValueError("remove_unused_columns must be False: the collator consumes whole training records")
        if training_args.label_names is None:
            training_args.label_names = []  # the objective has no labels; avoids PeftModel's label guessing
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # compute_loss returns a mean: Trainer divides by accumulation
        self.mmeb_eval_rows = mmeb_eval_rows
        self.mmeb_image_root = mmeb_image_root
        self.add_callback(DatasetEpochCallback)

    # ----------------------------------------------------------------------------------------------- the loss
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Embed the ``B · (2 + k)`` packed sequences once and return the mean per-query loss (see module doc)."""
        inputs = dict(inputs)
        judge_scores = inputs.pop("judge_scores")
        num_queries, group = judge_scores.shape[0], judge_scores.shape[1] + 1
        embeddings = embed_inputs(model, inputs)  # one forward, or one per length bucket (trainers/bucketing.py)
        embeddings = embeddings.view(num_queries, group, embeddings.shape[-1])
        queries, candidates = embeddings[:, 0], embeddings[:, 1:]
        loss = self.embedding_loss(queries, candidates, judge_scores)
        if return_outputs:
            return loss, {"query_embeddings": queries, "candidate_embeddings": candidates}
        return loss

    def embedding_loss(
        self, queries: torch.Tensor, candidates: torch.Tensor, judge_scores: torch.Tensor
    ) -> torch.Tensor:
        """The configured objective on ``queries (N, d)``, ``candidates (N, 1 + k, d)``, ``judge_scores (N, 1 + k)``."""
        loss_type = self.args.loss_type
        if loss_type == "symmetric_kl":
            return symmetric_kl_loss(candidate_cosines(queries, candidates), judge_scores, self.args.tau)
        if loss_type == "symmetric_kl_authors":
            dtype = torch.float32 if self.args.authors_loss_fp32 else base_embedder(self.model).dtype
            return symmetric_kl_authors_loss(
                candidate_cosines(queries, candidates, dtype),
                judge_scores,
                self.args.tau,
                self.args.authors_loss_epsilon,
            )
        if loss_type == "js":
            return js_divergence_loss(candidate_cosines(queries, candidates), judge_scores, self.args.tau)
        if loss_type == "hard_labels":
            return hard_label_loss(candidate_cosines(queries, candidates), self.args.tau)
        positives = self.gather_keep_local_grad(candidates[:, 0])
        all_queries = self.gather_keep_local_grad(queries)
        negatives = None
        if self.args.infonce_hard_negatives and candidates.shape[1] > 1:
            negatives = self.gather_keep_local_grad(candidates[:, 1:])
        loss = infonce_loss(all_queries, positives, negatives, self.args.tau)
        world = self.accelerator.num_processes
        if world > 1:  # same value; gradient × world, undoing DDP's average over identical global losses
            loss = loss * world - loss.detach() * (world - 1)
        return loss

    def gather_keep_local_grad(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate ``tensor`` from all processes (rank order); only the local slice carries gradients."""
        world = self.accelerator.num_processes
        if world == 1:
            return tensor
        sizes = self.accelerator.gather(torch.tensor([tensor.shape[0]], device=tensor.device))
        if not bool((sizes == tensor.shape[0]).all()):
            raise ValueError(f"InfoNCE needs equal per-process batch sizes to gather, got {sizes.tolist()}")
        gathered = self.accelerator.gather(tensor.detach().contiguous())
        size, rank = tensor.shape[0], self.accelerator.process_index
        return torch.cat([gathered[: rank * size], tensor, gathered[(rank + 1) * size :]])

    # ----------------------------------------------------------------------------------------------- evaluation
    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Precision@1 on ``mmeb_eval_rows`` (when given), else ``Trainer.evaluate``."""
        if self.mmeb_eval_rows is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        embedder = base_embedder(self.accelerator.unwrap_model(self.model))
        image_size = eval_image_resize(embedder.config)
        evaluator = mmeb_evaluator(
            self.mmeb_eval_rows,
            self.mmeb_image_root,
            batch_size=self.args.per_device_eval_batch_size,
            skip_broken=False,
            show_progress_bar=self.args.should_log and not self.args.disable_tqdm,
        )
        with _image_resize(embedder.config, image_size):
            results = evaluator(embedder)
        metrics = {f"{metric_key_prefix}_{key.replace('/', '_')}": value for key, value in results.items()}
        metrics[f"{metric_key_prefix}_resolution"] = embedder.config.eval_resolution
        metrics[f"{metric_key_prefix}_image_size"] = image_size or 0  # 0: the processor's pixel budget only
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ----------------------------------------------------------------------------------------------- the card
    def card_settings(self) -> dict[str, Any]:
        """The training settings a model card records (method, LoRA, optimisation, data)."""
        args = self.args
        settings: dict[str, Any] = {
            "loss": args.loss_type,
            "tau": args.tau,
            "hard negatives per query": args.num_hard_negatives,
            "LoRA": lora_card(self.accelerator.unwrap_model(self.model)),
            "learning rate": args.learning_rate,
            "global batch": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
            "steps": self.state.global_step,
            "seed": args.seed,
        }
        name = self.card_train_data()
        if name:
            settings["training data"] = name
        return settings


def lora_card(model: torch.nn.Module) -> str:
    """``"r=…, alpha=…, dropout=…"`` of the model's LoRA adapter, or ``"off"`` for a model without one."""
    config = getattr(model, "peft_config", {}).get("default")
    return f"r={config.r}, alpha={config.lora_alpha}, dropout={config.lora_dropout}" if config is not None else "off"
