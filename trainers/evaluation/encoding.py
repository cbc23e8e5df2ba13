"""Encode evaluation items once: deduplicated, at a chosen image resolution, cached on disk, shared by processes.

Every distinct item (text + image) of a dataset is embedded once. With a cache folder the embeddings go through the
mining stage's chunked :class:`~unime_v2.data_builders.mining.embedding_cache.EmbeddingCache`: a chunk's file is
keyed by the model's fingerprint (config and weights), the settings (resolution) and the chunk's item contents, so
a rerun — or the reranker run after the embedder run — re-encodes nothing, and any change re-encodes. Chunks fix
the batches, so 1 or N processes give the same embeddings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from unime_v2.data_builders.mining.embedding_cache import EmbeddingCache, model_fingerprint
from unime_v2.data_builders.storage import item_key as storage_item_key
from unime_v2.modeling_unime_v2.configuration_unime_v2 import EVAL_RESOLUTIONS


RESOLUTIONS = EVAL_RESOLUTIONS
"""``--resolution``: images resized to 336² (``low``) or 1344² (``high``), or the checkpoint's own setting."""

_ITEM_INDEX = re.compile(r"^item (\d+):")


def item_key(item: dict[str, Any]) -> str:
    """The content key of one ``{"text", "image"}`` item (:func:`~unime_v2.data_builders.storage.item_key`)."""
    return storage_item_key(item.get("text") or "", item.get("image"))


def resolution_size(resolution: str | None) -> int | None:
    """The square side ``resolution`` resizes images to, ``None`` for the checkpoint's own setting."""
    if resolution is None:
        return None
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution={resolution!r}; choose one of {sorted(RESOLUTIONS)}")
    return RESOLUTIONS[resolution]


@contextmanager
def image_resolution(model: Any, resolution: str | None) -> Iterator[Any]:
    """Temporarily set the processor's ``image_resize`` (336 or 1344) for ``low`` / ``high``; ``model`` takes the
    model config's ``eval_resolution`` (``high`` for the authors' checkpoints, docs/method.md §4); yields what is used."""
    if resolution == "model":
        resolution = getattr(getattr(model, "config", None), "eval_resolution", "checkpoint")
    size = resolution_size(resolution)
    config = getattr(getattr(model, "processor", None), "config", None)
    if size is None or config is None:
        yield getattr(config, "image_resize", None)
        return
    before = config.image_resize
    config.image_resize = size
    try:
        yield size
    finally:
        config.image_resize = before


class ItemEncoder:
    """Embeds item lists for one model: deduplicated, chunked, cached under ``cache_dir`` when given.

    Args:
        model: anything with ``encode(items, batch_size=..., show_progress_bar=...)`` (a ``UniMEV2Model``).
        batch_size: items per forward pass.
        cache_dir: folder of the embedding cache; ``None`` keeps nothing on disk.
        settings: what else shapes the embeddings (resolution, …); part of the cache key.
        chunk_size: items per cache file (and per unit of work shared between processes).
        show_progress_bar: a tqdm bar counting items per second.
    """

    def __init__(
        self,
        model: Any,
        batch_size: int = 16,
        cache_dir: str | Path | None = None,
        settings: dict[str, Any] | None = None,
        chunk_size: int = 256,
        show_progress_bar: bool = False,
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.settings = dict(settings or {})
        self.chunk_size = chunk_size
        self.show_progress_bar = show_progress_bar
        self.encoded_items = 0
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """The model's fingerprint with the settings (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model, self.settings)
        return self._fingerprint

    def encode(self, items: Sequence[dict[str, Any]], origins: Sequence[str], desc: str = "encode") -> torch.Tensor:
        """L2-normalised embeddings ``(len(items), d)``; each distinct item is embedded once.

        ``origins[i]`` says where item ``i`` comes from ("VOC2007 row 3 candidate 7"); an error while embedding
        an item is re-raised with its origin.
        """
        index: dict[str, int] = {}
        unique, unique_origin, position = [], [], []
        for item, origin in zip(items, origins):
            key = item_key(item)
            if key not in index:
                index[key] = len(unique)
                unique.append(item)
                unique_origin.append(origin)
            position.append(index[key])
        keys = list(index)
        with tqdm(desc=desc, unit="item", disable=not self.show_progress_bar) as bar:
            encode_range = self._range_encoder(unique, unique_origin, bar)
            if self.cache_dir is not None:
                cache = EmbeddingCache(self.cache_dir, self.fingerprint, self.chunk_size)
                embeddings = torch.from_numpy(cache.embed(keys, encode_range))
            else:
                embeddings = self._encode_shared(len(unique), encode_range)
        embeddings = torch.nn.functional.normalize(embeddings.float(), dim=-1)
        return embeddings[torch.as_tensor(position, dtype=torch.long)]

    def _range_encoder(
        self, items: Sequence[dict[str, Any]], origins: Sequence[str], bar: tqdm
    ) -> Callable[[range], np.ndarray]:
        def encode_range(span: range) -> np.ndarray:
            chunk = list(items[span.start : span.stop])
            try:
                out = self.model.encode(chunk, batch_size=self.batch_size, show_progress_bar=False)
            except (ValueError, FileNotFoundError, TypeError, OSError) as error:
                raise type(error)(_with_origin(str(error), origins, span)) from error
            bar.update(len(chunk))
            self.encoded_items += len(chunk)
            return out.float().cpu().numpy()

        return encode_range

    def _encode_shared(self, count: int, encode_range: Callable[[range], np.ndarray]) -> torch.Tensor:
        """No cache: each process embeds a share of the chunks; every process gets all embeddings."""
        state = PartialState()
        spans = [range(s, min(s + self.chunk_size, count)) for s in range(0, count, self.chunk_size)]
        with state.split_between_processes(spans) as mine:
            local = [encode_range(span) for span in mine]
        if state.num_processes > 1:
            local = gather_object(local)
        return torch.from_numpy(np.concatenate(local)) if local else torch.zeros(0, 0)


def _with_origin(message: str, origins: Sequence[str], span: range) -> str:
    """``item i: …`` from ``encode`` → ``<origin of item span.start + i>: …`` (else the span's first and last)."""
    match = _ITEM_INDEX.match(message)
    if match is None:
        return f"one of {origins[span.start]} … {origins[span.stop - 1]}: {message}"
    return f"{origins[span.start + int(match.group(1))]}:{message[match.end() :]}"
