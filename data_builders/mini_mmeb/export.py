"""Mini-MMEB in the real MMEB file formats: JSONL + PNG with relative image paths, written and read back."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

from ..storage import content_hash


def _write_png(data: dict | None, rel_dir: str, out_dir: str, written: set[str]) -> str:
    """Write image bytes once under a content-addressed name; return the path relative to ``out_dir``."""
    if data is None:
        return ""
    raw = data["bytes"]
    rel = f"{rel_dir}/{content_hash(raw)[:20]}.png"
    if rel not in written:
        path = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(raw)
        written.add(rel)
    return rel


def _raw_rows(dataset) -> list[dict]:
    """Rows with image columns as undecoded ``{"bytes", "path"}`` dicts (no PNG decode / re-encode)."""
    return dataset.with_format("arrow")[:].to_pylist()


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def export_mmeb_files(dataset_dict: Mapping, out_dir: str, with_scenes: bool = False) -> dict[str, list[str]]:
    """Write MMEB-format files: one JSONL per dataset, PNG images under ``out_dir/images/``.

    A split with MMEB-train columns (``qry``...) goes to ``out_dir/train/<dataset>.jsonl`` with columns ``qry``,
    ``qry_image_path``, ``pos_text``, ``pos_image_path``; a split with eval columns goes to
    ``out_dir/eval/<dataset>.jsonl`` with ``qry_text``, ``qry_img_path``, ``tgt_text``, ``tgt_img_path``. Image
    paths are relative to ``out_dir``; ``""`` means no image. ``with_scenes`` adds the scene JSON columns.
    Accepts the ``"mmeb"`` DatasetDict or the whole ``build_mini_mmeb`` result. Returns the files per split.
    """
    if "mmeb" in dataset_dict:
        dataset_dict = dataset_dict["mmeb"]
    written: set[str] = set()
    files: dict[str, list[str]] = {}
    for split, ds in dataset_dict.items():
        train_like = "qry" in ds.column_names
        kind = "train" if train_like else "eval"
        by_name: dict[str, list[dict]] = {}
        for row in _raw_rows(ds):
            img_dir = f"images/{kind}/{_safe(row['dataset'])}"
            if train_like:
                rec = {
                    "qry": row["qry"],
                    "qry_image_path": _write_png(row["qry_image"], img_dir, out_dir, written),
                    "pos_text": row["pos_text"],
                    "pos_image_path": _write_png(row["pos_image"], img_dir, out_dir, written),
                }
                extra = ("qry_scene", "pos_scene")
            else:
                rec = {
                    "qry_text": row["qry_text"],
                    "qry_img_path": _write_png(row["qry_image"], img_dir, out_dir, written),
                    "tgt_text": row["tgt_text"],
                    "tgt_img_path": [_write_png(i, img_dir, out_dir, written) for i in row["tgt_image"]],
                }
                extra = ("qry_scene", "tgt_scene", "tgt_kind", "ood")
            if with_scenes:
                rec.update({k: row[k] for k in extra + ("dataset", "meta_task")})
            by_name.setdefault(row["dataset"], []).append(rec)
        files[split] = [
            _write_jsonl(os.path.join(out_dir, kind, f"{_safe(n)}.jsonl"), recs) for n, recs in by_name.items()
        ]
    return files


def _write_jsonl(path: str, records: Iterable[Mapping]) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def export_companion_files(built: Mapping, out_dir: str) -> list[str]:
    """Write each companion set as ``out_dir/companion/<name>.jsonl`` with ``image_path`` (relative, PNG)."""
    written: set[str] = set()
    paths = []
    for name in ("caption_retrieval", "long_caption", "compositional"):
        if name not in built:
            continue
        recs = []
        for row in _raw_rows(built[name]["test"]):
            image = row.pop("image")
            recs.append({"image_path": _write_png(image, f"images/companion/{name}", out_dir, written), **row})
        paths.append(_write_jsonl(os.path.join(out_dir, "companion", f"{name}.jsonl"), recs))
    return paths


def load_mmeb_files(out_dir: str, kind: str = "eval") -> dict[str, list[dict]]:
    """Read back ``out_dir/<kind>/*.jsonl`` (kind ``train`` or ``eval``) as ``{dataset: records}``."""
    if kind not in ("train", "eval"):
        raise ValueError(f"kind must be 'train' or 'eval', got {kind!r}")
    folder = os.path.join(out_dir, kind)
    out: dict[str, list[dict]] = {}
    for fname in sorted(os.listdir(folder)):
        if fname.endswith(".jsonl"):
            with open(os.path.join(folder, fname), encoding="utf-8") as fh:
                out[fname[: -len(".jsonl")]] = [json.loads(line) for line in fh if line.strip()]
    return out
