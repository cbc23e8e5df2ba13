"""Fixtures shared by the embedder's tests: two small image files of different sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image


def _image(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> Image.Image:
    image = Image.new("RGB", size, color)
    image.paste((255 - color[0], 255 - color[1], 255 - color[2]), (8, 8, 30, 40))
    return image


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"red": 64x64 png, "blue": 96x64 png}``, each with a patch of the opposite colour."""
    root = tmp_path_factory.mktemp("images")
    files = {"red": root / "red.png", "blue": root / "blue.png"}
    _image((220, 30, 30)).save(files["red"])
    _image((20, 40, 230), (96, 64)).save(files["blue"])
    return files
