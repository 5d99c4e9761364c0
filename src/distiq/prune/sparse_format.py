"""A compact, checksummed file format for pruned (and optionally int8) weights: ``dq.sparse``.

Why not safetensors: it stores every zero. Deep Compression (Han et al., 2016) stores a pruned
network as the positions of the surviving weights plus their (quantized) values, entropy-coded; this
is that, with the positions as a bitmask or as gaps between them, whichever codes smaller per tensor,
and every byte covered by a CRC-32 so a damaged file is rejected instead of yielding wrong weights.

File layout (version 1, all integers little-endian)::

    header   magic "DQSPARSE" (8) | version u16 | flags u16 (0) | records u32 | file length u64
             | metadata length u32 | CRC-32 of the previous 28 bytes u32
    metadata UTF-8 JSON object ({"format": "distiq-sparse", "config": model config}) | CRC-32 u32
    record*  body length u32 | body | CRC-32 of body u32
    footer   "DQSPEND\\0" (8) | CRC-32 of every byte before the footer's CRC u32

    body     name length u16 | name UTF-8 | dtype u8 | ndim u8 | dims u32 * ndim
             | index coding u8 (0 dense, 1 bitmask, 2 gaps) | value coding u8 (0 raw, 1 int8 per row)
             | index codec u8 | value codec u8 (0 none, 1 zlib, 2 raw LZMA2) | stored values u32
             | index raw length u32 | index length u32 | values raw length u32 | values length u32
             | index bytes | values bytes

* ``dense``: no index, every element stored. ``bitmask``: one bit per element (LSB first), set where
  a value is stored. ``gaps``: for each stored element, the number of skipped elements before it, as
  LEB128 varints. A float element is "stored" when its bit pattern is not all zeros, so ``-0.0`` and
  NaN survive and a float round trip is bit-identical.
* ``raw`` values: the stored elements in the tensor's dtype. ``int8``: per row (first dimension) a
  float32 scale ``max|w| / 127`` (at least float32 eps), then ``round(w / scale)`` clamped to ±127 for
  the elements whose integer is not 0; the loaded weight is ``q * scale`` in float32, exactly.
* Index and values are compressed separately (their statistics differ); a section that compression
  would not shrink is stored as is.

The loader checks, in order: the size and magic, the header CRC and version, the file length (a cut
file), each record's CRC (naming the tensor), the file CRC, then that every decoded length agrees
with the shape; any failure raises :class:`~distiq.errors.DataError` naming the file and what failed.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.table import Table
from torch import nn

from distiq.engine.weights import check_finite
from distiq.errors import DataError, DistiqError
from distiq.io import write_bytes_atomic
from distiq.models import create_from_config

from .magnitude import apply_mask, fold_masks_, masked_layers
from .sparse_coding import CODECS, INDEX_CODINGS, RecordInfo, decode, encode
from .structured import layer_shapes, resize_to_shapes_

MAGIC, END, VERSION = b"DQSPARSE", b"DQSPEND\x00", 1
_HEAD = struct.Struct("<8sHHIQI")  # + CRC u32 = 32 bytes
_U32 = struct.Struct("<I")


@dataclass
class SparseReport:
    """Bytes per tensor of a sparse file, against the dense tensors' bytes."""

    path: str
    records: list[RecordInfo] = field(default_factory=list)
    file_bytes: int = 0

    @property
    def dense_bytes(self) -> int:
        return sum(r.dense_bytes for r in self.records)

    @property
    def ratio(self) -> float:
        """Dense bytes / file bytes (header and metadata included)."""
        return self.dense_bytes / max(self.file_bytes, 1)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "file_bytes": self.file_bytes,
            "dense_bytes": self.dense_bytes,
            "ratio": self.ratio,
            "records": [asdict(r) for r in self.records],
        }

    def rich_table(self) -> Table:
        table = Table(title=f"{self.path}: {self.file_bytes:,} bytes, {self.ratio:.1f}x smaller than dense")
        for col in ("tensor", "shape", "stored", "index", "values", "dense B", "file B", "x"):
            table.add_column(col, justify="left" if col in ("tensor", "index", "values") else "right")
        for r in self.records:
            ratio = f"{r.dense_bytes / max(r.file_bytes, 1):.1f}"
            table.add_row(
                r.name,
                "x".join(map(str, r.shape)) or "()",
                f"{r.stored:,}",
                r.index,
                r.values,
                f"{r.dense_bytes:,}",
                f"{r.file_bytes:,}",
                ratio,
            )
        return table


