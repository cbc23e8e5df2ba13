"""Task generators of Mini-MMEB: MMEB-style queries, positives, hard distractors and random candidates.

Every task turns a random scene into one *example* (query text with its instruction, optional query image, the
positive, and the query record the oracle needs), proposes SugarCrepe-like hard distractors for it, and draws random
candidates of its own target type. Texts follow MMEB-train exactly: the instruction is inside the text and an item
with an image starts with ``<|image_1|>\\n``. Images are not rendered here: items carry an image *reference*
(``("scene", graph)`` or ``("crop", graph, object_index)``) that the builder renders once through a cache.

Thirteen tasks, four meta-tasks; in-distribution (IND) tasks have train and test data, out-of-distribution (OOD)
tasks are test-only and use held-out colour x shape combinations and instruction wordings never seen in training.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .scenes import (
    GRID,
    MAX_JITTER,
    RELATIONS,
    add_object,
    describe,
    free_cells,
    make_object,
    make_scene,
    match_score,
    position_name,
    position_phrase,
    project,
    relation_holds,
    remove_object,
    replace_attribute,
    spec_key,
    swap_attributes,
    to_json,
)


IMAGE_TARGET_TEXT = "<|image_1|>\nRepresent the given image.\n"
CROP_TARGET_TEXT = "<|image_1|>\nRepresent the given cropped image of the object.\n"

SCA = ("size", "color", "shape")
"""Attributes of an object description ("small red circle")."""
CS = ("color", "shape")
"""Attributes of a category name ("red circle")."""
SCAC = ("size", "color", "shape", "cell")
"""Attributes of a positional caption ("a small red circle at the top left")."""

META_TASKS = ("classification", "vqa", "retrieval", "grounding")

Pair = tuple[str, str]
SceneImage = tuple  # ("scene", graph) | ("crop", graph, object_index)


# ----------------------------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class Vocab:
    """The attribute values in use and the colour x shape combinations held out of training."""

    colors: tuple[str, ...]
    shapes: tuple[str, ...]
    sizes: tuple[str, ...]
    backgrounds: tuple[str, ...]
    heldout: tuple[Pair, ...]
    all_combos: tuple[Pair, ...] = field(init=False)
    seen_combos: tuple[Pair, ...] = field(init=False)

    def __post_init__(self) -> None:
        combos = tuple((c, s) for c in self.colors for s in self.shapes)
        held = set(self.heldout)
        object.__setattr__(self, "all_combos", combos)
        object.__setattr__(self, "seen_combos", tuple(p for p in combos if p not in held))

    def combos(self, ood: bool) -> tuple[Pair, ...]:
        """Combinations a task may use: all of them for OOD tasks, only the training ones otherwise."""
        return self.all_combos if ood else self.seen_combos


def choose_heldout(colors: Sequence[str], shapes: Sequence[str], fraction: float, rng: random.Random) -> list[Pair]:
    """Pick about ``fraction`` of the colour x shape combinations to hold out of training.

    Why the constraint: every colour and every shape must keep at least two seen combinations, so an OOD item is an
    unseen *combination* of individually familiar attributes (compositional generalisation), not an unseen word.
    """
    combos = [(c, s) for c in colors for s in shapes]
    rng.shuffle(combos)
    target = max(1, round(fraction * len(combos)))
    held: list[Pair] = []
    for c, s in combos:
        if len(held) == target:
            break
        seen_c = sum(1 for x in shapes if (c, x) not in held) - 1
        seen_s = sum(1 for x in colors if (x, s) not in held) - 1
        if seen_c >= 2 and seen_s >= 2:
            held.append((c, s))
    return sorted(held)


# ----------------------------------------------------------------------------------------------- items


@dataclass
class SceneItem:
    """A query-side or candidate-side item: its text, image reference, oracle content and dedupe key."""

    text: str
    image: SceneImage | None
    content: dict
    key: str
    _json: str | None = None

    def content_json(self, edit: dict | None = None) -> str:
        """The JSON stored in ``pos_scene`` / ``tgt_scene`` (with the edit record of a hard distractor)."""
        if edit is not None:
            return to_json({**self.content, "edit": edit})
        if self._json is None:
            self._json = to_json(self.content)
        return self._json


@dataclass
class Example:
    """One query with its positive; ``meta`` keeps what hard distractors are derived from."""

    qry_text: str
    qry_image: dict | None
    query: dict
    positive: SceneItem
    meta: dict


Candidate = tuple[str, SceneItem, "dict | None"]
"""(kind, item, edit record) — kind is what ``tgt_kind`` stores."""

ONE_EDIT_KINDS = ("replace_attribute", "swap_attributes", "add_object", "remove_object")
"""``tgt_kind`` values of the one-edit hard distractors: the ground truth with one fact changed (docs/mini_mmeb.md)."""


def _article(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def join_phrases(parts: Sequence[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    if len(parts) <= 2:
        return " and ".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def label_text(spec: dict, attrs: Sequence[str]) -> str:
    """Category label of a spec; objects sorted so that equal sets give equal labels."""
    return join_phrases(sorted(describe(o, attrs) for o in spec["objects"]))


def caption_text(spec: dict) -> str:
    """Positional caption in reading order: "a small red circle at the top left and a large blue star ..."."""
    objs = sorted(spec["objects"], key=lambda o: tuple(o["cell"]))
    return join_phrases([_article(describe(o, SCAC)) for o in objs])


def text_item(text: str, spec: dict) -> SceneItem:
    """A text candidate; texts are canonical functions of their spec, so the text is the dedupe key."""
    return SceneItem(text, None, {"modality": "text", "spec": spec}, text)


def image_item(scene: dict) -> SceneItem:
    """A full-image candidate (MMEB's image target text)."""
    return SceneItem(IMAGE_TARGET_TEXT, ("scene", scene), {"modality": "image", "spec": scene}, spec_key(scene))


def crop_item(scene: dict, index: int) -> SceneItem:
    """A grounding crop: the cell of object ``index``; what it shows is that object on the background."""
    spec = {"background": scene["background"], "objects": [project(scene["objects"][index], SCA)]}
    return SceneItem(CROP_TARGET_TEXT, ("crop", scene, index), {"modality": "crop", "spec": spec}, spec_key(spec))


# ----------------------------------------------------------------------------------------------- sampling


def _jitter(rng: random.Random) -> list[int]:
    return [rng.randint(-MAX_JITTER, MAX_JITTER), rng.randint(-MAX_JITTER, MAX_JITTER)]


def _random_cells(rng: random.Random, n: int) -> list[tuple[int, int]]:
    return [divmod(k, GRID) for k in rng.sample(range(GRID * GRID), n)]


def sample_scene(
    rng: random.Random, vocab: Vocab, n: int, ood: bool = False, require_heldout: bool = False
) -> tuple[dict, int]:
    """A scene of ``n`` objects with distinct colour-shape pairs in distinct cells, objects in reading order.

    Returns the scene and the index of its "focus" object: the held-out object when ``require_heldout`` (OOD
    queries are about an unseen combination), a random object otherwise.
    """
    combos = vocab.combos(ood or require_heldout)
    if require_heldout:
        first = rng.choice(vocab.heldout)
        pairs = [first] + rng.sample([p for p in combos if p != first], n - 1)
    else:
        pairs = rng.sample(combos, n)
    cells = _random_cells(rng, n)
    objs = [make_object(s, c, rng.choice(vocab.sizes), cell, _jitter(rng)) for (c, s), cell in zip(pairs, cells)]
    focus_obj = objs[0] if require_heldout else objs[rng.randrange(n)]
    objs.sort(key=lambda o: tuple(o["cell"]))
    return make_scene(rng.choice(vocab.backgrounds), objs), objs.index(focus_obj)


def _pairs_in(spec: dict) -> set[Pair]:
    return {(o["color"], o["shape"]) for o in spec["objects"] if "color" in o and "shape" in o}


def _other_value(rng: random.Random, vocab: Vocab, spec: dict, index: int, attr: str, allowed: frozenset[Pair]) -> Any:
    """A different value for one attribute that keeps the object's colour-shape pair allowed, or None."""
    obj = spec["objects"][index]
    if attr == "color":
        options: list[Any] = [c for c in vocab.colors if c != obj["color"] and (c, obj["shape"]) in allowed]
    elif attr == "shape":
        options = [s for s in vocab.shapes if s != obj["shape"] and (obj["color"], s) in allowed]
    elif attr == "size":
        options = [z for z in vocab.sizes if z != obj["size"]]
    else:
        options = [list(c) for c in free_cells(spec)]
    return rng.choice(options) if options else None


# ----------------------------------------------------------------------------------------------- distractors


def replace_distractors(
    spec: dict, attrs: Sequence[str], per_attr: int, rng: random.Random, vocab: Vocab, allowed: frozenset[Pair]
) -> list[tuple[str, dict, dict]]:
    """One attribute of one object replaced, ``per_attr`` tries per attribute."""
    out = []
    for attr in attrs:
        used: set[str] = set()
        for _ in range(per_attr):
            index = rng.randrange(len(spec["objects"]))
            value = _other_value(rng, vocab, spec, index, attr, allowed)
            if value is None or f"{index}:{value}" in used:
                continue
            used.add(f"{index}:{value}")
            new, edit = replace_attribute(spec, index, attr, value)
            out.append(("replace_attribute", new, edit))
    return out


def swap_distractors(
    spec: dict, attrs: Sequence[str], rng: random.Random, allowed: frozenset[Pair]
) -> list[tuple[str, dict, dict]]:
    """One attribute exchanged between two objects that differ in it (attribute-binding errors)."""
    out = []
    objs = spec["objects"]
    for attr in attrs:
        pairs = [(i, j) for i in range(len(objs)) for j in range(i + 1, len(objs)) if objs[i][attr] != objs[j][attr]]
        if not pairs:
            continue
        i, j = rng.choice(pairs)
        new, edit = swap_attributes(spec, i, j, attr)
        if _pairs_in(new) <= allowed:
            out.append(("swap_attributes", new, edit))
    return out


def new_object(
    rng: random.Random, vocab: Vocab, spec: dict, attrs: Sequence[str], allowed: Sequence[Pair], with_jitter: bool
) -> dict | None:
    """A random object whose colour-shape pair is not in the spec yet (in a free cell when cells matter)."""
    present = _pairs_in(spec)
    pairs = [p for p in allowed if p not in present]
    cells = free_cells(spec) if "cell" in attrs else [(0, 0)]
    if not pairs or not cells:
        return None
    color, shape = rng.choice(pairs)
    obj = make_object(
        shape, color, rng.choice(vocab.sizes), rng.choice(cells), _jitter(rng) if with_jitter else (0, 0)
    )
    return obj if with_jitter else project(obj, attrs)


def add_distractor(
    spec: dict, attrs: Sequence[str], rng: random.Random, vocab: Vocab, allowed: Sequence[Pair], with_jitter: bool
) -> list[tuple[str, dict, dict]]:
    """The spec with one more object (SugarCrepe "add")."""
    obj = new_object(rng, vocab, spec, attrs, allowed, with_jitter)
    if obj is None:
        return []
    new, edit = add_object(spec, obj)
    return [("add_object", new, edit)]


def remove_distractor(spec: dict, rng: random.Random) -> list[tuple[str, dict, dict]]:
    """The spec with one object fewer (only for multi-object specs)."""
    if len(spec["objects"]) < 2:
        return []
    new, edit = remove_object(spec, rng.randrange(len(spec["objects"])))
    return [("remove_object", new, edit)]


def compositional_distractors(
    spec: dict, attrs: Sequence[str], rng: random.Random, vocab: Vocab, ood: bool, with_jitter: bool, per_attr: int = 1
) -> list[tuple[str, dict, dict]]:
    """Replace, swap, add and remove distractors of a multi-object spec or scene."""
    allowed = frozenset(vocab.combos(ood))
    out = replace_distractors(spec, attrs, per_attr, rng, vocab, allowed)
    out += swap_distractors(spec, attrs, rng, allowed)
    out += add_distractor(spec, attrs, rng, vocab, vocab.combos(ood), with_jitter)
    out += remove_distractor(spec, rng)
    return out


# ----------------------------------------------------------------------------------------------- tasks


class MiniTask:
    """Base class: a named MMEB-style task with its meta-task, OOD flag and target modality."""

    name: str = ""
    meta_task: str = ""
    target_modality: str = "text"

    def __init__(self, name: str, ood: bool, instruction: str) -> None:
        self.name, self.ood, self.instruction = name, ood, instruction

    def query_record(self, scene: dict | None, query: dict | None, target: dict) -> dict:
        """What ``qry_scene`` stores: enough for the oracle to score any candidate of this task."""
        modality = "text" if scene is None else ("image" if query is None else "image+text")
        return {
            "task": self.name,
            "meta_task": self.meta_task,
            "query_modality": modality,
            "scene": scene,
            "query": query,
            "target": target,
            "target_modality": self.target_modality,
        }

    def allowed(self, vocab: Vocab) -> frozenset[Pair]:
        """Colour-shape pairs this task's items may use."""
        return frozenset(vocab.combos(self.ood))

    def sample(self, rng: random.Random, vocab: Vocab) -> Example:
        """Draw one example."""
        raise NotImplementedError

    def hard_negatives(self, ex: Example, rng: random.Random, vocab: Vocab) -> list[Candidate]:
        """Hard distractors of one example, hardest kinds first."""
        raise NotImplementedError

    def random_item(self, rng: random.Random, vocab: Vocab) -> SceneItem:
        """One random candidate of this task's target type."""
        raise NotImplementedError


def _random_object_spec(rng: random.Random, vocab: Vocab, ood: bool) -> dict:
    color, shape = rng.choice(vocab.combos(ood))
    return {"objects": [{"size": rng.choice(vocab.sizes), "color": color, "shape": shape}]}


class ObjectClassification(MiniTask):
    """Single-object image -> "size colour shape" label (ImageNet-like; OOD: ObjectNet-like, held-out combos)."""

    meta_task = "classification"

    def sample(self, rng: random.Random, vocab: Vocab) -> Example:
        scene, _ = sample_scene(rng, vocab, 1, require_heldout=self.ood)
        spec = {"objects": [project(scene["objects"][0], SCA)]}
        item = text_item(label_text(spec, SCA), spec)
        return Example(self.instruction, scene, self.query_record(scene, None, spec), item, {"spec": spec})

    def hard_negatives(self, ex: Example, rng: random.Random, vocab: Vocab) -> list[Candidate]:
        found = replace_distractors(ex.meta["spec"], SCA, 2, rng, vocab, self.allowed(vocab))
        return [(kind, text_item(label_text(s, SCA), s), edit) for kind, s, edit in found]

    def random_item(self, rng: random.Random, vocab: Vocab) -> SceneItem:
        spec = _random_object_spec(rng, vocab, self.ood)
        return text_item(label_text(spec, SCA), spec)


class MultiLabelClassification(MiniTask):
    """2-3 object image -> "blue square and red circle" (VOC-like multi-object categories)."""

    meta_task = "classification"

    def sample(self, rng: random.Random, vocab: Vocab) -> Example:
        scene, _ = sample_scene(rng, vocab, rng.randint(2, 3), require_heldout=self.ood)
        spec = {"objects": [project(o, CS) for o in scene["objects"]]}
        item = text_item(label_text(spec, CS), spec)
        return Example(self.instruction, scene, self.query_record(scene, None, spec), item, {"spec": spec})

    def hard_negatives(self, ex: Example, rng: random.Random, vocab: Vocab) -> list[Candidate]:
        found = compositional_distractors(ex.meta["spec"], CS, rng, vocab, self.ood, False, per_attr=2)
        return [(kind, text_item(label_text(s, CS), s), edit) for kind, s, edit in found]

    def random_item(self, rng: random.Random, vocab: Vocab) -> SceneItem:
        scene, _ = sample_scene(rng, vocab, rng.randint(2, 3), ood=self.ood)
        spec = {"objects": [project(o, CS) for o in scene["objects"]]}
        return text_item(label_text(spec, CS), spec)


class _AnswerVQA(MiniTask):
    """Shared answer side of the VQA tasks: the answer names one object ("small red circle")."""

    meta_task = "vqa"
    min_objects = 1

    def question(self, rng: random.Random, scene: dict, focus: int) -> tuple[str, dict, int] | None:
        """(question text, structured question, index of the answer object), or None to resample."""
        raise NotImplementedError

    def sample(self, rng: random.Random, vocab: Vocab) -> Example:
        while True:
            scene, focus = sample_scene(rng, vocab, rng.randint(self.min_objects, 3), require_heldout=self.ood)
            asked = self.question(rng, scene, focus)
            if asked is not None:
                break
        text, structured, answer = asked
        spec = {"objects": [project(scene["objects"][answer], SCA)]}
        record = self.query_record(scene, structured, spec)
        return Example(
            self.instruction.format(q=text),
            scene,
            record,
            text_item(describe(spec["objects"][0]), spec),
            {"spec": spec, "scene": scene, "answer": answer},
        )

    def hard_negatives(self, ex: Example, rng: random.Random, vocab: Vocab) -> list[Candidate]:
        scene, answer = ex.meta["scene"], ex.meta["answer"]
        out: list[Candidate] = []
        for j, obj in enumerate(scene["objects"]):
            if j != answer:  # the answer to a different question about the same image
                spec = {"objects": [project(obj, SCA)]}
                out.append(("other_object", text_item(describe(obj), spec), {"type": "other_object", "object": j}))
        found = replace_distractors(ex.meta["spec"], SCA, 2, rng, vocab, self.allowed(vocab))
        return out + [(kind, text_item(describe(s["objects"][0]), s), edit) for kind, s, edit in found]

    def random_item(self, rng: random.Random, vocab: Vocab) -> SceneItem:
        spec = _random_object_spec(rng, vocab, self.ood)
        return text_item(describe(spec["objects"][0]), spec)


class PositionVQA(_AnswerVQA):
    """Image + "What is at the top left?" -> the object there."""

    def __init__(self, name: str, ood: bool, instruction: str, question_template: str) -> None:
        super().__init__(name, ood, instruction)
        self.template = question_template

    def question(self, rng: random.Random, scene: dict, focus: int) -> tuple[str, dict, int] | None:
        cell = scene["objects"][focus]["cell"]
        return self.template.format(pos=position_phrase(cell)), {"type": "position", "cell": cell}, focus


def unique_relation(rng: random.Random, scene: dict, focus: int | None = None) -> tuple[int, str, int] | None:
    """(subject, relation, anchor) such that the subject is the only object in that relation to the anchor."""
    objs = scene["objects"]
    triples = [
        (s, r, a)
        for s in range(len(objs))
        for a in range(len(objs))
        for r in RELATIONS
        if s != a and (focus is None or s == focus)
    ]
    rng.shuffle(triples)
    for s, r, a in triples:
        holders = [k for k in range(len(objs)) if k != a and relation_holds(objs[k]["cell"], r, objs[a]["cell"])]
        if holders == [s]:
            return s, r, a
    return None


class RelationVQA(_AnswerVQA):
    """Image + "What is left of the blue square?" -> the only object in that relation."""

    min_objects = 2

    def __init__(self, name: str, ood: bool, instruction: str, question_template: str) -> None:
        super().__init__(name, ood, instruction)
        self.template = question_template

    def question(self, rng: random.Random, scene: dict, focus: int) -> tuple[str, dict, int] | None:
        found = unique_relation(rng, scene, focus if self.ood else None)
        if found is None:
            return None
        s, r, a = found
        text = self.template.format(rel=r, anchor=describe(scene["objects"][a], CS))
        return text, {"type": "relation", "relation": r, "anchor": a}, s


class _ImageTargetRetrieval(MiniTask):
    """Shared target side of retrieval tasks whose positive is an image."""

    meta_task = "retrieval"
    target_modality = "image"

    def image_distractors(self, scene: dict, rng: random.Random, vocab: Vocab) -> list[Candidate]:
        found = compositional_distractors(scene, SCAC, rng, vocab, self.ood, True)
        return [(kind, image_item(s), edit) for kind, s, edit in found]

    def random_item(self, rng: random.Random, vocab: Vocab) -> SceneItem:
        return image_item(sample_scene(rng, vocab, rng.randint(1, 3), ood=self.ood)[0])


class TextToImage(_ImageTargetRetrieval):
    """Caption -> image (MSCOCO_t2i-like; OOD variant: held-out combos, new wording)."""

    def sample(self, rng: random.Random, vocab: Vocab) -> Example:
        scene, _ = sample_scene(rng, vocab, rng.randint(1, 3), require_heldout=self.ood)
        spec = {"objects": [project(o, SCAC) for o in scene["objects"]]}
        caption = caption_text(spec)
        record = self.query_record(None, {"caption": spec}, spec)
        return Example(self.instruction.format(caption=caption), None, record, image_item(scene), {"scene": scene})

    def hard_negatives(self, ex: Example, rng: random.Random, vocab: Vocab) -> list[Candidate]:
        return self.image_distractors(ex.meta["scene"], rng, vocab)


class ImageToText(MiniTask):
    """Image -> positional caption (MSCOCO_i2t-like)."""

    meta_task = "retrieval"

    def sample(self, rng: random.Random, vocab: Vocab) -> Example:
        scene, _ = sample_scene(rng, vocab, rng.randint(1, 3), require_heldout=self.ood)
        spec = {"objects": [project(o, SCAC) for o in scene["objects"]]}
        record = self.query_record(scene, None, spec)
        return Example(self.instruction, scene, record, text_item(caption_text(spec), spec), {"spec": spec})

    def hard_negatives(self, ex: Example, rng: random.Random, vocab: Vocab) -> list[Candidate]:
        found = compositional_distractors(ex.meta["spec"], SCAC, rng, vocab, self.ood, False)
        return [(kind, text_item(caption_text(s), s), edit) for kind, s, edit in found]

    def random_item(self, rng: random.Random, vocab: Vocab) -> SceneItem:
        scene, _ = sample_scene(rng, vocab, rng.randint(1, 3), ood=self.ood)
        spec = {"objects": [project(o, SCAC) for o in scene["objects"]]}
        return text_item(caption_text(spec), spec)


def _name(obj: dict) -> str:
    return describe(obj, CS)


def scene_edit(rng: random.Random, vocab: Vocab, scene: dict, allowed: frozenset[Pair]) -> tuple[str, dict, dict]:
    """A CIRR-like modification: (instruction, edited scene, edit record); the edited scene stays valid."""
    n = len(scene["objects"])
    kinds = ["color", "shape", "size", "cell"] + (["add"] if n < 3 else []) + (["remove"] if n > 1 else [])
    present = _pairs_in(scene)
    while True:
        kind, index = rng.choice(kinds), rng.randrange(n)
        obj = scene["objects"][index]
        if kind == "add":
            new = new_object(rng, vocab, scene, SCAC, sorted(allowed), True)
            if new is None:
                continue
            edited, edit = add_object(scene, new)
            return f"add {_article(describe(new, SCAC))}", edited, edit
        if kind == "remove":
            edited, edit = remove_object(scene, index)
            return f"remove the {_name(obj)}", edited, edit
        value = _other_value(rng, vocab, scene, index, kind, allowed)
        if value is None:
            continue
        new_pair = (value if kind == "color" else obj["color"], value if kind == "shape" else obj["shape"])
        if kind in CS and new_pair in present:
            continue  # keep colour-shape pairs unique so later references stay unambiguous
        edited, edit = replace_attribute(scene, index, kind, value)
        if kind == "shape":
            text = f"turn the {_name(obj)} into {_article(str(value))}"
        elif kind == "cell":
            text = f"move the {_name(obj)} to the {position_name(value)}"
        else:
            text = f"make the {_name(obj)} {value}"
        return text, edited, edit


class ComposedRetrieval(_ImageTargetRetrieval):
    """Reference image + modification text -> edited image (CIRR-like)."""

    def sample(self, rng: random.Random, vocab: Vocab) -> Example:
        source, _ = sample_scene(rng, vocab, rng.randint(1, 3), require_heldout=self.ood)
        text, target, edit = scene_edit(rng, vocab, source, self.allowed(vocab))
        spec = {"background": target["background"], "objects": [project(o, SCAC) for o in target["objects"]]}
        record = self.query_record(source, {"modification": edit}, spec)
        return Example(
            self.instruction.format(mod=text), source, record, image_item(target), {"scene": target, "source": source}
        )

    def hard_negatives(self, ex: Example, rng: random.Random, vocab: Vocab) -> list[Candidate]:
        reference = [("reference_image", image_item(ex.meta["source"]), {"type": "reference_image"})]
        return reference + self.image_distractors(ex.meta["scene"], rng, vocab)


class Grounding(MiniTask):
    """Image + referring expression -> the crop of the referred object (RefCOCO / pointing-like)."""

    meta_task = "grounding"
    target_modality = "crop"

    def __init__(self, name: str, ood: bool, instruction: str, expression: str) -> None:
        super().__init__(name, ood, instruction)
        if expression not in ("attribute", "position", "relation"):
            raise ValueError(f"expression must be attribute, position or relation, got {expression!r}")
        self.expression = expression

    def refer(self, rng: random.Random, scene: dict, focus: int) -> tuple[str, dict, int] | None:
        """(expression text, structured expression, referent index), or None to resample."""
        obj = scene["objects"][focus]
        if self.expression == "attribute":
            return f"the {_name(obj)}", {"type": "attribute", "color": obj["color"], "shape": obj["shape"]}, focus
        if self.expression == "position":
            return position_name(obj["cell"]), {"type": "position", "cell": obj["cell"]}, focus
        found = unique_relation(rng, scene, focus if self.ood else None)
        if found is None:
            return None
        s, r, a = found
        return (f"the shape {r} the {_name(scene['objects'][a])}", {"type": "relation", "relation": r, "anchor": a}, s)

    def sample(self, rng: random.Random, vocab: Vocab) -> Example:
        low = 2 if self.expression == "relation" else 1
        while True:
            scene, focus = sample_scene(rng, vocab, rng.randint(low, 3), require_heldout=self.ood)
            found = self.refer(rng, scene, focus)
            if found is not None:
                break
        text, structured, ref = found
        spec = {"objects": [project(scene["objects"][ref], SCA)]}
        record = self.query_record(scene, {"expression": structured}, spec)
        return Example(
            self.instruction.format(expr=text), scene, record, crop_item(scene, ref), {"scene": scene, "referent": ref}
        )

    def hard_negatives(self, ex: Example, rng: random.Random, vocab: Vocab) -> list[Candidate]:
        scene, ref = ex.meta["scene"], ex.meta["referent"]
        out: list[Candidate] = [
            ("other_object", crop_item(scene, j), {"type": "other_object", "object": j})
            for j in range(len(scene["objects"]))
            if j != ref
        ]
        for attr in SCA:  # the referent itself with one attribute changed, two different values per attribute
            values = {str(_other_value(rng, vocab, scene, ref, attr, self.allowed(vocab))) for _ in range(2)}
            for value in sorted(values - {"None"}):
                edited, edit = replace_attribute(scene, ref, attr, value)
                out.append(("replace_attribute", crop_item(edited, ref), edit))
        return out

    def random_item(self, rng: random.Random, vocab: Vocab) -> SceneItem:
        scene, focus = sample_scene(rng, vocab, rng.randint(1, 3), ood=self.ood)
        return crop_item(scene, focus)


VQA_INSTRUCTION = "<|image_1|>\nRepresent the given image with the following question: {q}\n"


def default_tasks() -> list[MiniTask]:
    """The thirteen tasks, in MMEB's meta-task order; IND first within each meta-task."""
    return [
        ObjectClassification("MiniImageNet-cls", False, "<|image_1|>\nRepresent the given image for classification\n"),
        MultiLabelClassification("MiniVOC-cls", False, "<|image_1|>\nIdentify the objects shown in the image\n"),
        ObjectClassification("MiniObjectNet-cls", True, "<|image_1|>\nName the kind of shape pictured here\n"),
        PositionVQA("MiniAttr-vqa", False, VQA_INSTRUCTION, "What is {pos}?"),
        RelationVQA("MiniRel-vqa", False, VQA_INSTRUCTION, "What is {rel} the {anchor}?"),
        PositionVQA(
            "MiniGQA-vqa", True, "<|image_1|>\nLook at the picture and answer: {q}\n", "Which shape is placed {pos}?"
        ),
        TextToImage("MiniCOCO-t2i", False, "Find me an everyday image that matches the given caption: {caption}\n"),
        ImageToText(
            "MiniCOCO-i2t", False, "<|image_1|>\nFind an image caption describing the given everyday image.\n"
        ),
        ComposedRetrieval(
            "MiniCIRR-cir",
            False,
            "<|image_1|>\nGiven an image, find a similar everyday image with the given modification: {mod}\n",
        ),
        TextToImage("MiniNovel-t2i", True, "Retrieve the picture that this sentence describes: {caption}\n"),
        Grounding(
            "MiniRefCOCO-grd",
            False,
            '<|image_1|>\nSelect the portion of the image that follows the language expressions: "{expr}"\n',
            "attribute",
        ),
        Grounding(
            "MiniPointing-grd",
            False,
            "<|image_1|>\nSelect the portion of the image that isolates the object at the given position: {expr}\n",
            "position",
        ),
        Grounding(
            "MiniRefCOCOg-grd",
            True,
            '<|image_1|>\nCrop out the object that this phrase refers to: "{expr}"\n',
            "relation",
        ),
    ]


TASK_NAMES: tuple[str, ...] = tuple(t.name for t in default_tasks())


# ----------------------------------------------------------------------------------------------- eval rows


def query_key(task: MiniTask, ex: Example) -> str:
    """Identity of a query (task, text, image facts; jitter ignored). Training skips the eval queries' keys, so an
    IND eval query never repeats a training query verbatim (small scene spaces would otherwise leak ~40 %)."""
    return "\x00".join((task.name, ex.qry_text, spec_key(ex.qry_image) if ex.qry_image else ""))


def sample_excluding(
    task: MiniTask, rng: random.Random, vocab: Vocab, exclude: frozenset[str] | set[str], tries: int = 1000
) -> Example:
    """Draw an example whose query key is not in ``exclude`` (best effort: after ``tries`` draws, accept)."""
    ex = task.sample(rng, vocab)
    for _ in range(tries):
        if query_key(task, ex) not in exclude:
            break
        ex = task.sample(rng, vocab)
    return ex


def build_pool(task: MiniTask, rng: random.Random, vocab: Vocab, size: int) -> list[SceneItem]:
    """Up to ``size`` random candidates with distinct keys (fewer when the task's target space is smaller)."""
    pool: dict[str, SceneItem] = {}
    for _ in range(size * 6):
        item = task.random_item(rng, vocab)
        pool.setdefault(item.key, item)
        if len(pool) >= size:
            break
    return list(pool.values())


def assemble_candidates(
    task: MiniTask, ex: Example, rng: random.Random, vocab: Vocab, pool: Sequence[SceneItem], num_candidates: int
) -> list[Candidate]:
    """Ground truth first, then hard distractors and random fill, shuffled after index 0.

    A candidate is kept only if its key is new (no duplicate candidates) and the oracle scores it strictly below
    the positive (a random item that happens to meet the query is a false negative and is skipped). When the task's
    target space is smaller than ``num_candidates`` (a small vocabulary), the list is shorter, as MMEB's own lists
    are for small label sets.
    """
    target = ex.query["target"]
    chosen: list[Candidate] = [("gt", ex.positive, None)]
    keys = {ex.positive.key}

    def offer(kind: str, item: SceneItem, edit: dict | None) -> None:
        if len(chosen) < num_candidates and item.key not in keys and match_score(target, item.content["spec"]) < 1.0:
            keys.add(item.key)
            chosen.append((kind, item, edit))

    for kind, item, edit in task.hard_negatives(ex, rng, vocab):
        offer(kind, item, edit)
    for index in rng.sample(range(len(pool)), len(pool)):
        if len(chosen) >= num_candidates:
            break
        offer("random", pool[index], None)
    rest = chosen[1:]
    rng.shuffle(rest)
    return chosen[:1] + rest
