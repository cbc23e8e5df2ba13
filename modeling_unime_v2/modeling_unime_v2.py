"""The UniME-V2 embedder: a vision-language backbone whose last-token hidden state is the embedding.

Hub remote code: this file imports only torch, transformers and its siblings, so ``save_pretrained`` can copy it
next to the weights and ``AutoModel.from_pretrained(path, trust_remote_code=True)`` can run it anywhere.

The backbone is the upstream transformers *base* model (``Qwen2VLModel``, ``Qwen2_5_VLModel``,
``LlavaOnevisionModel``): the LM head is never built, so no logits over the vocabulary are computed.
"""

from __future__ import annotations

import copy
import inspect
import json
import multiprocessing
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, PreTrainedModel
from transformers.utils import ModelOutput, logging

from .configuration_unime_v2 import BACKBONE_NO_SPLIT_MODULES, SUPPORTED_BACKBONES, UniMEV2Config, check_truncate_dim
from .processing_unime_v2 import UniMEV2Processor, is_image_input, rename_item_error
from .processing_unime_v2 import hub_kwargs as _hub_kwargs


logger = logging.get_logger(__name__)


@dataclass
class UniMEV2Output(ModelOutput):
    """Output of :class:`UniMEV2Model`.

    Args:
        embeddings (`torch.FloatTensor` of shape `(batch_size, hidden_size)`): the last non-padding token's final
            hidden state, in fp32, L2-normalised when ``config.normalize``.
        last_hidden_state (`torch.FloatTensor`, *optional*): the backbone's final hidden states, only when
            ``output_hidden_states=True`` is passed.
    """

    embeddings: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None


