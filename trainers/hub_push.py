"""What both trainers do at the end of training and on ``push_to_hub`` (docs/publishing.md).

* The final ``save_model()`` of a LoRA run writes the adapter to ``output_dir/adapter`` and the merged model
  (weights, config, remote code, processor) to ``output_dir``, then the model card: ``README.md`` and the training
  record it is rendered from (``unime_v2_training.json``), as trl's trainers write theirs at the end of training.
* ``push_to_hub`` saves that way, stages the repository folder (``hub_cards.publishing.stage_model``) and uploads
  it in ONE commit. Trainer's per-save pushes are off: they copy a checkpoint's files, a PEFT adapter included,
  to the root of ``output_dir``, after which ``AutoModel`` takes the merged folder for an adapter.
* The Hub repository is created by that one push, not when the trainer is built.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unime_v2.hub_cards.publishing import (
    ADAPTER_SUBFOLDER,
    check_repo_id,
    stage_model,
    upload_staged,
    upload_workspace,
)


logger = logging.getLogger(__name__)


class HubMixin:
    """Merged final save, model card and one-commit push for a ``transformers.Trainer`` subclass.

    A subclass sets :attr:`hub_artifact` and implements :meth:`card_settings` and :meth:`card_train_data`.
    """

    hub_artifact = "embedder"
    card_metrics: Mapping[str, Any] | None = None
    """The card's metrics when :meth:`create_model_card` gets none: set it before the final ``save_model()`` (as
    ``examples/train.py`` does with the run summary) and the pushed card carries them too. ``Trainer.train()``
    starts a new log history, so evaluations before training are not in it."""

    def card_settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def card_train_data(self) -> str | None:
        """The training data as the card names it: a Hub id, a folder (its mining report is read) or a label."""
        return getattr(self.train_dataset, "name", None)

    def _merge_on_save(self) -> bool:
        """A LoRA model (one with a ``peft_config``) is saved merged unless ``args.merge_lora_on_save`` is off."""
        lora = hasattr(self.accelerator.unwrap_model(self.model), "peft_config")
        return lora and bool(getattr(self.args, "merge_lora_on_save", True))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Checkpoints (``_internal_call``): as ``Trainer``. Final save into ``args.output_dir``: with LoRA, the
        adapter in ``adapter/`` and the merged model at the root; then the model card; then, with
        ``args.push_to_hub``, the one-commit push (``Trainer`` pushes when the user saves, so does this)."""
        output_dir = output_dir or self.args.output_dir
        final = not _internal_call and os.path.abspath(output_dir) == os.path.abspath(self.args.output_dir)
        if _internal_call or not self._merge_on_save():
            super().save_model(output_dir, _internal_call=True)  # True: no Trainer push, ours follows
        else:
            super().save_model(os.path.join(output_dir, ADAPTER_SUBFOLDER), _internal_call=True)
            if self.args.should_save:
                self.save_merged_model(output_dir)
        if final and self.args.should_save:
            self.create_model_card()
        self.accelerator.wait_for_everyone()
        if final and self.args.push_to_hub and not getattr(self, "_saving_for_push", False):
            self.upload_output_dir(commit_message="Model save")

    def save_merged_model(self, output_dir: str) -> None:
        """Merge a copy of the LoRA adapters into the base weights and save it as a plain model (remote code)."""
        peft_model = self.accelerator.unwrap_model(self.model)
        processor = peft_model.get_base_model().processor
        merged = copy.deepcopy(peft_model).merge_and_unload()
        if hasattr(merged, "attach_processor"):  # the reranker builds its processor from its config
            merged.attach_processor(processor)
        else:
            merged.processor = processor
        merged.save_pretrained(output_dir)
        logger.info(f"Saved the merged UniME-V2 {self.hub_artifact} to {output_dir} (adapter in {ADAPTER_SUBFOLDER}/)")

    def hub_repo_id(self) -> str:
        return self.args.hub_model_id or Path(self.args.output_dir).absolute().name

    def create_model_card(self, metrics: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Write ``README.md`` and the training record in ``output_dir``: settings, training data (and its mining
        report), ``metrics`` (default: the evaluation metrics logged so far and :attr:`card_metrics`), library
        versions. Main process only."""
        if not self.is_world_process_zero():
            return
        from unime_v2.hub_cards.model_card import training_record, write_model_card

        if metrics is None:
            metrics = {k: v for entry in self.state.log_history for k, v in entry.items() if k.startswith("eval_")}
            metrics.update(self.card_metrics or {})
        shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and "eval" in k}
        record = training_record(self.card_settings(), self.card_train_data(), shown)
        write_model_card(self.args.output_dir, self.hub_artifact, self.hub_repo_id(), record)

    # ------------------------------------------------------------------------------------------------ the Hub
    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Only check and name the repository; :meth:`push_to_hub` creates it with its one commit."""
        self.hub_model_id = check_repo_id(self.hub_repo_id())
        self.push_in_progress = None

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Per-save pushes are off (module docstring): the merged model is pushed once, by ``push_to_hub``."""
        if not getattr(self, "_checkpoint_push_noted", False):
            strategy = str(getattr(self.args.hub_strategy, "value", self.args.hub_strategy))
            log = logger.warning if strategy in ("checkpoint", "all_checkpoints") else logger.info
            log(f"push_to_hub: checkpoints are not pushed (hub_strategy={strategy!r} is not used); the merged model is "
                "pushed once, by the final save")  # fmt: skip
            self._checkpoint_push_noted = True

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        eval_results: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Save (merged model, ``adapter/``, card), stage the repository folder and upload it in one commit.

        ``eval_results``: an evaluation ``results.json`` (or its folder) for the card's ``model-index``. Returns
        the ``CommitInfo`` on the main process, ``None`` elsewhere.
        """
        self._saving_for_push = True
        try:
            self.save_model()
        finally:
            self._saving_for_push = False
        return self.upload_output_dir(commit_message, token, revision, private, eval_results)

    def upload_output_dir(
        self,
        commit_message: str | None = "End of training",
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        eval_results: str | None = None,
    ) -> Any:
        """Stage the saved ``output_dir`` and upload it in one commit (main process; ``None`` elsewhere)."""
        if not self.is_world_process_zero():
            return None
        repo_id = self.hub_repo_id()
        with upload_workspace(self.args.output_dir) as staging:
            staged = stage_model(self.args.output_dir, staging, repo_id, self.hub_artifact, eval_results, link=True)
            return upload_staged(
                staged,
                repo_id,
                private=self.args.hub_private_repo if private is None else private,
                token=token or self.args.hub_token,
                commit_message=commit_message or "End of training",
                revision=revision or self.args.hub_revision,
            )
