"""Fashion-MNIST IDX parsing, on tiny IDX files written here byte by byte with struct."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import distiq.data as dq_data
from distiq.data import fashion_mnist as fm
from distiq.errors import DataError

IMAGES = np.array(
    [
        [[0, 51, 255], [255, 0, 102]],
        [[1, 2, 3], [4, 5, 6]],
        [[10, 20, 30], [40, 50, 60]],
    ],
    dtype=np.uint8,
)  # 3 images of 2x3: non-square, so a swapped height/width would show
LABELS = np.array([9, 0, 3], dtype=np.uint8)


def idx(arr: np.ndarray, magic: int | None = None) -> bytes:
    """IDX bytes: big-endian magic (0x0000 08 ndim), big-endian sizes, raw bytes."""
    magic = (0x08 << 8 | arr.ndim) if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write(
    root: Path,
    split: str = "train",
    images: bytes | None = None,
    labels: bytes | None = None,
    gz: bool = True,
) -> tuple[Path, Path]:
    stems = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }[split]
    paths = []
    for stem, data in zip(stems, (images or idx(IMAGES), labels or idx(LABELS)), strict=True):
        path = root / (f"{stem}.gz" if gz else stem)
        path.write_bytes(gzip.compress(data) if gz else data)
        paths.append(path)
    return paths[0], paths[1]


@pytest.fixture(autouse=True)
def _clear_cache(monkeypatch):
    monkeypatch.setattr(fm, "_cache", {})
    monkeypatch.delenv(fm.ENV_VAR, raising=False)


def test_magic_numbers_match_the_idx_spec():
    assert idx(IMAGES)[:4] == b"\x00\x00\x08\x03" and fm.IMAGES_MAGIC == 0x0803 == 2051
    assert idx(LABELS)[:4] == b"\x00\x00\x08\x01" and fm.LABELS_MAGIC == 0x0801 == 2049


@pytest.mark.parametrize("gz", [True, False])
def test_reads_gzipped_and_plain_files(tmp_path, gz):
    write(tmp_path, "test", gz=gz)
    ds = dq_data.load("fashion-mnist", split="test", root=tmp_path)
    assert ds.x.shape == (3, 1, 2, 3) and ds.x.dtype == torch.float32
    torch.testing.assert_close(ds.x[0, 0], torch.tensor([[0.0, 0.2, 1.0], [1.0, 0.0, 0.4]]))
    assert ds.x[2, 0, 1, 2].item() == pytest.approx(60 / 255)
    assert ds.y.tolist() == [9, 0, 3] and ds.y.dtype == torch.int64
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot" and ds.num_classes == 10
    assert ds.name == "fashion-mnist:test"


def test_root_argument_then_env_var(tmp_path, monkeypatch):
    env_root, arg_root = tmp_path / "env", tmp_path / "arg"
    env_root.mkdir(), arg_root.mkdir()
    write(env_root)
    write(arg_root, labels=idx(np.array([1, 2, 3], dtype=np.uint8)))
    monkeypatch.setenv(fm.ENV_VAR, str(env_root))
    assert fm.load_fashion_mnist().y.tolist() == [9, 0, 3]
    assert fm.load_fashion_mnist(root=arg_root).y.tolist() == [1, 2, 3]
    monkeypatch.delenv(fm.ENV_VAR)
    assert fm.resolve_root() == Path("/usr/share/datasets/fashion-mnist")


def test_missing_file_names_path_and_install_hint(tmp_path):
    with pytest.raises(DataError) as e:
        fm.load_fashion_mnist(root=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "DISTIQ_FASHION_MNIST" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("magic", [2049, 0x0D03, 0x0804])  # labels magic, float dtype, 4 dims
def test_bad_magic(tmp_path, magic):
    images, _ = write(tmp_path, images=idx(IMAGES, magic=magic))
    with pytest.raises(DataError, match="magic number") as e:
        fm.load_fashion_mnist(root=tmp_path)
    assert str(images) in str(e.value) and str(magic) in str(e.value)


def test_truncated_file_says_expected_and_got_bytes(tmp_path):
    data = idx(IMAGES)  # 4 magic + 3*4 sizes + 18 pixels = 34 bytes
    assert len(data) == 34
    images, _ = write(tmp_path, images=data[:30])
    with pytest.raises(DataError, match="truncated") as e:
        fm.load_fashion_mnist(root=tmp_path)
    assert str(images) in str(e.value)
    assert "expected 34 bytes" in str(e.value) and "got 30 bytes" in str(e.value)


def test_header_cut_short(tmp_path):
    _, labels = write(tmp_path, labels=idx(LABELS)[:6])
    with pytest.raises(DataError, match="expected 8 bytes, got 6") as e:
        fm.load_fashion_mnist(root=tmp_path)
    assert str(labels) in str(e.value)


def test_image_and_label_counts_must_agree(tmp_path):
    images, labels = write(tmp_path, labels=idx(LABELS[:2]))
    with pytest.raises(DataError, match="2 labels") as e:
        fm.load_fashion_mnist(root=tmp_path)
    assert str(labels) in str(e.value) and str(images) in str(e.value) and "3 images" in str(e.value)


def test_labels_must_be_0_to_9(tmp_path):
    _, labels = write(tmp_path, labels=idx(np.array([0, 10, 1], dtype=np.uint8)))
    with pytest.raises(DataError, match="label 10") as e:
        fm.load_fashion_mnist(root=tmp_path)
    assert str(labels) in str(e.value)


@pytest.mark.parametrize(
    "content",
    [b"this is not gzip", gzip.compress(idx(IMAGES), mtime=0)[:20]],  # mtime=0: the same id in every worker
    ids=["not-gzip", "truncated-gzip"],
)
def test_corrupt_gzip_names_the_file(tmp_path, content):
    images, _ = write(tmp_path)
    images.write_bytes(content)
    with pytest.raises(DataError) as e:
        fm.load_fashion_mnist(root=tmp_path)
    assert str(images) in str(e.value)


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="train, test"):
        fm.load_fashion_mnist("val", root=tmp_path)


def test_repeat_loads_use_cache_but_return_fresh_tensors(tmp_path, monkeypatch):
    images, _ = write(tmp_path)
    first = fm.load_fashion_mnist(root=tmp_path)
    real_read_idx = fm.read_idx

    def fail(*args, **kwargs):
        raise AssertionError("parsed again")

    monkeypatch.setattr(fm, "read_idx", fail)
    second = fm.load_fashion_mnist(root=tmp_path)
    first.x.zero_()  # a caller mutating its copy must not reach the next load
    assert second.x[0, 0, 0, 2].item() == 1.0
    assert fm.load_fashion_mnist(root=tmp_path).x[0, 0, 0, 2].item() == 1.0

    # A file replaced on disk (new mtime) is parsed again.
    monkeypatch.setattr(fm, "read_idx", real_read_idx)
    new = IMAGES.copy()
    new[0, 0, 2] = 0
    images.write_bytes(gzip.compress(idx(new)))
    st = images.stat()
    os.utime(images, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert fm.load_fashion_mnist(root=tmp_path).x[0, 0, 0, 2].item() == 0.0


REAL = fm.DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz"


@pytest.mark.skipif(not REAL.is_file(), reason="Fashion-MNIST not installed")
def test_real_test_split():
    ds = dq_data.load("fashion-mnist", split="test", root=fm.DEFAULT_ROOT)
    assert ds.x.shape == (10000, 1, 28, 28) and ds.input_shape == (1, 28, 28)
    assert torch.bincount(ds.y).tolist() == [1000] * 10  # the test set is balanced
    assert 0.0 <= ds.x.min().item() and ds.x.max().item() == 1.0
    train_labels = fm.read_idx(fm.DEFAULT_ROOT / "train-labels-idx1-ubyte.gz", fm.LABELS_MAGIC)
    assert train_labels.shape == (60000,)
