"""Scene graphs, Pillow rendering and the reference oracle of Mini-MMEB.

A *scene graph* is a plain JSON-ready dict::

    {"background": "beige",
     "objects": [{"shape": "circle", "color": "red", "size": "small", "cell": [0, 2], "jitter": [3, -5]}, ...],
     "relations": [[0, "left of", 1], [0, "above", 2], ...]}

``cell`` is ``[row, column]`` on a 3x3 grid, ``jitter`` shifts the object inside its cell by a percentage of the
cell size (rendering variation only: no fact depends on it) and ``relations`` are derived from the cells. Rendering is
a pure function of the graph and the image size, so a graph fully determines its pixels.

A *spec* is a partial scene graph: objects carry only the attributes a text states (a class label states colour and
shape, a caption also size and position), relations are listed explicitly. The oracle compares the spec of what a
query asks for (its *target*) with the content of a candidate (an image's full graph, a crop's object, or a text's
spec) and returns the fraction of the target's facts that the candidate satisfies. It exists to measure learned
judges; it must never be used as a training signal.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from itertools import permutations
from typing import Any

from PIL import Image, ImageDraw


GRID = 3
"""The scene grid is GRID x GRID cells."""

COLOR_PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 220),
    "yellow": (240, 200, 20),
    "purple": (148, 60, 189),
    "orange": (255, 127, 14),
    "cyan": (23, 190, 207),
    "brown": (140, 86, 45),
    "pink": (247, 120, 190),
    "black": (20, 20, 20),
}
"""Every colour an object may take; a config picks a subset."""

SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross", "hexagon")
"""Every shape the renderer can draw; a config picks a subset."""

SIZE_SCALES: dict[str, float] = {"small": 0.42, "medium": 0.62, "large": 0.82}
"""Object extent as a fraction of the cell side (large + jitter still stays inside its cell)."""

BACKGROUND_PALETTE: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "light gray": (212, 212, 212),
    "beige": (236, 224, 196),
    "pale blue": (214, 230, 246),
    "pale green": (218, 238, 214),
}
"""Light backgrounds, so that every object colour stays visible."""

ATTRIBUTES: tuple[str, ...] = ("shape", "color", "size", "cell")
"""Object attributes that are facts (``jitter`` is not one)."""

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
INVERSE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
MAX_JITTER = 8
"""Jitter bound, in percent of the cell side."""

_POSITION_NAMES = {
    (0, 0): "top left",
    (0, 1): "top",
    (0, 2): "top right",
    (1, 0): "left",
    (1, 1): "center",
    (1, 2): "right",
    (2, 0): "bottom left",
    (2, 1): "bottom",
    (2, 2): "bottom right",
}


# ----------------------------------------------------------------------------------------------- graph helpers


def make_object(shape: str, color: str, size: str, cell: Sequence[int], jitter: Sequence[int] = (0, 0)) -> dict:
    """One object of a scene graph (lists, not tuples, so a JSON round trip gives an equal dict)."""
    return {
        "shape": shape,
        "color": color,
        "size": size,
        "cell": [int(cell[0]), int(cell[1])],
        "jitter": [int(jitter[0]), int(jitter[1])],
    }


def make_scene(background: str, objects: Iterable[dict]) -> dict:
    """A full scene graph with its relations derived from the cells."""
    objs = [dict(o) for o in objects]
    return {"background": background, "objects": objs, "relations": derive_relations(objs)}


def derive_relations(objects: Sequence[Mapping]) -> list[list]:
    """All "left of" and "above" facts between objects that have cells (the inverses are implied)."""
    rels: list[list] = []
    for i, a in enumerate(objects):
        for j, b in enumerate(objects):
            if i != j and "cell" in a and "cell" in b:
                if a["cell"][1] < b["cell"][1]:
                    rels.append([i, "left of", j])
                if a["cell"][0] < b["cell"][0]:
                    rels.append([i, "above", j])
    return rels


def relation_holds(cell_a: Sequence[int], relation: str, cell_b: Sequence[int]) -> bool:
    """Whether ``a <relation> b`` is true for two grid cells."""
    if relation == "left of":
        return cell_a[1] < cell_b[1]
    if relation == "right of":
        return cell_a[1] > cell_b[1]
    if relation == "above":
        return cell_a[0] < cell_b[0]
    if relation == "below":
        return cell_a[0] > cell_b[0]
    raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")


def position_name(cell: Sequence[int]) -> str:
    """Human name of a grid cell ("top left", "center", ...)."""
    return _POSITION_NAMES[(int(cell[0]), int(cell[1]))]


def position_phrase(cell: Sequence[int]) -> str:
    """Prepositional phrase for a cell: "at the top left", "in the center", "on the left"."""
    name = position_name(cell)
    if name == "center":
        return "in the center"
    if name in ("left", "right"):
        return f"on the {name}"
    return f"at the {name}"


def describe(obj: Mapping, attrs: Sequence[str] = ("size", "color", "shape")) -> str:
    """Noun phrase for an object from the attributes it has, in fixed order: "small red circle"."""
    words = [str(obj[a]) for a in ("size", "color", "shape") if a in attrs and a in obj]
    text = " ".join(words)
    if "cell" in attrs and "cell" in obj:
        text += " " + position_phrase(obj["cell"])
    return text


def project(obj: Mapping, attrs: Sequence[str]) -> dict:
    """The object restricted to the given attributes (a spec object)."""
    return {a: (list(obj[a]) if a == "cell" else obj[a]) for a in attrs if a in obj}


def _fact_tuple(obj: Mapping) -> tuple:
    cell = obj.get("cell")
    return (
        obj.get("shape", ""),
        obj.get("color", ""),
        obj.get("size", ""),
        (cell[0], cell[1]) if cell is not None else (-1, -1),
    )


def spec_key(spec: Mapping) -> str:
    """Canonical content key of a spec or scene: order-free, jitter-free; equal keys mean equal facts.

    Listed relations count only for specs without cells (texts); with cells they follow from the objects.
    """
    objects = spec.get("objects", [])
    facts = [_fact_tuple(o) for o in objects]
    rels: list = []
    if spec.get("relations") and not any("cell" in o for o in objects):
        rels = sorted((facts[i], r, facts[j]) for i, r, j in spec["relations"])
    return repr((spec.get("background"), sorted(facts), rels))


def free_cells(scene: Mapping) -> list[tuple[int, int]]:
    """Grid cells no object occupies, in reading order."""
    used = {tuple(o["cell"]) for o in scene["objects"]}
    return [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in used]


def to_json(obj: Any) -> str:
    """Compact, key-sorted JSON (stable across runs, small on disk)."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