def last_token_indices(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last attended token of each row; right for left and right padding alike."""
    length = attention_mask.shape[-1]
    return length - 1 - attention_mask.flip(-1).int().argmax(-1)


def official_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """The authors' Qwen-VL positions: plain 1-D ``0..n-1`` over the attended tokens of each row.

    Their code locates images through ``<|vision_start|>``, which the official format never contains, so every
    token (image tokens too) gets a sequential position on all three M-RoPE axes. Padding gets 0.
    """
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)


def _check_layout(
    attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None, sequence_ends: torch.Tensor | None
) -> bool:
    """True for the packed layout (``sequence_ends``), False for the padded one; a mix of the two is an error."""
    if sequence_ends is None:
        if attention_mask is None:
            raise ValueError("attention_mask is required (or sequence_ends and position_ids for a packed batch)")
        return False
    if attention_mask is not None or position_ids is None:
        raise ValueError(
            "a packed batch (sequence_ends) takes position_ids that restart at 0 for each sequence and no "
            "attention_mask (trainers/bucketing.py, pack_text_batch)"
        )
    return True


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity matrix ``(len(a), len(b))`` between two sets of embeddings."""
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T


def require_grads_from_trained_inputs(model: PreTrainedModel) -> None:
    """``enable_input_require_grads`` for the UniME-V2 models: hook the LM's token embeddings (always trained, by
    LoRA or in full) and another sub-model's input embeddings only if that sub-model has trainable parameters.

    transformers' version hooks every sub-model's input embeddings, the frozen vision tower's patch embedding too.
    Under gradient checkpointing (which calls it, as peft does) the vision tower's output then requires a gradient,
    so every step recomputes the whole frozen vision tower and back-propagates through it for a gradient nothing
    uses (docs/training.md, "Gradient checkpointing and the frozen vision tower"). The trained weights' gradients
    are the same either way.
    """
    model.disable_input_require_grads()
    token_embeddings = model.get_input_embeddings()

    def require_grad(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
        output.requires_grad_(True)

    hooks, seen = [], set()
    for module in model.modules():
        if not isinstance(module, PreTrainedModel):
            continue
        try:
            embeddings = module.get_input_embeddings()
        except NotImplementedError:
            continue
        if embeddings is None or id(embeddings) in seen:
            continue
        seen.add(id(embeddings))
        if embeddings is token_embeddings or any(p.requires_grad for p in module.parameters()):
            hooks.append(embeddings.register_forward_hook(require_grad))
    model._require_grads_hooks = hooks


def save_sentence_transformers_files(
    save_directory: str, st_config: Mapping[str, Any], loaded_from: str | None = None
) -> None:
    """Write ``modules.json``, ``config_sentence_transformers.json`` and the sentence-transformers module files
    (``st_config["files"]``, their class ``st_config["module"]``), so ``SentenceTransformer`` / ``CrossEncoder``
    (``trust_remote_code=True``) load the folder (README, "Use with sentence-transformers"). The module files are
    copied from beside this file, else from the local folder the model was loaded from (``loaded_from``); where
    neither has them (remote code run from a Hub cache), nothing is written and a warning says so."""
    st_config = dict(st_config)
    files, module = st_config.pop("files"), st_config.pop("module")
    sources = [os.path.dirname(os.path.abspath(__file__))]
    if loaded_from and os.path.isdir(loaded_from):
        sources.append(loaded_from)
    source = next((d for d in sources if all(os.path.isfile(os.path.join(d, name)) for name in files)), None)
    if source is None:
        logger.warning(f"{', '.join(files)} not found next to the model code: no sentence-transformers files saved")
        return
    for name in files:
        if os.path.abspath(os.path.join(source, name)) != os.path.abspath(os.path.join(save_directory, name)):
            shutil.copyfile(os.path.join(source, name), os.path.join(save_directory, name))
    class_ref = f"{files[0].removesuffix('.py')}.{module}"
    modules = [{"idx": 0, "name": "0", "path": "", "type": class_ref}]
    with open(os.path.join(save_directory, "modules.json"), "w", encoding="utf-8") as file:
        json.dump(modules, file, indent=2)
    with open(os.path.join(save_directory, "config_sentence_transformers.json"), "w", encoding="utf-8") as file:
        json.dump(st_config, file, indent=2)


class RemoteCodeSaving:
    """``save_pretrained`` for UniME-V2 models: weights, config, this remote code (``auto_map``) and ``processor``."""

    def save_pretrained(self, save_directory: str, *args: Any, **kwargs: Any) -> None:
        """Save weights, config, the remote code and the processor, so ``AutoModel`` can load them anywhere."""
        self.register_for_auto_class("AutoModel")
        self.config.register_for_auto_class()
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.processor is not None and kwargs.get("is_main_process", True):
            self.processor.save_pretrained(save_directory)
        if kwargs.get("is_main_process", True):
            save_sentence_transformers_files(
                save_directory, self.sentence_transformers_config(), getattr(self.config, "_name_or_path", None)
            )

    def sentence_transformers_config(self) -> dict[str, Any]:
        """What ``config_sentence_transformers.json`` holds, plus ``module`` (the class ``modules.json`` names) and
        ``files`` (the module's file first, then the sentence-transformers files it imports)."""
        raise NotImplementedError


class UniMEV2PreTrainedModel(PreTrainedModel):
    config_class = UniMEV2Config
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _no_split_modules = list(BACKBONE_NO_SPLIT_MODULES)

    def enable_input_require_grads(self) -> None:
        """Input gradients for checkpointed trained layers only; the frozen vision tower is left out."""
        require_grads_from_trained_inputs(self)


class UniMEV2Model(RemoteCodeSaving, UniMEV2PreTrainedModel):
    """UniME-V2 universal multimodal embedder.

    Use :meth:`encode` for lists of items, :meth:`forward` for processed batches (training), and
    :meth:`from_backbone` to wrap a plain VLM checkpoint (e.g. the authors' released merged checkpoints).
    """

    def __init__(self, config: UniMEV2Config):
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError("UniMEV2Config.backbone_config is required to build a UniMEV2Model")
        self.backbone = AutoModel.from_config(config.backbone_config)
        self.processor: UniMEV2Processor | None = None
        self.post_init()

    # ----------------------------------------------------------------------------------------- loading/saving
    @classmethod
    def from_backbone(
        cls, name_or_path: str, processor_name_or_path: str | None = None, **kwargs: Any
    ) -> UniMEV2Model:
        """Wrap a plain pretrained VLM checkpoint (``*ForConditionalGeneration``) as a UniME-V2 embedder.

        The checkpoint is loaded with its upstream class (so transformers converts older key layouts), its LM head
        is dropped, and its processor is attached. Keyword arguments that name :class:`UniMEV2Config` fields
        (``prompt_format``, ``image_resize``, ``min_pixels``, …) configure the embedder; the rest
        (``dtype``, ``attn_implementation``, ``revision``, …) go to ``from_pretrained``.
        """
        embedder_kwargs = pop_config_fields(UniMEV2Config, kwargs)
        vlm = load_supported_vlm(name_or_path, kwargs, "UniME-V2")
        config = UniMEV2Config(backbone_config=vlm.config, **embedder_kwargs)
        with torch.device("meta"):
            model = cls(config)
        model.backbone = vlm.model
        model.config._attn_implementation_internal = vlm.config._attn_implementation
        model.processor = UniMEV2Processor.from_pretrained(
            processor_name_or_path or name_or_path, config=config, **_hub_kwargs(kwargs)
        )
        return model.to(vlm.dtype).eval()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, *args: Any, **kwargs: Any) -> UniMEV2Model:
        """Load a saved UniME-V2 embedder and, when the checkpoint has one, its processor."""
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        try:
            model.processor = UniMEV2Processor.from_pretrained(
                pretrained_model_name_or_path, config=model.config, **_hub_kwargs(kwargs)
            )
        except (OSError, ValueError) as error:
            logger.warning(
                f"No processor found with {pretrained_model_name_or_path}: {error}; attach one to encode()."
            )
        return model

    # ----------------------------------------------------------------------------------------- model
    def get_input_embeddings(self) -> torch.nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: torch.nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        sequence_ends: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.IntTensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        batch_num_images: torch.LongTensor | None = None,
        text_image_token_mask: torch.BoolTensor | None = None,
        normalize: bool | None = None,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> UniMEV2Output:
        r"""Embed a processed batch.

        Args:
            input_ids, attention_mask: from :class:`UniMEV2Processor` (left or right padded).
            position_ids: optional override; by default the ``official`` format on a Qwen-VL backbone gets the
                authors' 1-D positions (:func:`official_position_ids`), ``chat`` gets the backbone's own M-RoPE.
            sequence_ends: the padding-free packed layout (docs/training.md, "Padding-free packing"): several
                sequences per row, told apart by ``position_ids`` restarting at 0 (``(4, rows, length)`` on Qwen-VL:
                text positions, then the three M-RoPE axes; ``(rows, length)`` otherwise), no ``attention_mask``;
                ``sequence_ends`` holds the flat index (``row · length + column``) of each sequence's last token,
                whose hidden state is its embedding. transformers then attends within each sequence only.
            pixel_values, image_grid_thw, mm_token_type_ids: Qwen-VL image inputs (``mm_token_type_ids`` is what
                transformers uses to find image tokens for M-RoPE).
            image_sizes, batch_num_images: LLaVA-OneVision image inputs.
            text_image_token_mask: image-token positions that are plain text (an image marker without image, see
                :class:`UniMEV2Processor`): embedded as the token itself, never filled with image features.
            normalize: L2-normalise the embeddings; ``None`` follows ``config.normalize``.
        """
        packed = _check_layout(attention_mask, position_ids, sequence_ends)
        backbone_inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.config.uses_mrope:
            if position_ids is None and self.config.prompt_format == "official":
                position_ids = official_position_ids(attention_mask)
            backbone_inputs.update(
                pixel_values=pixel_values, image_grid_thw=image_grid_thw, mm_token_type_ids=mm_token_type_ids
            )
        else:
            backbone_inputs.update(pixel_values=pixel_values, image_sizes=image_sizes)
            if batch_num_images is not None:
                backbone_inputs["batch_num_images"] = batch_num_images
        if position_ids is not None:
            backbone_inputs["position_ids"] = position_ids
        if text_image_token_mask is not None and bool(text_image_token_mask.any()):
            backbone_inputs = self._embed_text_image_tokens(backbone_inputs, text_image_token_mask)
        if self.config.uses_mrope and hasattr(self.backbone, "rope_deltas"):
            self.backbone.rope_deltas = None  # never reuse positions cached by an earlier call
        hidden = self.backbone(**backbone_inputs, use_cache=False).last_hidden_state
        if packed:
            pooled = hidden.flatten(0, 1)[sequence_ends.to(hidden.device)].float()
        else:
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            pooled = hidden[rows, last_token_indices(attention_mask).to(hidden.device)].float()
        if self.config.normalize if normalize is None else normalize:
            pooled = F.normalize(pooled, dim=-1)
        return UniMEV2Output(embeddings=pooled, last_hidden_state=hidden if output_hidden_states else None)

    def _embed_text_image_tokens(self, inputs: dict[str, Any], mask: torch.BoolTensor) -> dict[str, Any]:
        """Backbone inputs in which the image tokens under ``mask`` keep their own (text) embedding.

        Qwen-VL models accept ``input_ids`` and ``inputs_embeds`` together: the embeddings come from the real ids,
        while the ids the backbone uses to place image features and M-RoPE positions no longer hold the image token
        there. LLaVA-OneVision takes only one of the two, so its image features are placed here.
        """
        input_ids = inputs.pop("input_ids")
        embeds = self.backbone.get_input_embeddings()(input_ids)
        backbone_config = self.config.backbone_config
        image_token_id = getattr(backbone_config, "image_token_id", None)
        if image_token_id is None:
            image_token_id = backbone_config.image_token_index
        if self.config.uses_mrope:
            special = {image_token_id, getattr(backbone_config, "video_token_id", None)}
            neutral = next(i for i in range(3) if i not in special)
            inputs.update(input_ids=input_ids.masked_fill(mask, neutral), inputs_embeds=embeds)
            return inputs
        pixel_values = inputs.pop("pixel_values", None)
        if pixel_values is not None:
            features = self.backbone.get_image_features(
                pixel_values,
                inputs.pop("image_sizes"),
                batch_num_images=inputs.pop("batch_num_images", None),
                return_dict=True,
            ).pooler_output
            features = torch.cat(list(features)).to(embeds.device, embeds.dtype)
            slots = (input_ids == image_token_id) & ~mask
            if int(slots.sum()) != features.shape[0]:
                raise ValueError(f"{int(slots.sum())} image token(s) for {features.shape[0]} image feature(s)")
            embeds = embeds.masked_scatter(slots.unsqueeze(-1).expand_as(embeds), features)
        inputs.pop("image_sizes", None)
        inputs.pop("batch_num_images", None)
        inputs["inputs_embeds"] = embeds
        return inputs

    # ----------------------------------------------------------------------------------------- user API
    @torch.no_grad()
    def encode(
        self,
        items: Sequence[Mapping[str, Any]],
        batch_size: int = 16,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = False,
        convert_to_tensor: bool = False,
        normalize_embeddings: bool | None = None,
        num_workers: int = 0,
        truncate_dim: int | None = None,
    ) -> Any:
        """Embed MMEB items (``{"text": str | None, "image": PIL | path | None}``, the instruction inside the text)
        → float tensor ``(n, d)`` on CPU: the exact MMEB path, each item as it is.

        ``convert_to_numpy`` returns a numpy array instead (``convert_to_tensor`` wins when both are set, as in
        sentence-transformers); ``normalize_embeddings`` overrides ``config.normalize`` (L2 norm);
        ``show_progress_bar`` counts items. ``num_workers`` > 0 prepares batches (image loading, resizing,
        tokenisation) in that many ``DataLoader`` worker processes while the model runs, as training does; the
        embeddings are the same. Errors name the offending item by its index in ``items``.

        ``truncate_dim`` (default: ``config.truncate_dim``; ``None`` keeps every dimension) keeps the first
        ``truncate_dim`` dimensions of each last-token hidden state *before* L2 normalisation, as
        sentence-transformers does with ``truncate_dim`` and ``normalize_embeddings=True``, so that shorter
        embeddings are still unit vectors whose dot product is the cosine. UniME-V2 was not trained for nested
        (Matryoshka) dimensions, so retrieval quality at a small ``truncate_dim`` is not established.
        """
        if self.processor is None:
            raise ValueError("this model has no processor attached; load it with from_pretrained/from_backbone")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if truncate_dim is None:
            truncate_dim = getattr(self.config, "truncate_dim", None)
        check_truncate_dim(truncate_dim, self.config.hidden_size)
        normalize = self.config.normalize if normalize_embeddings is None else normalize_embeddings
        was_training = self.training
        self.eval()
        chunks = [torch.empty(0, truncate_dim or self.config.hidden_size)]
        bar = logging.tqdm(total=len(items), desc="encode", unit="item", disable=not show_progress_bar)
        for count, batch in _processed_batches(self.processor, items, batch_size, num_workers, self.device):
            batch = batch.to(self.device)
            if "pixel_values" in batch:
                batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
            if truncate_dim is None:
                embeddings = self(**batch, normalize=normalize).embeddings
            else:
                embeddings = self(**batch, normalize=False).embeddings[:, :truncate_dim]
                embeddings = F.normalize(embeddings, dim=-1) if normalize else embeddings
            chunks.append(embeddings.cpu())
            bar.update(count)
        bar.close()
        self.train(was_training)
        embeddings = torch.cat(chunks)
        return embeddings.numpy() if convert_to_numpy and not convert_to_tensor else embeddings

    def sentence_transformers_config(self) -> dict[str, Any]:
        """sentence-transformers settings: ``prompts`` are the query/document instructions of :meth:`encode_query`
        and :meth:`encode_document`, cosine similarity."""
        return {
            "module": "UniMEV2STEmbedder",
            "files": ["sentence_transformers_unime_v2.py"],
            "model_type": "SentenceTransformer",
            "prompts": {"query": self.config.query_instruction, "document": self.config.candidate_instruction},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        }

    def encode_query(self, inputs: Any, instruction: str | None = None, **kwargs: Any) -> Any:
        """Embed queries in the sentence-transformers manner: texts (``str``), images (PIL image or
        ``pathlib.Path``) or items, each with ``instruction`` in MMEB's layout (default: ``config.query_instruction``;
        ``""`` for none; docs/architecture.md, "Using the model"). One input (not in a list) gives one vector.
        Keyword arguments are :meth:`encode`'s (``batch_size``, ``convert_to_numpy``, ``normalize_embeddings``,
        ``truncate_dim``, …).
        """
        return self._encode_inputs(inputs, instruction, "query_items", kwargs)

    def encode_document(self, inputs: Any, instruction: str | None = None, **kwargs: Any) -> Any:
        """Embed documents (candidates) like :meth:`encode_query`, the default instruction being
        ``config.candidate_instruction``."""
        return self._encode_inputs(inputs, instruction, "document_items", kwargs)

    def _encode_inputs(self, inputs: Any, instruction: str | None, kind: str, kwargs: dict[str, Any]) -> Any:
        if self.processor is None:
            raise ValueError("this model has no processor attached; load it with from_pretrained/from_backbone")
        single = isinstance(inputs, (str, Mapping)) or is_image_input(inputs)
        items = getattr(self.processor, kind)([inputs] if single else list(inputs), instruction)
        embeddings = self.encode(items, **kwargs)
        return embeddings[0] if single else embeddings

    def export_backbone(self, save_directory: str) -> str:
        """Save this embedder as a plain backbone checkpoint that other runtimes load without this code.

        See :func:`export_backbone` (docs/architecture.md, "Export for other runtimes").
        """
        return export_backbone(self, save_directory)

    def similarity(self, queries: Any, candidates: Any) -> Any:
        """Cosine similarity matrix between query and candidate embeddings, given as tensors or numpy arrays
        (what :meth:`encode` returns either way): a tensor when either input is one, else a numpy array."""
        scores = cosine_similarity(torch.as_tensor(queries), torch.as_tensor(candidates))
        if isinstance(queries, torch.Tensor) or isinstance(candidates, torch.Tensor):
            return scores
        return scores.numpy()


class _ProcessedChunks(torch.utils.data.Dataset):
    """Chunk ``i`` of ``items``, processed: ``(number of items, batch)``, or ``(error, None)`` so that a failure in
    a worker process reaches the caller as the processor's own error, its item index shifted to ``items``."""

    def __init__(self, processor: Any, items: Sequence[Mapping[str, Any]], batch_size: int):
        self.processor, self.items, self.batch_size = processor, items, batch_size

    def __len__(self) -> int:
        return -(-len(self.items) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        start = index * self.batch_size
        chunk = self.items[start : start + self.batch_size]
        try:
            return len(chunk), self.processor(chunk)
        except (ValueError, FileNotFoundError, TypeError) as error:
            return rename_item_error(error, lambda i: f"item {i + start}"), None


def _processed_batches(
    processor: Any, items: Sequence[Mapping[str, Any]], batch_size: int, num_workers: int, device: torch.device
) -> Any:
    """``(number of items, processed batch)`` for consecutive chunks of ``items``, in order; prepared in the calling
    process (``num_workers`` 0) or ahead of use in ``DataLoader`` workers."""
    dataset = _ProcessedChunks(processor, items, batch_size)
    chunks: Any = (dataset[i] for i in range(len(dataset)))
    if num_workers:
        chunks = torch.utils.data.DataLoader(
            dataset,
            batch_size=None,
            num_workers=num_workers,
            collate_fn=_as_is,
            pin_memory=torch.device(device).type == "cuda",
            # fork where there is one: the workers need no CUDA, and a forked worker has this (remote-code) module
            multiprocessing_context="fork" if "fork" in multiprocessing.get_all_start_methods() else None,
        )
    for count, batch in chunks:
        if batch is None:
            raise count
        yield count, batch


def _as_is(pair: tuple[Any, Any]) -> tuple[Any, Any]:
    return pair


SENTENCE_TRANSFORMERS_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]
"""``modules.json`` of an exported backbone: where vLLM and sentence-transformers read the pooling settings."""


def export_backbone(model: Any, save_directory: str) -> str:
    """Write the embedder ``model`` as a plain backbone checkpoint in ``save_directory`` and return the folder.

    * weights: the backbone's own ``*ForConditionalGeneration`` class (``Qwen2VLForConditionalGeneration``,
      ``Qwen2_5_VLForConditionalGeneration``, ``LlavaOnevisionForConditionalGeneration``); a PEFT-wrapped model
      is merged first (on a copy). The embedder has no LM head: the exported head is the input embedding matrix
      (tied where the backbone ties them), so the checkpoint embeds but does not generate meaningful text;
    * the backbone processor, with its chat template;
    * the pooling settings as sentence-transformers writes them, which vLLM's pooling runner also reads:
      ``modules.json``, ``1_Pooling/config.json`` (``pooling_mode_lasttoken``), ``2_Normalize/`` (L2 norm).

    A runtime that loads the folder must feed the embedder's input format: the chat template
    (``prompt_format="chat"``, and LLaVA-OneVision's ``official``) is reproduced by the plain class. A Qwen-VL
    embedder in the ``official`` format was trained with 1-D positions, which the plain classes (and vLLM) replace
    by M-RoPE: its exported embeddings differ (docs/architecture.md, "Export for other runtimes").
    """
    if hasattr(model, "merge_and_unload"):  # a PEFT model: merge the adapters into a copy
        model = copy.deepcopy(model).merge_and_unload()
    elif any(hasattr(module, "lora_A") for module in model.modules()):
        raise ValueError(
            "this model holds unmerged LoRA adapters: pass the PEFT model itself to export_backbone(), which merges "
            "them on a copy"
        )
    config = model.config
    if config.uses_mrope and config.prompt_format == "official":
        logger.warning(
            "exporting a Qwen-VL embedder in the 'official' prompt format: it was trained with 1-D positions, which "
            "the plain backbone class and vLLM replace by M-RoPE; the exported checkpoint's embeddings will differ"
        )
    backbone_config = copy.deepcopy(config.backbone_config)
    backbone_config.architectures = None
    with torch.device("meta"):
        vlm = AutoModelForImageTextToText.from_config(backbone_config)
    vlm.model = model.backbone
    embeddings = model.backbone.get_input_embeddings().weight
    text_config = backbone_config.get_text_config()
    tied = bool(getattr(backbone_config, "tie_word_embeddings", getattr(text_config, "tie_word_embeddings", False)))
    head = torch.nn.Linear(embeddings.shape[1], embeddings.shape[0], bias=False, device=embeddings.device)
    head.weight = embeddings if tied else torch.nn.Parameter(embeddings.detach().clone())
    vlm.lm_head = head
    vlm.config._attn_implementation_internal = config._attn_implementation
    vlm.to(model.dtype).save_pretrained(save_directory)
    if model.processor is not None:
        model.processor.backbone_processor.save_pretrained(save_directory)
    with open(os.path.join(save_directory, "modules.json"), "w") as handle:
        json.dump(SENTENCE_TRANSFORMERS_MODULES, handle, indent=2)
    pooling = {
        "word_embedding_dimension": config.hidden_size,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": True,
        "include_prompt": True,
    }
    os.makedirs(os.path.join(save_directory, "1_Pooling"), exist_ok=True)
    with open(os.path.join(save_directory, "1_Pooling", "config.json"), "w") as handle:
        json.dump(pooling, handle, indent=2)
    os.makedirs(os.path.join(save_directory, "2_Normalize"), exist_ok=True)
    return save_directory


def pop_config_fields(config_class: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove from ``kwargs`` (and return) the keyword arguments that name ``config_class.__init__`` parameters."""
    fields = set(inspect.signature(config_class.__init__).parameters) - {"self", "kwargs"}
    return {key: kwargs.pop(key) for key in list(kwargs) if key in fields}


def load_supported_vlm(name_or_path: str, kwargs: dict[str, Any], what: str) -> PreTrainedModel:
    """The checkpoint's upstream VLM (``AutoModelForImageTextToText``), refused with a clear error when its
    ``model_type`` is not one of ``SUPPORTED_BACKBONES``; ``what`` names the model being built in that error."""
    backbone_config = AutoConfig.from_pretrained(name_or_path, **_hub_kwargs(kwargs))
    if backbone_config.model_type not in SUPPORTED_BACKBONES:
        raise ValueError(
            f"{name_or_path}: unsupported backbone model_type {backbone_config.model_type!r}; "
            f"{what} supports {SUPPORTED_BACKBONES}"
        )
    return AutoModelForImageTextToText.from_pretrained(name_or_path, **kwargs)