def effective_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with pruning masks folded in: masked ``weight_orig`` as ``weight``."""
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("_mask") and key.removesuffix("_mask") + "_orig" in state:
            continue
        if key.endswith("_orig") and key.removesuffix("_orig") + "_mask" in state:
            base = key.removesuffix("_orig")
            out[base] = apply_mask(value, state[base + "_mask"])
        else:
            out[key] = value
    return out


def save(
    model: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    values: str = "float32",
    codec: str = "lzma",
    index: str = "auto",
) -> SparseReport:
    """Write ``model``'s weights (or a state dict) to ``path`` in the sparse format, atomically.

    Args:
        model: A module (pruning masks, if attached, are folded in) or a mapping of tensors.
        path: Output file (conventionally ``.dqsp``).
        values: ``"float32"`` stores values exactly; ``"int8"`` stores float32 weight matrices (ndim >= 2)
            as per-row symmetric int8 with a float32 scale per row (biases, BatchNorm stay exact).
        codec: ``"lzma"`` (smallest), ``"zlib"`` (faster) or ``"none"``.
        index: ``"auto"`` (smallest per tensor), ``"dense"``, ``"bitmask"`` or ``"gaps"``.

    Returns:
        The bytes per tensor and in total.
    """
    if values not in ("float32", "int8"):
        raise DistiqError(f"values: expected float32 or int8, got {values!r}")
    if codec not in CODECS:
        raise DistiqError(f"codec: expected one of {', '.join(CODECS)}, got {codec!r}")
    if index not in ("auto", *INDEX_CODINGS):
        raise DistiqError(f"index: expected auto, dense, bitmask or gaps, got {index!r}")
    state = effective_state(model) if isinstance(model, nn.Module) else dict(model)
    meta = {"format": "distiq-sparse", "values": values}
    if getattr(model, "config", None) is not None:
        meta["config"] = model.config  # type: ignore[union-attr]
    meta_b = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
    report = SparseReport(str(path))
    records = []
    for name, tensor in state.items():
        record, info = encode(name, tensor, "int8" if values == "int8" else "raw", codec, index)
        records.append(record)
        report.records.append(info)
    length = _HEAD.size + 4 + len(meta_b) + 4 + sum(map(len, records)) + len(END) + 4
    head = _HEAD.pack(MAGIC, VERSION, 0, len(records), length, len(meta_b))
    data = b"".join([head, _U32.pack(zlib.crc32(head)), meta_b, _U32.pack(zlib.crc32(meta_b)), *records, END])
    data += _U32.pack(zlib.crc32(data))
    assert len(data) == length
    write_bytes_atomic(path, data)
    report.file_bytes = length
    return report


def _fail(path: Path, what: str) -> DataError:
    return DataError(f"{path}: corrupt sparse weights file: {what}")


def read(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict, SparseReport]:
    """Decode a sparse file: ``(tensors by name, metadata, report)``; never returns damaged tensors.

    Raises:
        DataError: the file is missing, not a sparse file, cut short, or any checksum or length fails;
            the message names the file and the check (and the tensor, for a damaged record).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: sparse weights file not found")
    data = path.read_bytes()
    if len(data) < _HEAD.size + 4:
        raise _fail(path, f"{len(data)} bytes, shorter than the {_HEAD.size + 4}-byte header")
    magic, version, _flags, n_records, length, meta_len = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise DataError(f"{path}: not a distiq sparse weights file (magic {magic!r})")
    if zlib.crc32(data[: _HEAD.size]) != _U32.unpack_from(data, _HEAD.size)[0]:
        raise _fail(path, "header checksum mismatch")
    if version != VERSION:
        raise DataError(f"{path}: sparse format version {version}; this distiq reads version {VERSION}")
    if len(data) != length:
        cut = "truncated" if len(data) < length else "has trailing bytes"
        raise _fail(path, f"{cut}: header says {length} bytes, file has {len(data)}")
    pos = _HEAD.size + 4
    meta_b = data[pos : pos + meta_len]
    pos += meta_len
    if pos + 4 > length or zlib.crc32(meta_b) != _U32.unpack_from(data, pos)[0]:
        raise _fail(path, "metadata checksum mismatch")
    pos += 4
    bodies = []
    for i in range(n_records):
        if pos + 4 > length - len(END) - 4:
            raise _fail(path, f"record {i} starts past the end of the records")
        (size,) = _U32.unpack_from(data, pos)
        end = pos + 4 + size
        if end + 4 > length - len(END) - 4:
            raise _fail(path, f"record {i} runs past the end of the records")
        body = data[pos + 4 : end]
        if zlib.crc32(body) != _U32.unpack_from(data, end)[0]:
            raise _fail(path, f"record {i} ({_peek_name(body)}) checksum mismatch")
        bodies.append(body)
        pos = end + 4
    if data[pos : pos + len(END)] != END or pos + len(END) + 4 != length:
        raise _fail(path, "footer not where the records end")
    if zlib.crc32(data[: length - 4]) != _U32.unpack_from(data, length - 4)[0]:
        raise _fail(path, "file checksum mismatch")
    try:
        meta = json.loads(meta_b)
    except ValueError as e:
        raise _fail(path, f"metadata is not JSON ({e})") from None
    tensors: dict[str, torch.Tensor] = {}
    report = SparseReport(str(path), file_bytes=length)
    for i, body in enumerate(bodies):
        try:
            name, tensor, info = decode(body)
        except ValueError as e:  # decode turns every inconsistency into a ValueError
            raise _fail(path, f"record {i} ({_peek_name(body)}): {e}") from None
        if name in tensors:
            raise _fail(path, f"record {i}: tensor {name!r} appears twice")
        tensors[name] = tensor
        report.records.append(info)
    return tensors, meta, report


