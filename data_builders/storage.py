"""Writing files so that no reader ever sees half of one, and the project's one content hash and content keys."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class atomic_directory:  # noqa: N801 (a context manager used like a function)
    """``with atomic_directory(target) as tmp:`` fill ``tmp``; on success it becomes ``target`` in one rename.

    A run killed while writing leaves no half-written ``target`` behind (the temporary folder is replaced on the
    next attempt). An existing ``target`` is kept (another process finished first) unless ``replace``.
    """

    def __init__(self, target: str | Path, replace: bool = False) -> None:
        self.target = Path(target)
        self.replace = replace
        self.tmp = self.target.with_name(f"{self.target.name}.tmp{os.getpid()}")

    def __enter__(self) -> Path:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.target.exists() and self.replace:
            shutil.rmtree(self.target)
        if self.target.exists():  # another process finished first: keep its copy
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            os.replace(self.tmp, self.target)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def content_hash(data: bytes | str) -> str:
    """The project's one content hash: SHA-256 of ``data`` (UTF-8 for text), as hex."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def pixels_key(image: Any) -> str:
    """The key of a decoded (PIL) image: its mode, size and pixels."""
    return "pixels:" + content_hash(f"{image.mode}:{image.size}".encode() + image.tobytes())


def file_key(path: str | os.PathLike) -> str:
    """The key of an image file: its absolute path and size (``missing:<path>`` when absent). One ``stat``, no read:
    cheap for millions of files, and a file put back as it was keeps its key, so finished work is reused."""
    full = os.path.abspath(os.fspath(path))
    try:
        return f"file:{full}:{os.stat(full).st_size}"
    except FileNotFoundError:
        return f"missing:{full}"


def image_key(image: Any) -> str:
    """The identity of an image, the one rule of mining, judge pairs and evaluation caches: ``-`` for none (``None``
    or ``""``); encoded bytes (raw, or a ``{"bytes", "path"}`` cell as ``datasets``' ``Image(decode=False)`` stores
    it) by their SHA-256; a file by :func:`file_key`; a decoded (PIL) image by :func:`pixels_key`."""
    if image is None or isinstance(image, str) and not image:
        return "-"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "sha256:" + content_hash(bytes(image))
    if isinstance(image, Mapping):
        if image.get("bytes") is not None:
            return image_key(image["bytes"])
        return file_key(image["path"]) if image.get("path") else "-"
    if isinstance(image, (str, os.PathLike)):
        return file_key(image)
    if hasattr(image, "tobytes"):
        return pixels_key(image)
    raise TypeError(
        f"an image must be bytes, a {{'bytes', 'path'}} cell, a path, a PIL image or None, got {type(image).__name__}"
    )


def item_key(text: str, image: Any) -> str:
    """The key of an item (its text and :func:`image_key` of its image): equal keys <=> same text and same image."""
    return content_hash(f"{text}\x00{image_key(image)}")
