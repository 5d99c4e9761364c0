"""User images laid out one sub-folder per class, the layout most image tools export.

Why read everything into memory: distiq's models are small and so are the datasets users bring to
compress them; one :class:`ArrayDataset` makes every later step (splits, normalisation, batching)
the same as for the built-in datasets.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from distiq.data.arrays import ArrayDataset
from distiq.errors import DataError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})

MAX_PIXELS = 4096 * 4096
"""The largest image (width x height) this loader decodes, checked from the file's header first.

Why far below PIL's own limit (89 million pixels, an error only at twice that): distiq compresses
small image classifiers, whose inputs are tens to hundreds of pixels a side, and a folder is read whole
into memory; a file claiming more is a decompression bomb or a photo to downscale first, and either
way it should be refused before it is decoded, naming the file.
"""


def _is_colour(image: Image.Image) -> bool:
    """Whether an image carries colour: by mode, and for palette images by their pixels."""
    if image.mode in _GREY_MODES:
        return False
    if image.mode in ("P", "PA"):
        rgb = np.asarray(image.convert("RGB"))
        return not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))
    return True


def _read(path: Path) -> Image.Image:
    """Open and decode ``path`` fully, so a corrupt, oversized or non-finite file fails here with its
    name (see ``MAX_PIXELS``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_size(path, image)
                image.load()
                image = image.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: refused as a decompression bomb ({e})") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None
    if image.mode == "F":  # 32-bit float pixels (e.g. TIFF) can hold NaN and inf; 8-bit cannot
        bad = int(np.count_nonzero(~np.isfinite(np.asarray(image))))
        if bad:
            raise DataError(f"{path}: {bad:,} NaN or infinite pixels; expected finite")
    return image


def _check_size(path: Path, image: Image.Image) -> None:
    """Refuse from the header alone, before a single pixel is decoded (see ``MAX_PIXELS``)."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise DataError(
            f"{path}: image is {width}x{height} ({width * height:,} pixels), more than the "
            f"{MAX_PIXELS:,} this loader decodes; downscale it first"
        )


def _size_hw(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return int(h), int(w)


def load_folder(
    path: str | os.PathLike[str],
    image_size: int | tuple[int, int] | None = None,
    grayscale: bool | None = None,
) -> ArrayDataset:
    """Load ``path/<class>/<image>`` files as an :class:`ArrayDataset`.

    Class names are the sub-folder names, sorted, so label ``i`` is the ``i``-th name. Hidden entries
    and files whose suffix is not an image type (see ``IMAGE_SUFFIXES``) are skipped.

    Args:
        path: The root folder.
        image_size: Resize every image to ``image_size`` (an int for square, or ``(height,
            width)``), bilinear. If ``None`` all images must already share one size.
        grayscale: ``True`` for 1 channel (L), ``False`` for 3 (RGB); ``None`` picks RGB when any
            image is stored in colour (an RGB/RGBA/CMYK... mode, or a palette image with non-grey
            pixels), else L. Alpha channels are dropped.

    Returns:
        ``x`` float32 ``[N, C, H, W]`` in ``[0, 1]`` (8-bit pixel / 255), ``y`` int64.

    Raises:
        DataError: The folder is missing or holds no classes, a class folder holds no images, an
            image cannot be read, has more than ``MAX_PIXELS`` pixels or NaN/inf pixels (float
            images), or sizes differ without ``image_size``; the message names the path.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders; expected {root}/<class>/<image files>")
    size = _size_hw(image_size)

    images: list[tuple[Path, Image.Image]] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            p
            for p in class_dir.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(f"{class_dir}: class folder holds no image files")
        for file in files:
            images.append((file, _read(file)))
            labels.append(label)

    if grayscale is None:
        grayscale = not any(_is_colour(image) for _, image in images)
    mode = "L" if grayscale else "RGB"
    if size is None:
        first_path, first = images[0]
        for file, image in images:
            if image.size != first.size:
                w, h = image.size
                raise DataError(
                    f"{file}: image is {h}x{w} but {first_path} is {first.height}x{first.width}; "
                    "pass image_size to resize"
                )

    arrays = []
    for _, image in images:
        converted = image.convert(mode)
        if size is not None and converted.size != (size[1], size[0]):
            converted = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(converted, dtype=np.uint8)
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    x = torch.from_numpy(np.stack(arrays).astype(np.float32)).div_(255)
    y = torch.tensor(labels, dtype=torch.int64)
    return ArrayDataset(x, y, [d.name for d in class_dirs], root.name)
