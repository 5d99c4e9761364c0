"""User data that would poison or exhaust a run is refused at load, in one line naming the file:
NaN/inf pixels, labels that are not class ids, decompression bombs (issue 9, problems 3-5)."""

from __future__ import annotations

import struct
import zipfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import distiq as dq
from distiq.cli.main import main
from distiq.data import folder as folder_module
from distiq.data.arrays import ArrayDataset
from distiq.errors import DataError


def write_npz(path, y, x=None, **extra):
    x = np.zeros((len(y), 4, 4), np.float32) if x is None else x
    np.savez(path, x=x, y=np.asarray(y), **extra)
    return path


def refusal(load) -> str:
    with pytest.raises(DataError) as err:
        load()
    message = str(err.value)
    assert "\n" not in message
    return message


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` 8-bit grey pixels (data far shorter: never decoded)."""
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    idat = png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + png_chunk(b"IEND", b"")


def image_folder(root, files: dict[str, bytes | Image.Image]):
    """``root/<class>/<file>`` for each ``"class/file"`` key."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content.save(path)
    return root


# --- non-finite pixels ------------------------------------------------------------------------


def test_npz_nan_and_inf_pixels_are_refused_with_the_count(tmp_path):
    x = np.ones((5, 4, 4), np.float32)
    x[2, 0, 0], x[2, 1, 1], x[4, 3, 3] = np.nan, np.inf, -np.inf
    path = write_npz(tmp_path / "nan.npz", [0, 1, 0, 1, 0], x)
    message = refusal(lambda: dq.data.load_npz(path))
    assert str(path) in message and "3 NaN or infinite" in message and "sample 2" in message


def test_npz_float64_pixels_that_overflow_float32_are_refused(tmp_path):
    x = np.ones((2, 4, 4), np.float64)
    x[1, 0, 0] = 1e300  # finite in the file, inf once cast to the float32 distiq computes in
    path = write_npz(tmp_path / "big.npz", [0, 1], x)
    assert "1 NaN or infinite" in refusal(lambda: dq.data.load_npz(path))


def test_float_tiff_with_nan_in_an_image_folder_is_refused(tmp_path):
    pixels = np.full((4, 4), 0.5, np.float32)
    pixels[1, 2] = np.nan
    root = image_folder(
        tmp_path / "imgs", {"a/0.tif": Image.fromarray(pixels), "b/0.tif": Image.fromarray(pixels * 0)}
    )
    message = refusal(lambda: dq.data.load_folder(root))
    assert str(root / "a" / "0.tif") in message and "1 NaN or infinite pixels" in message


def test_finite_float_tiffs_still_load(tmp_path):
    root = image_folder(
        tmp_path / "imgs",
        {"a/0.tif": Image.fromarray(np.full((4, 4), 255.0, np.float32)), "b/0.tif": Image.new("L", (4, 4))},
    )
    data = dq.data.load_folder(root)
    assert data.y.tolist() == [0, 1] and data.x[0].min().item() == 1.0 and data.x[1].max().item() == 0.0


def test_npz_declaring_an_array_larger_than_memory_is_refused(tmp_path):
    """The .npy header says 2**40 float32 values (4 TiB); numpy's allocation fails at once."""
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }"
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)
    np.savez(tmp_path / "y.npz", y=np.zeros(2, np.int64))
    with zipfile.ZipFile(tmp_path / "y.npz") as src, zipfile.ZipFile(path, "a") as z:
        z.writestr("y.npy", src.read("y.npy"))
    message = refusal(lambda: dq.data.load_npz(path))
    assert str(path) in message and "'x' declares more data than fits in memory" in message


# --- labels -----------------------------------------------------------------------------------


def test_a_label_of_1000_among_ten_classes_is_refused(tmp_path):
    path = write_npz(tmp_path / "stray.npz", [*range(10), 1000])
    message = refusal(lambda: dq.data.load_npz(path))
    assert str(path) in message and "label 1000" in message and "11 distinct" in message


@pytest.mark.parametrize("label", [10**6, 2**63 + 5])
def test_labels_beyond_the_class_bound_are_refused(tmp_path, label):
    path = write_npz(tmp_path / "huge.npz", np.array([0, label], np.uint64))
    message = refusal(lambda: dq.data.load_npz(path))
    assert f"label {label} " in message and "more than 100,000" in message


def test_the_unused_class_rule_at_its_boundary(tmp_path):
    """Two distinct labels may imply up to 20 classes (10x), not 21."""
    assert dq.data.load_npz(write_npz(tmp_path / "ok.npz", [0, 19, 0])).num_classes == 20
    message = refusal(lambda: dq.data.load_npz(write_npz(tmp_path / "sparse.npz", [0, 20, 0])))
    assert "label 20 implies 21 classes but only 2 distinct labels" in message


def test_declared_class_names_allow_unused_classes(tmp_path):
    path = write_npz(tmp_path / "named.npz", [0, 1000], classes=np.array([f"c{i}" for i in range(1001)]))
    data = dq.data.load_npz(path)
    assert data.num_classes == 1001 and data.classes[1000] == "c1000"


def test_label_beyond_the_stored_class_names_is_refused(tmp_path):
    path = write_npz(tmp_path / "named.npz", [0, 3], classes=np.array(["a", "b", "c"]))
    assert "label 3 but only 3 class names" in refusal(lambda: dq.data.load_npz(path))


@pytest.mark.parametrize(
    "y, expected",
    [(np.array([0, -1]), "must be >= 0, found -1"), (np.array([0.0, 1.5]), "must be integers")],
)
def test_negative_and_non_integer_labels_are_refused(tmp_path, y, expected):
    path = write_npz(tmp_path / "bad.npz", y)
    assert expected in refusal(lambda: dq.data.load_npz(path))


def test_an_array_dataset_without_names_is_bounded():
    with pytest.raises(DataError, match="label 1000000 implies more than 100,000 classes"):
        ArrayDataset(torch.zeros(2, 1, 4, 4), torch.tensor([0, 10**6]), name="made-in-memory")


# --- decompression bombs ----------------------------------------------------------------------


def test_a_decompression_bomb_png_is_refused_naming_the_file(tmp_path):
    root = image_folder(
        tmp_path / "bomb", {"a/0.png": bomb_png(2**14, 2**15), "b/0.png": Image.new("L", (4, 4))}
    )
    message = refusal(lambda: dq.data.load_folder(root))
    assert str(root / "a" / "0.png") in message


def test_images_beyond_the_loaders_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_module, "MAX_PIXELS", 64)
    root = image_folder(
        tmp_path / "imgs", {"a/0.png": Image.new("L", (8, 8)), "b/0.png": Image.new("L", (8, 9))}
    )
    message = refusal(lambda: dq.data.load_folder(root, image_size=8))
    assert str(root / "b" / "0.png") in message and "8x9 (72 pixels)" in message and "64" in message


def test_the_default_pixel_limit_refuses_a_header_beyond_it(tmp_path):
    side = 4097  # 4097**2 > MAX_PIXELS = 4096**2, still below PIL's own warning threshold
    root = image_folder(tmp_path / "imgs", {"a/0.png": bomb_png(side, side)})
    assert f"{side}x{side}" in refusal(lambda: dq.data.load_folder(root))


# --- the same refusals through the command line -----------------------------------------------


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = dq.models.create("mlp", num_classes=2, image_size=4, hidden=(8,))
    return str(dq.save_weights(model, tmp_path_factory.mktemp("w") / "model.safetensors"))


def _nan_npz(tmp_path):
    x = np.zeros((2, 4, 4), np.float32)
    x[0, 0, 0] = np.nan
    return write_npz(tmp_path / "nan.npz", [0, 1], x)


def _stray_label_npz(tmp_path):
    return write_npz(tmp_path / "stray.npz", [0, 1, 0, 1, 1000])


def _bomb_folder(tmp_path):
    return image_folder(
        tmp_path / "bomb", {"a/0.png": bomb_png(2**14, 2**15), "b/0.png": Image.new("L", (4, 4))}
    )


@pytest.mark.parametrize("make, named", [(_nan_npz, ""), (_stray_label_npz, ""), (_bomb_folder, "a/0.png")])
def test_the_cli_exits_2_with_one_line_naming_the_file(tmp_path, capsys, weights, make, named):
    data = make(tmp_path)
    code = main(["evaluate", "--model", weights, "--data", str(data), "--split", "train"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert str(data / named if named else data) in lines[0] and "internal error" not in lines[0]