# ----------------------------------------------------------------------------------------------- edits
# Each edit returns a new graph (the input is never mutated) plus a dict that records what changed; eval candidates
# store that record so tests (and users) can check that a distractor differs exactly as its kind claims.


def _copy_objects(spec: Mapping) -> list[dict]:
    return [{k: (list(v) if isinstance(v, list) else v) for k, v in o.items()} for o in spec["objects"]]


def _rebuild(spec: Mapping, objects: list[dict]) -> dict:
    out = {k: v for k, v in spec.items() if k not in ("objects", "relations")}
    out["objects"] = objects
    if any("cell" in o for o in objects):
        out["relations"] = derive_relations(objects)
    elif "relations" in spec:
        out["relations"] = [list(r) for r in spec["relations"]]
    return out


def replace_attribute(spec: Mapping, index: int, attr: str, value: Any) -> tuple[dict, dict]:
    """Set one attribute of one object (a SugarCrepe "replace")."""
    objects = _copy_objects(spec)
    old = objects[index][attr]
    objects[index][attr] = list(value) if attr == "cell" else value
    edit = {"type": "replace_attribute", "object": index, "attribute": attr, "from": old, "to": objects[index][attr]}
    return _rebuild(spec, objects), edit


def swap_attributes(spec: Mapping, i: int, j: int, attr: str) -> tuple[dict, dict]:
    """Exchange one attribute between two objects (a SugarCrepe "swap")."""
    objects = _copy_objects(spec)
    objects[i][attr], objects[j][attr] = objects[j][attr], objects[i][attr]
    return _rebuild(spec, objects), {"type": "swap_attributes", "objects": [i, j], "attribute": attr}


