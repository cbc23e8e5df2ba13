"""One identity of an image and of an item (:func:`~unime_v2.data_builders.storage.image_key`), whoever asks: the
mining records, the judge pairs' positives and the evaluation's embedding cache agree on every kind of image."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from unime_v2.data_builders.formats.judge_pairs import positive_keys
from unime_v2.data_builders.mining.records import ImageRef, Item
from unime_v2.data_builders.storage import image_key, item_key
from unime_v2.trainers.evaluation.encoding import item_key as evaluation_item_key


TEXT = "<|image_1|>\nRepresent the given image."


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def judge_key(image: object) -> str:
    """The judge pairs' key of a positive holding ``image`` (a stored cell, as ``datasets`` gives it)."""
    (key,) = positive_keys([{"qry": "q", "qry_image": None, "pos_text": TEXT, "pos_image": image, "dataset": "x"}])
    return key


def test_an_image_file_has_one_key_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png((200, 0, 0)))
    expected = item_key(TEXT, str(path))
    assert Item(TEXT, ImageRef(path=str(path))).key == expected
    assert evaluation_item_key({"text": TEXT, "image": str(path)}) == expected
    assert judge_key(str(path)) == judge_key({"bytes": None, "path": str(path)}) == expected
    monkeypatch.chdir(tmp_path)  # a relative path names the same file
    assert item_key(TEXT, "a.png") == expected


def test_encoded_bytes_and_no_image_have_one_key_everywhere() -> None:
    data = png((0, 200, 0))
    assert Item(TEXT, ImageRef(bytes=data, path="x.png")).key == item_key(TEXT, data) == judge_key({"bytes": data})
    assert Item(TEXT, None).key == item_key(TEXT, None) == judge_key(None) == judge_key("")
    assert evaluation_item_key({"text": TEXT, "image": None}) == item_key(TEXT, None)


def test_decoded_images_are_keyed_by_their_pixels() -> None:
    image = Image.new("RGB", (8, 6), (0, 0, 200))
    assert evaluation_item_key({"text": TEXT, "image": image}) == judge_key(image) == item_key(TEXT, image)
    assert image_key(image) == image_key(image.copy()) != image_key(Image.new("RGB", (8, 6), (0, 0, 201)))


def test_a_file_is_keyed_by_its_path_and_size(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png((1, 2, 3)))
    before = image_key(path)
    path.write_bytes(png((1, 2, 3)) + b"\0" * 16)
    assert image_key(path) != before
    path.write_bytes(png((1, 2, 3)))  # put back as it was: finished work keyed by it is reused
    assert image_key(path) == before and image_key(tmp_path / "gone.png").startswith("missing:")


def test_an_unknown_image_type_is_refused() -> None:
    with pytest.raises(TypeError, match="an image must be"):
        image_key(3.5)
