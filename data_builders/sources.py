"""Reading the data files people have: one reader for mining, training and evaluation (docs/mining.md, "Data").

A source is a JSON, JSONL, CSV or Parquet file, a folder of such files, a ``save_to_disk`` folder, or a Hub dataset
id. Files are read with ``datasets``' loaders (``load_dataset("json"|"csv"|"parquet", data_files=...)``), so the
result is memory-mapped like any other ``Dataset``.
"""

from __future__ import annotations

import os
from pathlib import Path

from datasets import Dataset, DatasetDict, concatenate_datasets, load_dataset, load_from_disk


FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
ACCEPTED_FORMS = (
    "a JSON, JSONL, CSV or Parquet file, a folder of such files (e.g. holding train.jsonl), "
    "a save_to_disk folder, or a Hub dataset id"
)


class UnreadableSourceError(FileNotFoundError):
    """A path that is none of :data:`ACCEPTED_FORMS`; the message names the path and the accepted forms."""


def is_saved_dataset(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``)."""
    path = Path(path)
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def data_files(folder: str | Path, split: str | None = None) -> list[Path]:
    """The readable files at the top of ``folder``, sorted; those of ``split`` only when some are named after it
    (``train.jsonl``, ``train-00000-of-00002.parquet``)."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in FILE_BUILDERS)
    if split:
        named = [p for p in files if p.stem == split or p.stem.startswith((f"{split}-", f"{split}_"))]
        files = named or files
    return files


def _builder(files: list[Path], where: str) -> str:
    builders = {FILE_BUILDERS[p.suffix.lower()] for p in files}
    if len(builders) > 1:
        raise ValueError(f"{where}: files of several formats ({sorted(p.name for p in files)}); keep one format")
    return builders.pop()


def _read_files(files: list[Path], where: str, source_column: str | None) -> Dataset:
    """``files`` as one dataset; with ``source_column`` absent from them, each file's rows get its name there."""
    builder = _builder(files, where)
    try:
        if source_column is None:
            return load_dataset(builder, data_files=[str(p) for p in files], split="train")
        parts = []
        for path in files:
            part = load_dataset(builder, data_files=[str(path)], split="train")
            if source_column not in part.column_names:
                part = part.add_column(source_column, [path.stem] * len(part))
            parts.append(part)
        return concatenate_datasets(parts)
    except (ValueError, TypeError, OSError) as error:
        raise ValueError(f"{where}: cannot read it as {builder} ({error})") from error
    except Exception as error:  # pyarrow / datasets raise their own types for a malformed file
        if type(error).__module__.startswith(("pyarrow", "datasets")):
            raise ValueError(f"{where}: cannot read it as {builder} ({error})") from error
        raise


def _split_of(loaded: Dataset | DatasetDict, split: str, where: str) -> Dataset:
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise ValueError(f"{where}: no split {split!r}; it has {sorted(loaded)}")
        return loaded[split]
    return loaded


def looks_local(source: str) -> bool:
    """A path someone meant as a local file or folder (a Hub id is ``name`` or ``owner/name``)."""
    return Path(source).suffix.lower() in FILE_BUILDERS or source.startswith((".", "/", "~")) or source.count("/") > 1


def read_dataset(source: str | Path, split: str = "train", source_column: str | None = None) -> Dataset:
    """Read ``source`` (any of :data:`ACCEPTED_FORMS`) as one ``Dataset``.

    ``split`` picks the split of a ``DatasetDict`` folder or Hub dataset, and the files named after it in a
    folder of files. ``source_column``: when the files lack that column, each file's rows get the file's name
    there (a folder of ``<dataset>.jsonl`` files, MMEB's layout). An unreadable path raises
    :class:`UnreadableSourceError` naming it and the accepted forms.
    """
    where = str(source)
    path = Path(os.path.expanduser(where))
    if path.is_file():
        if path.suffix.lower() not in FILE_BUILDERS:
            raise UnreadableSourceError(f"{where}: unknown file type {path.suffix!r}; accepted: {ACCEPTED_FORMS}")
        return _read_files([path], where, source_column)
    if path.is_dir():
        if is_saved_dataset(path):
            return _split_of(load_from_disk(str(path)), split, where)
        files = data_files(path, split)
        if not files:
            raise UnreadableSourceError(f"{where}: a folder with no data files; accepted: {ACCEPTED_FORMS}")
        return _read_files(files, where, source_column)
    if looks_local(where):
        raise UnreadableSourceError(f"{where}: no such file or folder; accepted: {ACCEPTED_FORMS}")
    try:
        return _split_of(load_dataset(where, split=split), split, where)
    except (FileNotFoundError, ConnectionError) as error:
        raise UnreadableSourceError(
            f"{where}: not found locally nor on the Hub ({error}); accepted: {ACCEPTED_FORMS}"
        ) from error
    except Exception as error:  # datasets.exceptions.DatasetNotFoundError and the Hub client's errors
        if type(error).__module__.startswith(("datasets", "huggingface_hub", "requests")):
            raise UnreadableSourceError(
                f"{where}: not found locally nor on the Hub ({error}); accepted: {ACCEPTED_FORMS}"
            ) from error
        raise


def is_user_files(source: str | Path, split: str = "train") -> bool:
    """Whether ``source`` is a JSONL, CSV or Parquet file, a folder that is not a ``save_to_disk`` folder, or a
    local-looking path that does not exist: what :func:`read_dataset` reads where a ``.json`` file may be another
    format (the authors' JSON of a mined dataset)."""
    path = Path(os.path.expanduser(str(source)))
    if path.is_file():
        return path.suffix.lower() in (".jsonl", ".csv", ".parquet")
    if path.is_dir():
        return not is_saved_dataset(path)
    return looks_local(str(source)) and Path(str(source)).suffix.lower() != ".json"