def add_object(spec: Mapping, obj: Mapping) -> tuple[dict, dict]:
    """Append one object (a SugarCrepe "add"); it gets the last index."""
    objects = _copy_objects(spec) + [dict(obj)]
    return _rebuild(spec, objects), {"type": "add_object", "object": len(objects) - 1}


def remove_object(spec: Mapping, index: int) -> tuple[dict, dict]:
    """Drop one object; relations are re-derived (or re-indexed for text specs)."""
    objects = _copy_objects(spec)
    del objects[index]
    out = _rebuild({k: v for k, v in spec.items() if k != "relations"}, objects)
    if not any("cell" in o for o in objects) and "relations" in spec:
        out["relations"] = [
            [a - (a > index), r, b - (b > index)] for a, r, b in spec["relations"] if index not in (a, b)
        ]
    return out, {"type": "remove_object", "object": index}


# ----------------------------------------------------------------------------------------------- rendering


def _shape_points(shape: str, x: float, y: float, h: float) -> list[tuple[float, float]]:
    """Polygon of a polygonal shape centred at (x, y) with half-extent h."""
    if shape == "triangle":
        return [(x, y - h), (x + h, y + 0.8 * h), (x - h, y + 0.8 * h)]
    if shape == "diamond":
        return [(x, y - h), (x + h, y), (x, y + h), (x - h, y)]
    if shape == "hexagon":
        return [
            (x - h, y),
            (x - h / 2, y - 0.87 * h),
            (x + h / 2, y - 0.87 * h),
            (x + h, y),
            (x + h / 2, y + 0.87 * h),
            (x - h / 2, y + 0.87 * h),
        ]
    if shape == "star":
        pts = []
        for k in range(10):
            r = h if k % 2 == 0 else 0.45 * h
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((x + r * math.cos(a), y + r * math.sin(a)))
        return pts
    raise ValueError(f"shape must be one of {SHAPE_NAMES}, got {shape!r}")


def _draw_object(draw: ImageDraw.ImageDraw, obj: Mapping, cell_px: float) -> None:
    """Draw one object in its cell; geometry scales with the cell so any image size gives the same layout."""
    row, col = obj["cell"]
    dx, dy = obj.get("jitter", (0, 0))
    x = (col + 0.5 + dx / 100.0) * cell_px
    y = (row + 0.5 + dy / 100.0) * cell_px
    h = SIZE_SCALES[obj["size"]] * cell_px / 2.0
    fill = COLOR_PALETTE[obj["color"]]
    shape = obj["shape"]
    if shape == "circle":
        draw.ellipse([x - h, y - h, x + h, y + h], fill=fill)
    elif shape == "square":
        s = 0.85 * h
        draw.rectangle([x - s, y - s, x + s, y + s], fill=fill)
    elif shape == "cross":
        t = 0.36 * h
        draw.rectangle([x - h, y - t, x + h, y + t], fill=fill)
        draw.rectangle([x - t, y - h, x + t, y + h], fill=fill)
    else:
        draw.polygon(_shape_points(shape, x, y, h), fill=fill)


def render_scene(scene: Mapping, image_size: int) -> Image.Image:
    """Render a full scene graph to an RGB image of ``image_size`` x ``image_size`` pixels."""
    img = Image.new("RGB", (image_size, image_size), BACKGROUND_PALETTE[scene["background"]])
    draw = ImageDraw.Draw(img)
    cell_px = image_size / GRID
    for obj in scene["objects"]:
        _draw_object(draw, obj, cell_px)
    return img