def _peek_name(body: bytes) -> str:
    try:
        (n,) = struct.unpack_from("<H", body, 0)
        return repr(body[2 : 2 + n].decode())  # quoted: a damaged name must not break the one line
    except (struct.error, UnicodeDecodeError):
        return "name unreadable"


def info(path: str | os.PathLike[str]) -> SparseReport:
    """Bytes per tensor of a sparse file (the whole file is verified on the way)."""
    return read(path)[2]


def load(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a sparse file's weights into ``model`` in place and return it.

    A model built from the original config (unpruned) is first channel-pruned to the file's shapes,
    so a structurally pruned model loads into ``dq.models.create(...)``; masks, if attached, are folded.

    Raises:
        DataError: a damaged file (see :func:`read`), or a tensor with NaN/inf values.
        DistiqError: tensors that do not fit the model (names and shapes listed).
    """
    tensors, _, _ = read(path)
    check_finite(tensors, path)  # read keeps NaN bit-exact; a model must not silently run on it
    if masked_layers(model):
        fold_masks_(model)
    shapes = {k: list(v.shape) for k, v in tensors.items()}
    if set(shapes) == set(layer_shapes(model)) and shapes != layer_shapes(model):
        resize_to_shapes_(model, shapes)
    own = model.state_dict()
    wrong = [f"{k}: missing from file" for k in own if k not in tensors]
    wrong += [f"{k}: not in model" for k in tensors if k not in own]
    wrong += [
        f"{k}: file {shapes[k]}, model {list(own[k].shape)}"
        for k in tensors
        if k in own and shapes[k] != list(own[k].shape)
    ]
    if wrong:
        shown = "; ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else "")
        raise DistiqError(f"{path}: weights do not fit {type(model).__name__}: {shown}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})
    return model


def load_model(path: str | os.PathLike[str], *, allow_code: str | Iterable[str] = ()) -> nn.Module:
    """Rebuild the model from the config stored in the file, then :func:`load` its weights.

    ``allow_code``: the ``"package.module:factory"`` references the file may name (see
    :func:`distiq.models.create_from_config`); any other is refused before anything is imported.
    """
    _, meta, _ = read(path)
    if not isinstance(meta, dict) or "config" not in meta:
        raise DistiqError(f"{path}: no model config in the file; create the model and use load(model, path)")
    return load(create_from_config(meta["config"], allow_code=allow_code, source=str(path)), path)
