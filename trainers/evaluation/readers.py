"""Readers for the evaluation data, in the layouts the public copies use (docs/evaluation.md).

Each reader returns one of three in-memory forms, whatever the layout on disk:

* :class:`MMEBDataset` — MMEB-eval: one query and its candidate list (ground truth first) per row.
* :class:`RetrievalSet` — image–text retrieval: images, captions and the image each caption describes
  (Flickr30K / COCO: five captions per image; ShareGPT4V / Urban1K: one long caption per image).
* :class:`CompositionalSet` — one SugarCrepe subset: (image, positive caption, negative caption) items.

Items are ``{"text": str, "image": path | PIL | None}`` as :meth:`UniMEV2Model.encode` takes them. Every error names
the dataset and the row (or file) at fault.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metrics import MMEB_TASKS, SUGARCREPE_SUBSETS, MMEBTask


IMAGE_QUERY_TEXT = "<|image_1|> Find an image caption describing the given image."
"""The instruction of an image query in the retrieval and SugarCrepe evaluations (the authors' wording)."""

Item = dict[str, Any]


@dataclass
class MMEBDataset:
    """One MMEB-style dataset: ``queries[i]`` and its ``candidates[i]`` (index 0 is the ground truth)."""

    name: str
    queries: list[Item]
    candidates: list[list[Item]]
    task: MMEBTask | None = None


@dataclass
class RetrievalSet:
    """Images and captions; ``caption_image[j]`` is the index of the image caption ``j`` describes."""

    name: str
    images: list[Any]
    captions: list[str]
    caption_image: list[int]


@dataclass
class CompositionalSet:
    """A SugarCrepe subset: per item an image, the true caption and the hard negative caption."""

    name: str
    images: list[Any]
    positives: list[str]
    negatives: list[str]


@dataclass
class DatasetSource:
    """A dataset to evaluate, read lazily so that one broken dataset does not stop the others."""

    suite: str
    name: str
    load: Callable[[], Any] = field(repr=False)
    origin: str = ""


# ----------------------------------------------------------------------------------------------- MMEB-eval


def _image_ref(value: Any, image_dir: str | None, where: str) -> Any:
    """A candidate's image: ``None`` for no image, a checked path for a relative path, PIL images as they are."""
    if value is None or (isinstance(value, str) and value == ""):
        return None
    if isinstance(value, Mapping) and "bytes" in value:  # an undecoded datasets Image cell
        from io import BytesIO

        from PIL import Image

        return (
            Image.open(BytesIO(value["bytes"])) if value["bytes"] else _image_ref(value.get("path"), image_dir, where)
        )
    if not isinstance(value, (str, os.PathLike)):
        return value
    path = os.path.join(image_dir, value) if image_dir and not os.path.isabs(value) else os.fspath(value)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: image file {path!r} does not exist")
    return path


def _column(row: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    return None


QUERY_FIELDS = ("qry_text", "qry", "qry_image", "qry_img_path")
CANDIDATE_FIELDS = ("tgt_text",)


def _require_fields(row: Mapping[str, Any], names: Sequence[str], where: str) -> None:
    """A ``ValueError`` naming the expected fields and the row's own when the row has none of ``names``."""
    if not any(name in row for name in names):
        expected = " / ".join(repr(name) for name in names)
        raise ValueError(f"{where}: no field {expected} (got {', '.join(map(str, row)) or 'no fields'})")


def mmeb_dataset(
    name: str, rows: Sequence[Mapping[str, Any]] | Any, image_dir: str | None = None, task: MMEBTask | None = None
) -> MMEBDataset:
    """An :class:`MMEBDataset` from MMEB-eval rows (``qry_text``, ``qry_img_path``, ``tgt_text`` list,
    ``tgt_img_path`` list; mini-MMEB's ``qry_image`` / ``tgt_image`` image columns too).

    Raises:
        ValueError: no rows, a row without candidates, or candidate lists of different lengths.
        FileNotFoundError: an image path that does not exist under ``image_dir``.
    """
    queries, candidates = [], []
    for index, row in enumerate(rows):
        where = f"{name} row {index}"
        _require_fields(row, QUERY_FIELDS, f"{where} query")
        _require_fields(row, CANDIDATE_FIELDS, f"{where} candidates")
        texts = row.get("tgt_text")
        if not texts:
            raise ValueError(f"{where}: no candidates (tgt_text is empty)")
        images = _column(row, "tgt_image", "tgt_img_path")
        if images is None or len(images) == 0:
            images = [None] * len(texts)
        if len(images) != len(texts):
            raise ValueError(
                f"{where}: tgt_text has {len(texts)} candidates but the candidate images list has {len(images)}"
            )
        query_image = _image_ref(_column(row, "qry_image", "qry_img_path"), image_dir, f"{where} query")
        queries.append({"text": _column(row, "qry_text", "qry") or "", "image": query_image})
        candidates.append(
            [
                {"text": text or "", "image": _image_ref(image, image_dir, f"{where} candidate {j}")}
                for j, (text, image) in enumerate(zip(texts, images))
            ]
        )
    if not queries:
        raise ValueError(f"{name}: the dataset is empty (no rows)")
    return MMEBDataset(name, queries, candidates, task)


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _load_split(path: Path, split: str = "test") -> Any:
    """A split saved with ``save_to_disk`` (a ``DatasetDict`` or a ``Dataset``)."""
    from datasets import DatasetDict, load_from_disk

    loaded = load_from_disk(str(path))
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise ValueError(f"{path}: no {split!r} split (has {sorted(loaded)})")
        return loaded[split]
    return loaded


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path} line {number}: not JSON ({error})") from error
    return rows


def mmeb_eval_sources(
    source: str,
    image_dir: str | None = None,
    tasks: Sequence[MMEBTask] = MMEB_TASKS,
    names: Sequence[str] | None = None,
) -> list[DatasetSource]:
    """The datasets of an MMEB-eval copy, each read lazily.

    ``source`` is one of the layouts (docs/evaluation.md):

    * a local clone of the dataset repository ``TIGER-Lab/MMEB-eval``: a ``README.md`` whose YAML front matter lists
      one config per subset (``<subset>/test-*.parquet``), read with ``datasets.load_dataset(source, <subset>,
      split="test")``; its images are under ``<source>/eval_images`` (the unzipped ``images.zip``) unless
      ``image_dir`` says otherwise;
    * a folder of ``<task>/`` subsets saved with ``datasets`` (``save_to_disk``), or of ``<task>/`` folders of
      ``test-*.parquet`` / ``.jsonl`` files, split ``test``;
    * a folder of ``<task>.jsonl`` files (mini-MMEB's MMEB export, ``export_mmeb_files(...)/eval``; an export root
      holding ``eval/`` is accepted and its images are relative to that root);
    * a Hub id that ``datasets.load_dataset(source, <task>, split="test")`` reads (``TIGER-Lab/MMEB-eval``).

    With a folder, the datasets are those present (known ones in MMEB order, then the rest sorted); with a Hub id,
    the 36 of ``tasks``. ``names`` keeps only those datasets (an unknown name is a ``ValueError`` listing the
    available ones). ``image_dir`` is the root of the relative image paths.
    """
    root = Path(source)
    known = {task.name: task for task in tasks}
    if (root / "eval").is_dir() and not any(root.glob("*.jsonl")):
        image_dir, root = image_dir or str(root), root / "eval"
    if root.is_dir():
        configs = _clone_configs(root)
        if configs:
            image_dir = image_dir or str(root / "eval_images")
            found: dict[str, Any] = dict.fromkeys(configs, root)
        else:
            from unime_v2.data_builders.sources import data_files

            found = {p.stem: p for p in data_files(root)}
            found.update(
                {p.name: p for p in root.iterdir() if p.is_dir() and (_is_saved_dataset(p) or data_files(p, "test"))}
            )
        if not found:
            raise FileNotFoundError(
                f"{source}: no MMEB-eval datasets (a README.md listing the subsets as configs, as the "
                "TIGER-Lab/MMEB-eval repository has; <task>/ subsets; or <task>.jsonl/.json/.csv/.parquet files)"
            )
        order = [t.name for t in tasks if t.name in found] + sorted(set(found) - set(known))
        order = _selected(order, names, source)
        if configs:
            return [_clone_source(n, root, image_dir, known.get(n)) for n in order]
        return [_mmeb_source(n, found[n], image_dir, known.get(n)) for n in order]

    from unime_v2.data_builders.sources import UnreadableSourceError, looks_local

    if looks_local(source):
        raise UnreadableSourceError(
            f"{source}: no such folder; MMEB-eval is a folder of <task>/ subsets or <task>.jsonl/.json/.csv/.parquet "
            "files, a clone of TIGER-Lab/MMEB-eval, or a Hub dataset id"
        )
    order = _selected([t.name for t in tasks], names, source, allow_unknown=True)
    return [_clone_source(n, source, image_dir, known.get(n), f"{source}:{n}") for n in order]


def _clone_configs(root: Path) -> list[str]:
    """The configs a dataset repository's ``README.md`` lists (empty when it lists none or there is no README)."""
    if not (root / "README.md").is_file():
        return []
    from datasets import get_dataset_config_names

    try:
        configs = get_dataset_config_names(str(root))
    except Exception as error:  # datasets raises its own types for a README it cannot parse
        raise ValueError(f"{root}: cannot read the subsets its README.md lists ({error})") from error
    return [] if configs == ["default"] else list(configs)


def _selected(order: list[str], names: Sequence[str] | None, source: str, allow_unknown: bool = False) -> list[str]:
    if not names:
        return order
    missing = [n for n in names if n not in order]
    if missing and not allow_unknown:
        raise ValueError(f"{source}: no MMEB-eval dataset(s) {missing}; it has {order}")
    return [n for n in order if n in names] + (missing if allow_unknown else [])


def _clone_source(
    name: str, repo: str | Path, image_dir: str | None, task: MMEBTask | None, origin: str | None = None
) -> DatasetSource:
    """A subset read with ``datasets.load_dataset(repo, name, split="test")`` (a clone or a Hub id)."""

    def load() -> MMEBDataset:
        from datasets import load_dataset

        return mmeb_dataset(name, load_dataset(str(repo), name, split="test"), image_dir, task)

    return DatasetSource("mmeb", name, load, origin or f"{repo}:{name}")


def _mmeb_source(name: str, path: Path, image_dir: str | None, task: MMEBTask | None) -> DatasetSource:
    def load() -> MMEBDataset:
        from unime_v2.data_builders.sources import read_dataset

        rows = _read_jsonl(path) if path.suffix == ".jsonl" else read_dataset(path, "test")
        return mmeb_dataset(name, rows, image_dir, task)

    return DatasetSource("mmeb", name, load, str(path))


def _task_columns(rows: Any) -> list[dict[str, Any]]:
    """The ``dataset`` / ``meta_task`` / ``ood`` cells of each row, without decoding any image."""
    if hasattr(rows, "column_names"):
        present = [c for c in ("dataset", "meta_task", "ood") if c in rows.column_names]
        return list(rows.select_columns(present)) if present else [{}] * len(rows)
    return [{k: row.get(k) for k in ("dataset", "meta_task", "ood")} for row in rows]


def mmeb_sources_from_rows(
    rows: Any, tasks: Sequence[MMEBTask] = (), image_dir: str | None = None
) -> list[DatasetSource]:
    """Sources from MMEB-eval rows that carry a ``dataset`` column (mini-MMEB's ``test`` split), in row order; a
    dataset missing from ``tasks`` takes its meta-task and IND/OOD from the rows' ``meta_task`` / ``ood`` columns."""
    by_name: dict[str, list[int]] = {}
    known = {task.name: task for task in tasks}
    for index, row in enumerate(_task_columns(rows)):
        name = str(row.get("dataset") or "all")
        by_name.setdefault(name, []).append(index)
        if name not in known and row.get("meta_task") is not None:
            known[name] = MMEBTask(name, row["meta_task"], bool(row.get("ood")))

    def loader(name: str, indices: list[int]) -> Callable[[], MMEBDataset]:
        def load() -> MMEBDataset:
            subset = rows.select(indices) if hasattr(rows, "select") else [rows[i] for i in indices]
            return mmeb_dataset(name, subset, image_dir, known.get(name))

        return load

    return [DatasetSource("mmeb", name, loader(name, idx), "rows") for name, idx in by_name.items()]


# ----------------------------------------------------------------------------------------------- retrieval


def _require(path: Path, what: str, name: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{name}: {what} {str(path)!r} does not exist")
    return path


def caption_retrieval_set(
    name: str, rows: Any, max_captions: int | None = 5, caption_column: str = "text"
) -> RetrievalSet:
    """A :class:`RetrievalSet` from rows with an ``image`` and a list of captions (Flickr30K / COCO test)."""
    images, captions, owner = [], [], []
    for index, row in enumerate(rows):
        texts = _column(row, caption_column, "captions", "caption")
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise ValueError(f"{name} row {index}: no captions")
        if row.get("image") is None:
            raise ValueError(f"{name} row {index}: no image")
        images.append(_image_ref(row["image"], None, f"{name} row {index}"))
        texts = list(texts)[:max_captions] if max_captions else list(texts)
        captions += [str(t) for t in texts]
        owner += [len(images) - 1] * len(texts)
    if not images:
        raise ValueError(f"{name}: the dataset is empty (no rows)")
    return RetrievalSet(name, images, captions, owner)


def read_caption_folder(path: str | Path, name: str, max_captions: int | None = 5) -> RetrievalSet:
    """Flickr30K / COCO test in the authors' layout (``data/flickr30k_test``, ``data/coco_test``): a ``datasets``
    folder with split ``test``, columns ``image`` and ``text`` (a list of captions; COCO keeps the first five)."""
    from datasets import load_dataset

    path = _require(Path(path), "folder", name)
    rows = _load_split(path) if _is_saved_dataset(path) else load_dataset(str(path), split="test")
    return caption_retrieval_set(name, rows, max_captions)


def read_urban1k(root: str | Path, name: str = "Urban1K") -> RetrievalSet:
    """Urban1K (``Urban1k/{image,caption}``): ``caption/<id>.txt`` (first line) describes ``image/<id>.jpg``."""
    root = Path(root)
    caption_dir = _require(root / "caption", "caption folder", name)
    image_dir = _require(root / "image", "image folder", name)
    images, captions = [], []
    for index, caption_file in enumerate(sorted(caption_dir.glob("*.txt"))):
        image = _require(image_dir / f"{caption_file.stem}.jpg", f"image of row {index} ({caption_file.name})", name)
        lines = caption_file.read_text(encoding="utf-8").splitlines()
        if not lines or not lines[0].strip():
            raise ValueError(f"{name} row {index}: caption file {str(caption_file)!r} is empty")
        images.append(str(image))
        captions.append(lines[0].strip())
    if not images:
        raise ValueError(f"{name}: no caption files in {str(caption_dir)!r}")
    return RetrievalSet(name, images, captions, list(range(len(images))))


def read_sharegpt4v(
    json_path: str | Path, image_root: str | Path, limit: int = 1000, name: str = "ShareGPT4V"
) -> RetrievalSet:
    """ShareGPT4V-1k: the first ``limit`` records of the share-captioner JSON (``image`` relative to
    ``image_root``, the caption is the second conversation turn, newlines turned into spaces)."""
    json_path = _require(Path(json_path), "JSON file", name)
    records = json.loads(json_path.read_text(encoding="utf-8"))[:limit]
    images, captions = [], []
    for index, record in enumerate(records):
        try:
            caption = record["conversations"][1]["value"]
        except (KeyError, IndexError, TypeError) as error:
            raise ValueError(f"{name} row {index}: no caption at conversations[1].value ({error!r})") from error
        images.append(_image_ref(record.get("image", ""), str(image_root), f"{name} row {index}"))
        captions.append(caption.replace("\n", " "))
    if not images:
        raise ValueError(f"{name}: the dataset is empty (no records in {str(json_path)!r})")
    return RetrievalSet(name, images, captions, list(range(len(images))))


# ----------------------------------------------------------------------------------------------- SugarCrepe


def read_sugarcrepe(data_root: str | Path, image_root: str | Path, subset: str) -> CompositionalSet:
    """One SugarCrepe subset: ``<data_root>/<subset with _>.json`` maps ids to ``{filename, caption,
    negative_caption}``; images are ``<image_root>/<filename>`` (COCO val2017)."""
    path = _require(Path(data_root) / f"{subset.replace('-', '_')}.json", "subset file", subset)
    records = json.loads(path.read_text(encoding="utf-8"))
    items = records.values() if isinstance(records, Mapping) else records
    images, positives, negatives = [], [], []
    for index, record in enumerate(items):
        where = f"{subset} row {index}"
        if not record.get("caption") or not record.get("negative_caption"):
            raise ValueError(f"{where}: needs 'caption' and 'negative_caption'")
        images.append(_image_ref(record.get("filename") or "", str(image_root), where))
        if images[-1] is None:
            raise ValueError(f"{where}: no image filename")
        positives.append(record["caption"])
        negatives.append(record["negative_caption"])
    if not images:
        raise ValueError(f"{subset}: the dataset is empty (no records in {str(path)!r})")
    return CompositionalSet(subset, images, positives, negatives)


def retrieval_sources(data_dir: str | Path) -> list[DatasetSource]:
    """Flickr30K, COCO, ShareGPT4V and Urban1K under the authors' ``data/`` folder (docs/evaluation.md)."""
    root = Path(data_dir)
    share_root = root / "shareGPT4v" / "data"
    share_json = share_root / "shareGPT4v" / "share-captioner_coco_lcs_sam_1246k_1107.json"
    return [
        DatasetSource("retrieval", "Flickr30K", lambda: read_caption_folder(root / "flickr30k_test", "Flickr30K")),
        DatasetSource("retrieval", "COCO", lambda: read_caption_folder(root / "coco_test", "COCO")),
        DatasetSource("retrieval", "ShareGPT4V", lambda: read_sharegpt4v(share_json, share_root)),
        DatasetSource("retrieval", "Urban1K", lambda: read_urban1k(root / "Urban1k" / "Urban1k")),
    ]


def sugarcrepe_sources(data_dir: str | Path) -> list[DatasetSource]:
    """The seven SugarCrepe subsets under the authors' ``data/`` folder (``sugar-crepe/data``, ``coco2017/val2017``)."""
    root = Path(data_dir)

    def loader(subset: str) -> Callable[[], CompositionalSet]:
        return lambda: read_sugarcrepe(root / "sugar-crepe" / "data", root / "coco2017" / "val2017", subset)

    return [DatasetSource("sugarcrepe", s, loader(s)) for s in SUGARCREPE_SUBSETS]


# ----------------------------------------------------------------------------------------------- mini-MMEB


def mini_mmeb_companion_sources(built: Mapping[str, Any]) -> list[DatasetSource]:
    """Mini-MMEB's companion sets read as the public ones: ``caption_retrieval`` (five captions per image, like
    Flickr30K), ``long_caption`` (1:1, like Urban1K) and ``compositional`` (the seven SugarCrepe subsets)."""
    sources = []
    for name, column, captions in (("caption_retrieval", "captions", 5), ("long_caption", "caption", 1)):
        if name in built:
            sources.append(
                DatasetSource("retrieval", name, _caption_loader(name, built[name]["test"], column, captions))
            )
    if "compositional" in built:
        rows = built["compositional"]["test"]
        sources += [DatasetSource("sugarcrepe", s, _compositional_loader(rows, s)) for s in SUGARCREPE_SUBSETS]
    return sources


def _caption_loader(name: str, rows: Any, column: str, captions: int) -> Callable[[], RetrievalSet]:
    return lambda: caption_retrieval_set(name, rows, captions, column)


def _compositional_loader(rows: Any, subset: str) -> Callable[[], CompositionalSet]:
    def load() -> CompositionalSet:
        picked = rows.select([i for i, name in enumerate(rows["subset"]) if name == subset])
        if len(picked) == 0:
            raise ValueError(f"{subset}: the dataset is empty (no compositional rows)")
        return CompositionalSet(
            subset, list(picked["image"]), list(picked["pos_caption"]), list(picked["neg_caption"])
        )

    return load