def crop_box(cell: Sequence[int], image_size: int) -> tuple[int, int, int, int]:
    """Pixel box of a grid cell (the region a grounding crop shows)."""
    cell_px = image_size / GRID
    r, c = cell
    return (round(c * cell_px), round(r * cell_px), round((c + 1) * cell_px), round((r + 1) * cell_px))


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_bytes(img: Image.Image) -> bytes:
    """Lossless, deterministic 8-bit RGB PNG (no row filter, zlib level 6).

    Why not ``Image.save``: Pillow's encoder costs ~0.5 ms per tiny image whatever the compression level; writing
    the three chunks directly is ~5x faster and smaller on these flat-colour images, and decodes identically.
    """
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    width, height = rgb.size
    raw, stride = rgb.tobytes(), width * 3
    scanlines = b"".join(b"\x00" + raw[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(scanlines, 6))
        + _png_chunk(b"IEND", b"")
    )


def render_key(scene: Mapping) -> tuple:
    """Hashable identity of a scene's pixels (background + every object with its jitter)."""
    return (
        scene["background"],
        tuple(
            (
                o["shape"],
                o["color"],
                o["size"],
                o["cell"][0],
                o["cell"][1],
                o.get("jitter", (0, 0))[0],
                o.get("jitter", (0, 0))[1],
            )
            for o in scene["objects"]
        ),
    )


class SceneRenderer:
    """Renders scenes and object crops once and caches their PNG bytes by graph.

    Why: the same scene is the positive of one row and a random candidate of many others, and a grounding image
    yields several crops; caching keeps generation time linear in the number of *distinct* images.
    """

    def __init__(self, image_size: int, crop_size: int | None = None) -> None:
        self.image_size = image_size
        self.crop_size = crop_size or image_size // 2
        self._images: dict[tuple, Image.Image] = {}
        self._png: dict[tuple, bytes] = {}

    def _image(self, scene: Mapping, key: tuple) -> Image.Image:
        img = self._images.get(key)
        if img is None:
            img = render_scene(scene, self.image_size)
            self._images[key] = img
        return img

    def scene_png(self, scene: Mapping) -> bytes:
        """PNG bytes of a full scene."""
        key = render_key(scene)
        data = self._png.get(key)
        if data is None:
            data = png_bytes(self._image(scene, key))
            self._png[key] = data
        return data

    def crop_png(self, scene: Mapping, index: int) -> bytes:
        """PNG bytes of the cell that holds object ``index``, resized to ``crop_size``."""
        key = render_key(scene)
        crop_key = (key, index)
        data = self._png.get(crop_key)
        if data is None:
            region = self._image(scene, key).crop(crop_box(scene["objects"][index]["cell"], self.image_size))
            data = png_bytes(region.resize((self.crop_size, self.crop_size), Image.Resampling.BILINEAR))
            self._png[crop_key] = data
        return data

    def release_images(self) -> None:
        """Drop decoded images (keep PNG bytes) to bound memory between tasks."""
        self._images.clear()


# ----------------------------------------------------------------------------------------------- oracle


def _relation_satisfied(cand: Mapping, ci: int, relation: str, cj: int) -> bool:
    """Whether candidate objects ci, cj stand in ``relation`` (from cells, else from listed relations)."""
    a, b = cand["objects"][ci], cand["objects"][cj]
    if "cell" in a and "cell" in b:
        return relation_holds(a["cell"], relation, b["cell"])
    listed = cand.get("relations") or ()
    inverse = INVERSE_RELATION[relation]
    return any((x == ci and r == relation and y == cj) or (x == cj and r == inverse and y == ci) for x, r, y in listed)


def _alignments(n_target: int, n_cand: int) -> Iterable[list[tuple[int, int]]]:
    """Every injective pairing of target objects with candidate objects (at most 4P3 = 24 here)."""
    if n_cand >= n_target:
        for perm in permutations(range(n_cand), n_target):
            yield list(zip(range(n_target), perm))
    else:
        for perm in permutations(range(n_target), n_cand):
            yield list(zip(perm, range(n_cand)))


