"""Fashion-MNIST read straight from its IDX files, with no download and no torchvision.

Why parse IDX ourselves: the format is a 4-byte magic number, big-endian dimension sizes and raw
bytes, a dozen lines of numpy. Doing it here lets every way a file can be wrong (missing, truncated,
corrupt gzip, wrong magic, counts that disagree) become one :class:`~distiq.errors.DataError` line
that names the file, instead of a numpy traceback.

Where the files are, first match wins: the ``root`` argument, the ``DISTIQ_FASHION_MNIST``
environment variable, then ``/usr/share/datasets/fashion-mnist`` (``apt-get install
dataset-fashion-mnist``). Each file may be gzipped (``*.gz``, preferred) or not.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from distiq.data.arrays import ArrayDataset
from distiq.errors import DataError

ENV_VAR = "DISTIQ_FASHION_MNIST"
DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_INSTALL_HINT = f"install it with `apt-get install dataset-fashion-mnist` or set {ENV_VAR}"

# Parsed uint8 arrays keyed by (resolved path, mtime_ns, size): repeated loads skip the ~1 s parse,
# and a file replaced on disk is parsed again.
_cache: dict[tuple[str, int, int], np.ndarray] = {}


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder to read: ``root`` if given, else ``$DISTIQ_FASHION_MNIST``, else the default."""
    if root is not None:
        return Path(root)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_ROOT


def find_file(root: Path, stem: str) -> Path:
    """``root/stem.gz`` if it exists, else ``root/stem``; DataError naming both when neither does."""
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"{root / stem}.gz: no such file (nor {root / stem}); {_INSTALL_HINT}")


def read_idx(path: str | os.PathLike[str], magic: int) -> np.ndarray:
    """Parse one IDX file of unsigned bytes into a uint8 array shaped as its header says.

    Args:
        path: The file, gzipped if its name ends in ``.gz``.
        magic: The expected magic number (``IMAGES_MAGIC`` or ``LABELS_MAGIC``); its low byte is
            the number of dimensions.

    Raises:
        DataError: Unreadable or corrupt gzip, wrong magic number, or a byte length that does not
            match the header (truncated or padded file).
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; {_INSTALL_HINT}") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read, corrupt or truncated gzip ({e})") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX file, expected a header, got {len(data)} bytes")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(
            f"{path}: not an IDX file of this kind, magic number {found} (expected {magic}: "
            f"unsigned bytes, {ndim} dimension{'s' * (ndim > 1)})"
        )
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header, expected {header} bytes, got {len(data)}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "too long"
        raise DataError(
            f"{path}: {what}, header says shape {shape} so expected {expected} bytes, got {len(data)} bytes"
        )
    # A writable copy, so torch.from_numpy can wrap it without a read-only warning.
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _read_cached(path: Path, magic: int) -> np.ndarray:
    """:func:`read_idx` memoised on (resolved path, mtime, size)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _cache:
        _cache[key] = read_idx(path, magic)
    return _cache[key]


def load_fashion_mnist(split: str = "train", root: str | os.PathLike[str] | None = None) -> ArrayDataset:
    """Fashion-MNIST (Xiao et al., 2017): 60,000 train / 10,000 test 28x28 grey clothing images.

    Each call returns a new dataset with its own float tensor (built from the cached uint8 arrays,
    ~0.1 s for the train split), so a caller may modify it in place without affecting other loads.

    Args:
        split: ``"train"`` or ``"test"``.
        root: Folder holding the four IDX files; see the module docstring for the default.

    Returns:
        ``x`` float32 ``[N, 1, H, W]`` in ``[0, 1]`` (pixel / 255), ``y`` int64 in ``0..9``.

    Raises:
        ValueError: Unknown split.
        DataError: A file is missing, corrupt, or the images and labels disagree.
    """
    if split not in FILES:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(FILES)}")
    folder = resolve_root(root)
    images_path, labels_path = (find_file(folder, stem) for stem in FILES[split])
    images = _read_cached(images_path, IMAGES_MAGIC)
    labels = _read_cached(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels but {images_path} has {len(images)} images")
    if len(labels) and int(labels.max()) >= len(CLASSES):
        raise DataError(f"{labels_path}: label {int(labels.max())} outside 0..{len(CLASSES) - 1}")
    x = torch.from_numpy(images).to(torch.float32).div_(255).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return ArrayDataset(x, y, CLASSES, f"fashion-mnist:{split}")
