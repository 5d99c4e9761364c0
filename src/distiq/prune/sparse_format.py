"""A compact, checksummed file format for pruned (optionally int8 or weight-shared) weights: ``dq.sparse``.

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

Version 2 is the same file with weight-shared records (:mod:`distiq.prune.sharing`, Deep Compression's
second and third stages): a shared layer's record marks its dtype byte with ``0x80`` and stores the
codebook, the positions and the code index of each stored weight, each stream coded the smallest of
raw, LZMA2 and canonical Huffman (layout above :func:`encode_shared`); other tensors are version-1
records. ``save`` writes version 2 only for a shared model, so pruned and int8 files stay version 1.

The loader checks, in order: the size and magic, the header CRC and version, the file length (a cut
file), each record's CRC (naming the tensor), the file CRC, then that every decoded length agrees
with the shape; any failure raises :class:`~distiq.errors.DataError` naming the file and what failed.
"""

from __future__ import annotations

import json
import lzma
import os
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.table import Table
from torch import nn

from distiq.engine.weights import check_finite
from distiq.errors import DataError, DistiqError
from distiq.io import write_bytes_atomic
from distiq.models import create_from_config

from .entropy import huffman_decode, huffman_encode, pack_bits, unpack_bits
from .magnitude import apply_mask, fold_masks_, masked_layers
from .sharing import fold_sharing_, shared_weight
from .sparse_coding import (
    CODECS,
    CODES,
    INDEX_CODINGS,
    RecordInfo,
    _compress,
    _decompress,
    decode,
    encode,
    varint_decode,
    varint_encode,
)
from .structured import layer_shapes, resize_to_shapes_

MAGIC, END, VERSION = b"DQSPARSE", b"DQSPEND\x00", 1
SHARED_VERSION = 2  # a file with shared records: older readers refuse it by version, not by a bad record
VALUES = ("float32", "int8", "shared")
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
    """The model's state dict with pruning masks and shared weights folded in: masked ``weight_orig``,
    or ``[0, *weight_codebook][weight_index]``, as ``weight``."""
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("_mask") and key.removesuffix("_mask") + "_orig" in state:
            continue
        if key.endswith("_index") and key.removesuffix("_index") + "_codebook" in state:
            continue
        if key.endswith("_codebook") and key.removesuffix("_codebook") + "_index" in state:
            base = key.removesuffix("_codebook")
            out[base] = shared_weight(value.detach(), state[base + "_index"])
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
    values: str | None = None,
    codec: str = "lzma",
    index: str = "auto",
) -> SparseReport:
    """Write ``model``'s weights (or a state dict) to ``path`` in the sparse format, atomically.

    Args:
        model: A module (pruning masks, if attached, are folded in) or a mapping of tensors.
        path: Output file (conventionally ``.dqsp``).
        values: ``"float32"`` stores values exactly; ``"int8"`` stores float32 weight matrices (ndim >= 2)
            as per-row symmetric int8 with a float32 scale per row (biases, BatchNorm stay exact);
            ``"shared"`` stores each weight-shared layer (:func:`distiq.prune.share_weights`) as its
            codebook, positions and code indices, each the smaller of Huffman and LZMA (file version 2),
            exactly. ``None``: ``"shared"`` when the model has shared layers, else ``"float32"``.
        codec: ``"lzma"`` (smallest), ``"zlib"`` (faster) or ``"none"``.
        index: ``"auto"`` (smallest per tensor), ``"dense"``, ``"bitmask"`` or ``"gaps"``.

    Returns:
        The bytes per tensor and in total.
    """
    shared = shared_tensors(model) if isinstance(model, nn.Module) else {}
    if values is None:
        values = "shared" if shared else "float32"
    if values not in VALUES:
        raise DistiqError(f"values: expected float32, int8 or shared, got {values!r}")
    if values == "shared" and not shared:
        raise DistiqError("values 'shared': the model has no shared layers (see dq.prune.share_weights)")
    if codec not in CODECS:
        raise DistiqError(f"codec: expected one of {', '.join(CODECS)}, got {codec!r}")
    if index not in ("auto", *INDEX_CODINGS):
        raise DistiqError(f"index: expected auto, dense, bitmask or gaps, got {index!r}")
    state = effective_state(model) if isinstance(model, nn.Module) else dict(model)
    meta: dict = {"format": "distiq-sparse", "values": values}
    by_weight = shared if values == "shared" else {}
    if getattr(model, "config", None) is not None:
        meta["config"] = model.config  # type: ignore[union-attr]
    meta_b = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
    report = SparseReport(str(path))
    records = []
    for name, tensor in state.items():
        if name in by_weight:  # shared, or plain float32 where that is smaller (a tiny bias): both exact
            record, info = encode_shared(name, *by_weight[name])
            plain = encode(name, tensor, "raw", codec, index)
            record, info = min((record, info), plain, key=lambda r: len(r[0]))
        else:
            record, info = encode(name, tensor, "int8" if values == "int8" else "raw", codec, index)
        records.append(record)
        report.records.append(info)
    length = _HEAD.size + 4 + len(meta_b) + 4 + sum(map(len, records)) + len(END) + 4
    version = SHARED_VERSION if by_weight else VERSION
    head = _HEAD.pack(MAGIC, version, 0, len(records), length, len(meta_b))
    data = b"".join([head, _U32.pack(zlib.crc32(head)), meta_b, _U32.pack(zlib.crc32(meta_b)), *records, END])
    data += _U32.pack(zlib.crc32(data))
    assert len(data) == length
    write_bytes_atomic(path, data)
    report.file_bytes = length
    return report