def match_score(target: Mapping, cand: Mapping, penalize_extra: bool = True) -> float:
    """Fraction of the target's facts the candidate satisfies, in [0, 1].

    Facts: every attribute stated for every target object, every target relation and the background if stated.
    Target and candidate objects are paired by the best injective alignment. With ``penalize_extra`` each candidate
    object beyond the target's count adds one object's worth of unmet facts, so "an object added" scores below 1.
    A score of exactly 1.0 means the candidate meets the query entirely (only the ground truth, by construction).
    """
    t_objs, c_objs = target.get("objects", []), cand.get("objects", [])
    t_facts = [[(a, o[a]) for a in ATTRIBUTES if a in o] for o in t_objs]
    n_attr = sum(len(f) for f in t_facts)
    rels = target.get("relations") or []
    background = target.get("background")
    denom = float(n_attr + len(rels) + (1 if background is not None else 0))
    if penalize_extra and len(c_objs) > len(t_objs):
        denom += (len(c_objs) - len(t_objs)) * (n_attr / len(t_objs) if t_objs else 1.0)
    if denom == 0:
        return 1.0
    hit = [[sum(1 for a, v in facts if c.get(a) == v) for c in c_objs] for facts in t_facts]
    best = 0
    for pairs in _alignments(len(t_objs), len(c_objs)):
        hits = sum(hit[ti][ci] for ti, ci in pairs)
        if rels:
            mapping = dict(pairs)
            hits += sum(
                1
                for i, r, j in rels
                if i in mapping and j in mapping and _relation_satisfied(cand, mapping[i], r, mapping[j])
            )
        best = max(best, hits)
    if background is not None and cand.get("background") == background:
        best += 1
    return best / denom


def _load(value: Any) -> dict:
    """A scene column value: JSON string or already-parsed dict."""
    if isinstance(value, str):
        return json.loads(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise ValueError(f"scene must be a JSON string or a mapping, got {type(value).__name__}")


def candidate_content(candidate_item: Any) -> dict:
    """The content record of a candidate: from a train row (``pos_scene``), an eval candidate (``scene`` or
    ``tgt_scene``), or the JSON string / dict itself."""
    if isinstance(candidate_item, Mapping):
        for key in ("pos_scene", "scene", "tgt_scene"):
            if key in candidate_item and not isinstance(candidate_item[key], (list, tuple)):
                return _load(candidate_item[key])
        if "modality" in candidate_item and "spec" in candidate_item:
            return dict(candidate_item)
    elif isinstance(candidate_item, str):
        return _load(candidate_item)
    raise ValueError(
        "candidate_item must carry 'pos_scene', 'scene' or 'tgt_scene' (a JSON string), "
        f"or be such a string; got {type(candidate_item).__name__}"
    )


def query_content(query_record: Any) -> dict:
    """The query record of a train or eval row (its ``qry_scene``), or that JSON string / dict itself."""
    if isinstance(query_record, Mapping) and "qry_scene" in query_record:
        return _load(query_record["qry_scene"])
    if isinstance(query_record, Mapping) and "target" in query_record:
        return dict(query_record)
    if isinstance(query_record, str):
        return _load(query_record)
    raise ValueError("query_record must carry 'qry_scene' (a JSON string) or be such a string")


def oracle_score(query_record: Any, candidate_item: Any) -> float:
    """Reference match score in [0, 1]: how far ``candidate_item`` meets what ``query_record`` asks.

    ``query_record`` is a train or eval row (or its ``qry_scene``); ``candidate_item`` is a train row (its
    ``pos_scene`` is used), an eval candidate ``{"scene": tgt_scene[k]}``, or a content JSON string. Works for any
    pair of the same task, also across records. A candidate of the wrong modality (a text where an image is asked)
    scores 0. For measuring judges only: never a training signal.
    """
    query = query_content(query_record)
    cand = candidate_content(candidate_item)
    if cand.get("modality") != query["target_modality"]:
        return 0.0
    return match_score(query["target"], cand["spec"])
