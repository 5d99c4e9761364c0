"""load_npz: layouts, scaling, and one-line errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distiq.data import load_npz
from distiq.errors import DataError


def test_nhw_uint8_gets_channel_and_scaled(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.array([[[0, 255], [51, 102]]] * 2, dtype=np.uint8), y=np.array([1, 0]))
    ds = load_npz(path)
    assert ds.x.shape == (2, 1, 2, 2) and ds.x.dtype == torch.float32
    torch.testing.assert_close(ds.x[0, 0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    assert ds.y.tolist() == [1, 0] and ds.y.dtype == torch.int64 and ds.name == "d"


def test_nchw_float_kept_as_is(tmp_path):
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 2], dtype=np.int32))
    ds = load_npz(tmp_path / "d.npz")
    assert ds.x.shape == (2, 3, 4, 5)
    assert ds.x[1, 2, 3, 4].item() == 119.0


@pytest.mark.parametrize("c", [1, 3])
def test_nhwc_moved_to_nchw(tmp_path, c):
    x = np.random.default_rng(0).integers(0, 256, (4, 6, 5, c), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(4, dtype=np.int64))
    ds = load_npz(tmp_path / "d.npz")
    assert ds.x.shape == (4, c, 6, 5)
    assert ds.x[3, c - 1, 5, 2].item() == pytest.approx(x[3, 5, 2, c - 1] / 255)


def test_custom_keys_and_class_names(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(
        path, images=np.zeros((3, 4, 4)), labels=np.array([[0], [1], [1]]), classes=np.array(["cat", "dog"])
    )
    ds = load_npz(path, x_key="images", y_key="labels")
    assert ds.classes == ["cat", "dog"] and ds.y.tolist() == [0, 1, 1]
    assert load_npz(path, "images", "labels", classes=["a", "b", "c"]).classes == ["a", "b", "c"]
    with pytest.raises(DataError, match="only 1 class names"):
        load_npz(path, "images", "labels", classes=["a"])


def test_missing_key_names_file_key_and_keys_present(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((2, 4, 4)), y=np.array([0, 1]))
    with pytest.raises(DataError) as e:
        load_npz(path)
    msg = str(e.value)
    assert str(path) in msg and "'x'" in msg and "images, y" in msg and "\n" not in msg


def test_length_mismatch(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((3, 4, 4)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="3 images") as e:
        load_npz(path)
    assert str(path) in str(e.value) and "2 labels" in str(e.value)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"x": np.zeros((2, 4)), "y": np.array([0, 1])}, "must be"),
        ({"x": np.zeros((2, 4, 4)), "y": np.array([0.0, 1.0])}, "integers"),
        ({"x": np.zeros((2, 4, 4)), "y": np.array([0, -1])}, ">= 0"),
        ({"x": np.array([{}, {}], dtype=object), "y": np.array([0, 1])}, "cannot read"),
    ],
)
def test_bad_arrays(tmp_path, arrays, match):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match) as e:
        load_npz(path)
    assert str(path) in str(e.value)


def test_missing_corrupt_and_npy_files(tmp_path):
    for path, content in [(tmp_path / "bad.npz", b"garbage"), (tmp_path / "none.npz", None)]:
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(DataError) as e:
            load_npz(path)
        assert str(path) in str(e.value)
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(DataError, match="single array") as e:
        load_npz(tmp_path / "single.npy")
    assert str(tmp_path / "single.npy") in str(e.value)