def shared_tensors(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``(codebook, index)`` of every shared tensor, by the state-dict key its values are saved under."""
    state = model.state_dict()
    return {
        k.removesuffix("_codebook"): (v, state[k.removesuffix("_codebook") + "_index"])
        for k, v in state.items()
        if k.endswith("_codebook") and k.removesuffix("_codebook") + "_index" in state
    }


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
    if version not in (VERSION, SHARED_VERSION):
        raise DataError(
            f"{path}: sparse format version {version}; this distiq reads versions "
            f"{VERSION} and {SHARED_VERSION}"
        )
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
            shared = version == SHARED_VERSION and _dtype_code(body) == SHARED_DTYPE
            name, tensor, info = (decode_shared if shared else decode)(body)
        except ValueError as e:  # decode turns every inconsistency into a ValueError
            raise _fail(path, f"record {i} ({_peek_name(body)}): {e}") from None
        if name in tensors:
            raise _fail(path, f"record {i}: tensor {name!r} appears twice")
        tensors[name] = tensor
        report.records.append(info)
    return tensors, meta, report


def _dtype_code(body: bytes) -> int | None:
    """The dtype byte after a record's name (:data:`SHARED_DTYPE` marks a shared record)."""
    try:
        (n,) = struct.unpack_from("<H", body, 0)
        return body[2 + n] if 2 + n < len(body) else None
    except struct.error:
        return None


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
    if shared_tensors(model):
        fold_sharing_(model)  # the file's weights are plain tensors, bit-identical to the shared ones
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


# --- shared (weight-shared) records: codebook + positions + code indices, each stream entropy-coded ---
#
# body     name length u16 | name | dtype u8 (SHARED_DTYPE: float32 | 0x80) | ndim u8 | dims u32 * ndim
#          | centroids K u16 | code bits u8 | stored values u32 | section * 3 (codebook, positions, indices)
# section  form u8 | codec u8 (0 none, 2 LZMA2, 3 Huffman) | raw length varint | length varint | bytes
#
# codebook: K float32 (form 0). positions (which elements are not pruned): form 1 bitmask or 2 gaps, as
# in plain records. indices (the centroid of each stored element, in element order): form 0 bit-packed
# at ``code bits`` (LSB first), or 1 one byte each. The encoder tries every form with every codec and
# keeps the smallest per section; the decoder reads what the file says. The weight is
# ``[0, *codebook][1 + index]`` at the stored positions and +0.0 elsewhere.

SHARED_DTYPE = 0x80 | CODES[torch.float32]  # a version-1 reader would call this an unknown dtype
_SHARED_FIXED = struct.Struct("<HBI")


def _read_varint(body: bytes, pos: int) -> tuple[int, int]:
    """One LEB128 value at ``pos``: ``(value, position after it)``; ``ValueError`` when cut or too long."""
    value = shift = 0
    while True:
        if pos >= len(body) or shift > 56:
            raise ValueError("a section length is cut short")
        byte = body[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


HUFFMAN = 3
_STREAM_CODECS = {0: "none", 2: "lzma", HUFFMAN: "huffman"}


def _smallest(forms: Mapping[int, bytes], huffman: bool = True) -> tuple[int, int, int, bytes]:
    """(form, codec, raw length, bytes): the smallest coding of any of ``forms`` under any codec."""
    best: tuple[int, int, int, bytes] | None = None
    for form, raw in forms.items():
        tries = [_compress(raw, "lzma")]
        if huffman and raw:
            tries.append((HUFFMAN, huffman_encode(raw)))
        for codec, packed in tries:
            if best is None or len(packed) < len(best[3]):
                best = (form, codec, len(raw), packed)
    return best  # type: ignore[return-value]


def _unstream(form_codec_raw: tuple[int, int, int], data: bytes) -> bytes:
    _form, codec, raw = form_codec_raw
    if codec == HUFFMAN:
        return huffman_decode(data, raw)
    if codec not in (0, 2):
        raise ValueError(f"unknown codec {codec}")
    return _decompress(data, codec, raw)


def encode_shared(name: str, codebook: torch.Tensor, index: torch.Tensor) -> tuple[bytes, RecordInfo]:
    """A shared layer (``weight_codebook``, ``weight_index``) as a framed record body, smallest coding."""
    book = codebook.detach().cpu().float().contiguous()
    idx = index.detach().cpu().to(torch.int64).reshape(-1).numpy()
    k = len(book)
    if k > 256 or (idx < 0).any() or (idx > k).any():
        raise DistiqError(f"{name}: index does not fit a codebook of {k} centroids (at most 256)")
    code_bits = max(1, (k - 1).bit_length())
    keep = idx != 0
    where = np.flatnonzero(keep)
    sym = (idx[keep] - 1).astype(np.uint8)
    sections = [
        (0, 0, len(book) * 4, book.numpy().tobytes()),
        _smallest(
            {
                1: np.packbits(keep, bitorder="little").tobytes(),
                2: varint_encode(np.diff(where, prepend=-1) - 1),
            }
        ),
        _smallest({0: pack_bits(sym, code_bits), 1: sym.tobytes()}),
    ]
    name_b = name.encode()
    dims = list(index.shape)
    parts = [struct.pack("<H", len(name_b)), name_b, struct.pack("<BB", SHARED_DTYPE, len(dims))]
    parts += [struct.pack(f"<{len(dims)}I", *dims), _SHARED_FIXED.pack(k, code_bits, len(where))]
    for form, codec, raw, data in sections:
        parts += [bytes([form, codec]), varint_encode(np.array([raw, len(data)])), data]
    body = b"".join(parts)
    record = _U32.pack(len(body)) + body + _U32.pack(zlib.crc32(body))
    return record, _shared_info(name, dims, len(where), k, code_bits, sections, len(record))


def _shared_info(name, dims, n, k, code_bits, sections, size) -> RecordInfo:
    (_, _, _, _), (pform, pcodec, _, _), (iform, icodec, _, _) = sections
    return RecordInfo(
        name,
        dims,
        "float32",
        int(np.prod(dims, dtype=np.int64)),
        n,
        f"{INDEX_CODINGS[pform]}+{_STREAM_CODECS[pcodec]}",
        f"{k} centroids, {code_bits}-bit {('packed', 'bytes')[iform]}+{_STREAM_CODECS[icodec]}",
        4 * int(np.prod(dims, dtype=np.int64)),
        size,
    )


def decode_shared(body: bytes) -> tuple[str, torch.Tensor, RecordInfo]:
    """A shared record body to ``(name, float32 weight, info)``; ``ValueError`` says what is wrong."""
    try:
        return _decode_shared(body)
    except (struct.error, lzma.LZMAError, IndexError, RuntimeError, UnicodeDecodeError) as e:
        raise ValueError(f"{type(e).__name__}: {e}") from None


def _decode_shared(body: bytes) -> tuple[str, torch.Tensor, RecordInfo]:
    (name_len,) = struct.unpack_from("<H", body, 0)
    name = body[2 : 2 + name_len].decode()
    pos = 2 + name_len
    code, ndim = struct.unpack_from("<BB", body, pos)
    dims = list(struct.unpack_from(f"<{ndim}I", body, pos + 2))
    pos += 2 + 4 * ndim
    k, code_bits, n = _SHARED_FIXED.unpack_from(body, pos)
    pos += _SHARED_FIXED.size
    numel = int(np.prod(dims, dtype=np.int64)) if dims else 1
    if code != SHARED_DTYPE or k > 256 or code_bits != max(1, (k - 1).bit_length()):
        raise ValueError("inconsistent shared record header")
    if not 0 <= numel < 2**31 or n > numel or (n and not k):
        raise ValueError(f"implausible shape {dims} with {n} stored values")
    sections, streams = [], []
    for _ in range(3):
        form, codec = struct.unpack_from("<BB", body, pos)
        raw, pos = _read_varint(body, pos + 2)
        size, pos = _read_varint(body, pos)
        if raw > 9 * numel + 1024:  # a gap takes at most 9 bytes; a codebook at most 1 KiB
            raise ValueError(f"a section claims {raw} bytes for {numel} elements")
        if pos + size > len(body):
            raise ValueError("a section runs past the record")
        sections.append((form, codec, raw, b""))
        streams.append(_unstream((form, codec, raw), body[pos : pos + size]))
        pos += size
    if pos != len(body):
        raise ValueError("bytes after the last section")
    (bform, _, _, _), (pform, _, _, _), (iform, _, _, _) = sections
    book_b, pos_b, idx_b = streams
    if bform != 0 or len(book_b) != 4 * k:
        raise ValueError("codebook does not match the centroid count")
    if pform == 1:
        if len(pos_b) != (numel + 7) // 8:
            raise ValueError("bitmask length does not match the shape")
        all_bits = np.unpackbits(np.frombuffer(pos_b, np.uint8), bitorder="little")
        keep = all_bits[:numel].astype(bool)
        if all_bits[numel:].any() or int(keep.sum()) != n:
            raise ValueError("bitmask does not mark the stored values")
        where = np.flatnonzero(keep)
    elif pform == 2:
        gaps = varint_decode(pos_b)
        where = np.cumsum(gaps + 1) - 1
        if len(where) != n or (n and (gaps >= numel).any() or n and where[-1] >= numel):
            raise ValueError("gaps do not fit the shape")
    else:
        raise ValueError(f"unknown position form {pform}")
    if iform == 0:
        sym = unpack_bits(idx_b, code_bits, n)
    elif iform == 1 and len(idx_b) == n:
        sym = np.frombuffer(idx_b, dtype=np.uint8).astype(np.int64)
    else:
        raise ValueError("indices do not match the stored count")
    if n and sym.max() >= k:
        raise ValueError(f"an index points past the {k} centroids")
    book = torch.frombuffer(bytearray(book_b), dtype=torch.float32) if k else torch.zeros(0)
    index = torch.zeros(numel, dtype=torch.int16)
    index[torch.from_numpy(where)] = torch.from_numpy(sym + 1).to(torch.int16)
    weight = torch.cat([torch.zeros(1), book])[index.long()].reshape(dims)
    return name, weight, _shared_info(name, dims, n, k, code_bits, sections, len(body) + 8)
