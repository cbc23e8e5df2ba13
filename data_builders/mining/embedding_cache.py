"""Embeddings cached on disk, keyed by the embedder and by the items' content, computed in chunks.

A list of items is cut into fixed-size chunks; a chunk's file name is the hash of the embedder's fingerprint and of
the chunk's item keys. A rerun (or a resumed run, or a run with another number of processes) loads every chunk
already on disk and computes only the missing ones, each process a share of them
(``PartialState.split_between_processes``). Files are written to a temporary name and renamed, so a killed run
never leaves a half-written chunk behind.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from ..storage import atomic_write_bytes


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` via a temporary file + rename (readers never see a partial file)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def model_fingerprint(model: torch.nn.Module, extra: dict | None = None) -> str:
    """A hash of a model's config, ``extra`` settings and a sample of every weight tensor.

    The full weights of a 7B model are too large to hash on every run; the first and last 64 values of every named
    tensor (plus names, shapes and dtypes) change whenever a checkpoint or fine-tune differs in practice.
    """
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    digest.update(json.dumps(extra or {}, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().reshape(-1)
            sample = torch.cat([flat[:64], flat[-64:]]).float().cpu().numpy()
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(sample.tobytes())
    return digest.hexdigest()


class EmbeddingCache:
    """Chunked on-disk embedding cache for one embedder.

    Args:
        cache_dir: folder for the ``.npy`` chunk files.
        fingerprint: identifies the embedder and its settings (see :func:`model_fingerprint`).
        chunk_size: items per chunk file; it also fixes the batches an item is embedded in, so results do not
            depend on how many processes share the work.
    """

    def __init__(self, cache_dir: str | Path, fingerprint: str, chunk_size: int = 1024):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.cache_dir = Path(cache_dir)
        self.fingerprint = fingerprint
        self.chunk_size = chunk_size
        self.computed_chunks = 0
        self.loaded_chunks = 0

    def chunk_path(self, keys: Sequence[str]) -> Path:
        """The file of a chunk: hash of the embedder fingerprint and the chunk's item keys."""
        digest = hashlib.sha256(self.fingerprint.encode())
        for key in keys:
            digest.update(key.encode())
        return self.cache_dir / f"emb-{digest.hexdigest()[:32]}.npy"

    def embed(
        self,
        keys: Sequence[str],
        encode: Callable[[range], np.ndarray],
        state: PartialState | None = None,
        show_progress_bar: bool = True,
        desc: str = "embed",
        memmap: bool = False,
    ) -> np.ndarray:
        """Embeddings of the items with ``keys`` (``(len(keys), d)`` float32), from disk where cached.

        Args:
            keys: content keys of the items, in order.
            encode: computes the embeddings of the items at the given index range (called only for missing chunks).
            state: shares the missing chunks between processes; every process returns the full array.
            show_progress_bar: a bar of the items this process embeds (main process only).
            desc: the bar's label.
            memmap: copy the chunks one at a time into one ``.npy`` file (named after them) and return it
                memory-mapped read-only, so the embeddings of MMEB-train never have to fit in memory.
        """
        state = state or PartialState()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        ranges = [range(s, min(s + self.chunk_size, len(keys))) for s in range(0, len(keys), self.chunk_size)]
        paths = [self.chunk_path(keys[r.start : r.stop]) for r in ranges]
        missing = [i for i, path in enumerate(paths) if not path.exists()]
        state.wait_for_everyone()  # all processes list the same missing chunks before any is written
        with state.split_between_processes(missing) as mine:
            total = sum(len(ranges[i]) for i in mine)
            disable = not (show_progress_bar and state.is_main_process) or total == 0
            with tqdm(total=total, desc=desc, unit="item", disable=disable) as bar:
                for i in mine:
                    atomic_save_npy(paths[i], np.ascontiguousarray(encode(ranges[i]), dtype=np.float32))
                    self.computed_chunks += 1
                    bar.update(len(ranges[i]))
        state.wait_for_everyone()
        self.loaded_chunks = len(paths) - len(missing)
        if not paths:
            return np.zeros((0, 0), dtype=np.float32)
        if not memmap:
            return np.concatenate([np.load(path) for path in paths])
        digest = hashlib.sha256("\n".join(path.name for path in paths).encode()).hexdigest()[:32]
        target = self.cache_dir / f"all-{digest}.npy"
        if state.is_main_process and not target.exists():
            self._join(paths, len(keys), target)
        state.wait_for_everyone()
        return np.load(target, mmap_mode="r")

    def _join(self, paths: Sequence[Path], n_items: int, target: Path) -> None:
        """Copy the chunk files, one at a time, into the ``.npy`` file ``target`` (temporary name, then renamed)."""
        width = np.load(paths[0], mmap_mode="r").shape[1]
        tmp = target.with_name(f".{target.stem}.tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_items, width))
        for i, path in enumerate(paths):
            chunk = np.load(path)
            out[i * self.chunk_size : i * self.chunk_size + len(chunk)] = chunk
        out.flush()
        del out
        tmp.replace(target)
