"""load_folder on tiny image trees written here with PIL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distiq.data import load_folder
from distiq.errors import DataError

GREY = np.array([[0, 51, 102, 153], [204, 255, 0, 51], [10, 20, 30, 40]], dtype=np.uint8)  # 3x4


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_classes_from_sorted_folders_and_exact_values(tmp_path):
    save(tmp_path / "dog" / "a.png", GREY)
    save(tmp_path / "cat" / "b.png", 255 - GREY)
    save(tmp_path / "cat" / "a.bmp", GREY)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    save(tmp_path / "cat" / ".hidden.png", GREY)
    (tmp_path / ".git").mkdir()
    ds = load_folder(tmp_path)
    assert ds.classes == ["cat", "dog"] and ds.y.tolist() == [0, 0, 1]
    assert ds.x.shape == (3, 1, 3, 4) and ds.name == tmp_path.name
    torch.testing.assert_close(ds.x[0, 0], torch.from_numpy(GREY / 255).float())  # cat/a.bmp
    torch.testing.assert_close(ds.x[1, 0], torch.from_numpy((255 - GREY) / 255).float())


def test_any_colour_image_makes_all_rgb(tmp_path):
    save(tmp_path / "a" / "grey.png", GREY)
    red = np.zeros((3, 4, 3), dtype=np.uint8)
    red[..., 0] = 255
    save(tmp_path / "b" / "red.png", red)
    ds = load_folder(tmp_path)
    assert ds.x.shape == (2, 3, 3, 4)
    for c in range(3):  # grey replicated to every channel
        torch.testing.assert_close(ds.x[0, c], torch.from_numpy(GREY / 255).float())
    assert ds.x[1, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
    # forced grey: ITU-R 601 luma of pure red is 255 * 299 / 1000 = 76.2 -> 76
    grey = load_folder(tmp_path, grayscale=True)
    assert grey.x.shape == (2, 1, 3, 4) and grey.x[1, 0, 0, 0].item() == pytest.approx(76 / 255)
    assert load_folder(tmp_path, grayscale=False).x.shape[1] == 3


def test_grey_gif_counts_as_grey_and_colour_palette_as_colour(tmp_path):
    save(tmp_path / "a" / "x.png", GREY)
    Image.fromarray(GREY).save(tmp_path / "a" / "y.gif")
    assert load_folder(tmp_path).x.shape[1] == 1
    palette = Image.new("P", (4, 3), 0)  # (width, height)
    palette.putpalette([0, 0, 255] + [0] * 765)  # index 0 is blue
    palette.save(tmp_path / "a" / "z.png")
    ds = load_folder(tmp_path)
    assert ds.x.shape[1] == 3 and ds.x[2, :, 0, 0].tolist() == [0.0, 0.0, 1.0]


def test_resize_int_and_tuple(tmp_path):
    save(tmp_path / "a" / "big.png", np.full((10, 6), 200, dtype=np.uint8))
    save(tmp_path / "a" / "small.png", np.full((3, 4), 100, dtype=np.uint8))
    square = load_folder(tmp_path, image_size=5)
    assert square.x.shape == (2, 1, 5, 5)
    # a constant image stays the same constant under bilinear resizing
    assert square.x[0].unique().tolist() == pytest.approx([200 / 255])
    assert load_folder(tmp_path, image_size=(7, 2)).x.shape == (2, 1, 7, 2)
    save(tmp_path / "a" / "photo.jpg", np.full((8, 8), 60, dtype=np.uint8))
    with_jpeg = load_folder(tmp_path, image_size=4)
    assert with_jpeg.x.shape == (3, 1, 4, 4)
    assert with_jpeg.x[1].sub(60 / 255).abs().max().item() < 3 / 255  # jpeg is lossy


def test_sizes_must_agree_without_image_size(tmp_path):
    save(tmp_path / "a" / "1.png", GREY)
    odd = save(tmp_path / "b" / "2.png", np.zeros((5, 4), dtype=np.uint8))
    with pytest.raises(DataError, match="5x4") as e:
        load_folder(tmp_path)
    assert str(e.value).startswith(str(odd)) and "image_size" in str(e.value)


def test_unreadable_image_names_file(tmp_path):
    save(tmp_path / "a" / "ok.png", GREY)
    bad = tmp_path / "a" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError) as e:
        load_folder(tmp_path)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_empty_or_missing_folders(tmp_path):
    with pytest.raises(DataError, match="no class sub-folders") as e:
        load_folder(tmp_path)
    assert str(tmp_path) in str(e.value)
    (tmp_path / "empty").mkdir()
    save(tmp_path / "full" / "a.png", GREY)
    with pytest.raises(DataError, match="no image files") as e:
        load_folder(tmp_path)
    assert str(tmp_path / "empty") in str(e.value)
    with pytest.raises(DataError, match="no such folder"):
        load_folder(tmp_path / "absent")
