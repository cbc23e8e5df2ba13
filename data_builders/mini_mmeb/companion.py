"""Companion evaluation sets of Mini-MMEB, in the shapes of the paper's extra benchmarks.

* ``caption_retrieval`` — one image, five true captions (Flickr30K / COCO-like image<->text R@1).
* ``long_caption`` — one image, one long detailed caption (ShareGPT4V / Urban1K-like 1:1 retrieval).
* ``compositional`` — (image, positive caption, negative caption) in the seven SugarCrepe subsets.

Images within a retrieval set have distinct object sets, so each caption is true of exactly one image of its set;
every negative caption is checked false against its scene graph and every positive true.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .scenes import (
    RELATIONS,
    describe,
    match_score,
    position_phrase,
    project,
    relation_holds,
    spec_key,
)
from .tasks import CS, SCA, SCAC, Vocab, _article, caption_text, join_phrases, sample_scene


COMPOSITIONAL_SUBSETS = ("replace-obj", "replace-att", "replace-rel", "swap-obj", "swap-att", "add-obj", "add-att")

_COUNT_WORDS = {1: "one shape", 2: "two shapes", 3: "three shapes"}


def is_true(spec: dict, scene: dict) -> bool:
    """Whether a (partial) caption spec is true of a scene: every stated fact holds, other objects may exist."""
    return match_score(spec, scene, penalize_extra=False) == 1.0


def _relation_between(a: dict, b: dict) -> str:
    """A relation that holds from a to b (horizontal preferred; cells are distinct so one always holds)."""
    for rel in RELATIONS:
        if relation_holds(a["cell"], rel, b["cell"]):
            return rel
    raise ValueError("objects share a cell")


def five_captions(scene: dict) -> list[str]:
    """Five differently worded true captions; each names every object with size, colour and shape."""
    objs = scene["objects"]
    phrases = [_article(describe(o, SCA)) for o in objs]
    spec = {"objects": [project(o, SCAC) for o in objs]}
    positional = caption_text(spec)
    reverse = join_phrases([_article(describe(o, SCAC)) for o in reversed(objs)])
    if len(objs) == 1:
        reverse = f"there is {reverse}"
    if len(objs) == 1:
        relational = f"only {phrases[0]} {position_phrase(objs[0]['cell'])}"
    else:
        relational = f"{phrases[0]} {_relation_between(objs[0], objs[1])} {phrases[1]}"
        if len(objs) == 3:
            relational += f", and {phrases[2]} {position_phrase(objs[2]['cell'])}"
    return [
        positional,
        reverse,
        f"{_article(scene['background'])} picture with {join_phrases(phrases)}",
        f"{_COUNT_WORDS[len(objs)]}: {join_phrases(phrases)}",
        relational,
    ]


def long_caption(scene: dict) -> str:
    """A detailed caption (background, every attribute and position, one relation), under 40 words."""
    objs = scene["objects"]
    text = f"{_article(scene['background'])} picture with {caption_text({'objects': objs})}"
    a, b = objs[0], objs[-1]
    text += f"; the {describe(a, CS)} is {_relation_between(a, b)} the {describe(b, CS)}."
    return text[0].upper() + text[1:]


def _unique_scenes(
    rng: random.Random, vocab: Vocab, count: int, low: int, key: Callable[[dict], str], field: str
) -> list[dict]:
    """``count`` scenes with distinct keys; a clear error when the vocabulary cannot supply that many."""
    scenes: dict[str, dict] = {}
    for _ in range(count * 50 + 100):
        if len(scenes) == count:
            return list(scenes.values())
        scene, _ = sample_scene(rng, vocab, rng.randint(low, 3), ood=True)
        scenes.setdefault(key(scene), scene)
    raise ValueError(
        f"MiniMMEBConfig.{field}: cannot draw {count} distinct scenes from this vocabulary; got {len(scenes)}"
    )


def _object_set_key(scene: dict) -> str:
    return spec_key({"objects": [project(o, SCA) for o in scene["objects"]]})


def caption_retrieval_rows(rng: random.Random, vocab: Vocab, count: int) -> list[dict]:
    """Rows ``{scene, captions[5]}``; object sets are distinct across the set."""
    scenes = _unique_scenes(rng, vocab, count, 1, _object_set_key, "caption_images")
    return [{"scene": s, "captions": five_captions(s)} for s in scenes]


def long_caption_rows(rng: random.Random, vocab: Vocab, count: int) -> list[dict]:
    """Rows ``{scene, caption}`` with 2-3 objects; object sets are distinct across the set."""
    scenes = _unique_scenes(rng, vocab, count, 2, _object_set_key, "long_caption_images")
    return [{"scene": s, "caption": long_caption(s)} for s in scenes]


# ----------------------------------------------------------------------------------------------- SugarCrepe-like


def _pair_spec(a: dict, b: dict, attrs: tuple[str, ...], relation: str | None) -> dict:
    spec: dict = {"objects": [project(a, attrs), project(b, attrs)]}
    if relation is not None:
        spec["relations"] = [[0, relation, 1]]
    return spec


def spec_caption(spec: dict) -> str:
    """Caption of a compositional spec: "a red circle left of a blue square" or a list of objects."""
    attrs = ("size", "color", "shape")
    phrases = [_article(describe(o, attrs)) for o in spec["objects"]]
    rels = spec.get("relations") or []
    if rels:
        i, rel, j = rels[0]
        return f"{phrases[i]} {rel} {phrases[j]}"
    return join_phrases(phrases)


def _negative(subset: str, rng: random.Random, vocab: Vocab, pos: dict, scene: dict) -> dict | None:
    """The negative spec of one subset (None when this scene cannot yield one)."""
    neg = {
        "objects": [dict(o) for o in pos["objects"]],
        **({"relations": [list(r) for r in pos["relations"]]} if "relations" in pos else {}),
    }
    k = rng.randrange(2)
    if subset == "replace-obj":
        neg["objects"][k]["shape"] = rng.choice([s for s in vocab.shapes if s != pos["objects"][k]["shape"]])
    elif subset == "replace-att":
        neg["objects"][k]["color"] = rng.choice([c for c in vocab.colors if c != pos["objects"][k]["color"]])
    elif subset == "replace-rel":
        neg["relations"][0][1] = rng.choice([r for r in RELATIONS if r != pos["relations"][0][1]])
    elif subset in ("swap-obj", "swap-att"):
        attr = "shape" if subset == "swap-obj" else "color"
        neg["objects"][0][attr], neg["objects"][1][attr] = pos["objects"][1][attr], pos["objects"][0][attr]
    elif subset == "add-obj":
        present = {(o["color"], o["shape"]) for o in scene["objects"]}
        color, shape = rng.choice([p for p in vocab.all_combos if p not in present])
        neg["objects"].append({"color": color, "shape": shape})
    elif subset == "add-att":
        neg["objects"][k]["size"] = rng.choice(vocab.sizes)
    return neg


def compositional_rows(rng: random.Random, vocab: Vocab, per_subset: int) -> list[dict]:
    """Rows ``{scene, pos, neg, subset}``: the positive is true of the scene, the negative false."""
    rows: list[dict] = []
    for subset in COMPOSITIONAL_SUBSETS:
        made = 0
        for _ in range(per_subset * 50 + 100):
            if made == per_subset:
                break
            scene, _ = sample_scene(rng, vocab, rng.randint(2, 3), ood=True)
            a, b = rng.sample(scene["objects"], 2)
            relation = None if subset == "add-obj" else _relation_between(a, b)
            pos = _pair_spec(a, b, CS, relation)
            neg = _negative(subset, rng, vocab, pos, scene)
            if neg is None or not is_true(pos, scene) or is_true(neg, scene):
                continue
            if spec_caption(neg) == spec_caption(pos):
                continue
            rows.append({"scene": scene, "pos": pos, "neg": neg, "subset": subset})
            made += 1
        if made < per_subset:
            raise ValueError(
                f"MiniMMEBConfig.compositional_per_subset: cannot draw {per_subset} rows for "
                f"{subset!r} from this vocabulary; got {made}"
            )
    return rows
