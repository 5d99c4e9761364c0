"""Per-tensor coding of the sparse format: which elements are stored, how, and compressed how.

:mod:`distiq.prune.sparse_format` documents the file layout and checks the file; this module turns one
tensor into a record body and back. Pure functions of bytes and tensors, no file access.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from distiq.errors import DistiqError

_FIXED = struct.Struct("<BBBBI4I")  # codings, codecs, stored values, four section lengths
DTYPES = {
    1: torch.float32,
    2: torch.float16,
    3: torch.bfloat16,
    4: torch.float64,
    5: torch.int8,
    6: torch.uint8,
    7: torch.int16,
    8: torch.int32,
    9: torch.int64,
    10: torch.bool,
}
CODES = {v: k for k, v in DTYPES.items()}
_BITS = {1: torch.int32, 2: torch.int16, 3: torch.int16, 4: torch.int64}  # float code -> same-width int
INDEX_CODINGS = ("dense", "bitmask", "gaps")
VALUE_CODINGS = ("raw", "int8")
CODECS = ("none", "zlib", "lzma")
_LZMA_DICT = 1 << 22  # the decoder allocates this; matches farther back than 4 MiB are not worth it
# LZMA2 keeps lc/lp/pb in its stream, so the encoder may try several and the decoder needs none:
# (3, 0, 2) suits float bytes, (0, 0, 0) int8 values and bitmasks, (0, 2, 2) 4-byte-periodic data.
_LZMA_PROPS = ((3, 0, 2), (0, 0, 0), (0, 2, 2))
SCALE_EPS = torch.finfo(torch.float32).eps


@dataclass
class RecordInfo:
    """One tensor in a sparse file: what was stored and how many bytes it took."""

    name: str
    shape: list[int]
    dtype: str
    numel: int
    stored: int
    index: str
    values: str
    dense_bytes: int
    file_bytes: int


def _lzma_filters(lc: int = 3, lp: int = 0, pb: int = 2) -> list[dict]:
    return [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": _LZMA_DICT, "lc": lc, "lp": lp, "pb": pb}]


def _compress(data: bytes, codec: str) -> tuple[int, bytes]:
    """(codec id, bytes): the named codec, or none when that does not make the section smaller."""
    if not data or codec == "none":
        return 0, data
    if codec == "zlib":
        packed = zlib.compress(data, 9)
    else:
        tries = (lzma.compress(data, format=lzma.FORMAT_RAW, filters=_lzma_filters(*p)) for p in _LZMA_PROPS)
        packed = min(tries, key=len)
    return (CODECS.index(codec), packed) if len(packed) < len(data) else (0, data)


def _decompress(data: bytes, codec: int, raw_len: int) -> bytes:
    if codec == 0:
        out = data
    elif codec == 1:
        out = zlib.decompress(data)
    elif codec == 2:
        out = lzma.decompress(data, format=lzma.FORMAT_RAW, filters=_lzma_filters())
    else:
        raise ValueError(f"unknown codec {codec}")
    if len(out) != raw_len:
        raise ValueError(f"section decodes to {len(out)} bytes, header says {raw_len}")
    return out


def varint_encode(values: np.ndarray) -> bytes:
    """LEB128: 7 bits per byte, low bits first, high bit set on every byte but a value's last."""
    v = values.astype(np.uint64)
    nbytes = np.ones(len(v), dtype=np.int64)
    for k in range(1, 10):
        nbytes += v >= np.uint64(1 << (7 * k))
    out = np.zeros(int(nbytes.sum()), dtype=np.uint8)
    start = np.cumsum(nbytes) - nbytes
    for k in range(int(nbytes.max(initial=0))):
        sel = nbytes > k
        byte = (v[sel] >> np.uint64(7 * k)) & np.uint64(0x7F)
        out[start[sel] + k] = byte.astype(np.uint8) | np.where(nbytes[sel] > k + 1, 0x80, 0).astype(np.uint8)
    return out.tobytes()


def varint_decode(data: bytes) -> np.ndarray:
    """Inverse of :func:`varint_encode`; ``ValueError`` for a value cut short or over 63 bits."""
    b = np.frombuffer(data, dtype=np.uint8)
    if len(b) == 0:
        return np.zeros(0, dtype=np.int64)
    last = (b & 0x80) == 0
    if not last[-1]:
        raise ValueError("gaps end inside a value")
    value_of = np.cumsum(last) - last  # which value each byte belongs to
    starts = np.flatnonzero(np.r_[True, last[:-1]])
    pos = np.arange(len(b)) - starts[value_of]
    if pos.max() > 8:
        raise ValueError("a gap is longer than 9 bytes")
    out = np.zeros(int(last.sum()), dtype=np.uint64)
    np.add.at(out, value_of, (b & 0x7F).astype(np.uint64) << (7 * pos).astype(np.uint64))
    return out.astype(np.int64)


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row (dim 0): ``(q [rows, cols] int8, scale [rows] float32)``.

    The same grid as ``distiq.quant.calibrate(w, "minmax", bits=8, symmetric=True, axis=0)``.
    """
    rows = w.detach().reshape(w.shape[0], -1).float()
    if not torch.isfinite(rows).all():
        raise DistiqError("int8 values need finite weights")
    scale = torch.clamp(rows.abs().amax(dim=1) / 127.0, min=SCALE_EPS)
    q = torch.clamp(torch.round(rows / scale[:, None]), -127, 127).to(torch.int8)
    return q, scale


def _as_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def encode(name: str, t: torch.Tensor, values: str, codec: str, index: str) -> tuple[bytes, RecordInfo]:
    """One tensor to a framed record (length, body, CRC-32), choosing the smallest index coding.

    Args:
        name: State-dict key.
        t: The tensor.
        values: ``"raw"`` or ``"int8"`` (applies to float32 tensors with 2+ dimensions only).
        codec: ``"none"``, ``"zlib"`` or ``"lzma"``.
        index: ``"auto"`` or one of :data:`INDEX_CODINGS` (non-float tensors are always dense).
    """
    t = t.detach().cpu().contiguous()
    code = CODES.get(t.dtype)
    if code is None:
        raise DistiqError(f"{name}: dtype {t.dtype} cannot be stored in a sparse file")
    flat = t.reshape(-1)
    int8 = values == "int8" and t.dtype == torch.float32 and t.ndim >= 2 and t.numel() > 0
    candidates: list[tuple[int, int, int, bytes, bytes]] = []  # index coding, value coding, n, index, vals
    if int8:
        q, scale = quantize_rows(t)
        keep = (q != 0).reshape(-1)
        stored = q.reshape(-1)[keep]
        vals = _as_bytes(scale) + _as_bytes(stored)
        dense_vals = _as_bytes(scale) + _as_bytes(q)
    elif code in _BITS:
        keep = flat.view(_BITS[code]) != 0
        vals, dense_vals = _as_bytes(flat[keep]), _as_bytes(flat)
    else:
        keep = None
        vals = dense_vals = _as_bytes(flat)
    vcode = 1 if int8 else 0
    # auto: a mostly-empty tensor never codes smaller dense, so skip compressing that candidate
    density = float(keep.float().mean()) if keep is not None and keep.numel() else 1.0
    if index == "dense" or keep is None or (index == "auto" and density >= 0.5):
        candidates.append((0, vcode, flat.numel(), b"", dense_vals))
    if keep is not None and index in ("auto", "bitmask"):
        bits = np.packbits(keep.numpy(), bitorder="little").tobytes()
        candidates.append((1, vcode, int(keep.sum()), bits, vals))
    if keep is not None and index in ("auto", "gaps"):
        where = np.flatnonzero(keep.numpy())
        candidates.append((2, vcode, len(where), varint_encode(np.diff(where, prepend=-1) - 1), vals))
    best = None
    packed: dict[bytes, tuple[int, bytes]] = {}  # bitmask and gaps share their values section
    for icoding, vcoding, n, idx, val in candidates:
        if val not in packed:
            packed[val] = _compress(val, codec)
        (ic, ib), (vc, vb) = _compress(idx, codec), packed[val]
        if best is None or len(ib) + len(vb) < len(best[-2]) + len(best[-1]):
            best = (icoding, vcoding, n, ic, vc, len(idx), len(val), ib, vb)
    icoding, vcoding, n, ic, vc, idx_raw, val_raw, ib, vb = best  # type: ignore[misc]
    name_b = name.encode()
    body = b"".join(
        [
            struct.pack("<H", len(name_b)),
            name_b,
            struct.pack("<BB", code, t.ndim),
            struct.pack(f"<{t.ndim}I", *t.shape),
            _FIXED.pack(icoding, vcoding, ic, vc, n, idx_raw, len(ib), val_raw, len(vb)),
            ib,
            vb,
        ]
    )
    record = struct.pack("<I", len(body)) + body + struct.pack("<I", zlib.crc32(body))
    info = RecordInfo(
        name,
        list(t.shape),
        str(t.dtype).removeprefix("torch."),
        t.numel(),
        n,
        INDEX_CODINGS[icoding],
        VALUE_CODINGS[vcoding],
        t.numel() * t.element_size(),
        len(record),
    )
    return record, info


def decode(body: bytes) -> tuple[str, torch.Tensor, RecordInfo]:
    """One record body to ``(name, tensor, info)``; ``ValueError`` says what is inconsistent."""
    try:
        return _decode(body)
    except (struct.error, lzma.LZMAError, zlib.error, IndexError, RuntimeError) as e:
        raise ValueError(f"{type(e).__name__}: {e}") from None


def _decode(body: bytes) -> tuple[str, torch.Tensor, RecordInfo]:
    (name_len,) = struct.unpack_from("<H", body, 0)
    name = body[2 : 2 + name_len].decode()
    pos = 2 + name_len
    code, ndim = struct.unpack_from("<BB", body, pos)
    pos += 2
    dims = list(struct.unpack_from(f"<{ndim}I", body, pos))
    pos += 4 * ndim
    icoding, vcoding, ic, vc, n, idx_raw, idx_len, val_raw, val_len = _FIXED.unpack_from(body, pos)
    pos += _FIXED.size
    if code not in DTYPES or icoding > 2 or vcoding > 1 or pos + idx_len + val_len != len(body):
        raise ValueError("inconsistent record header")
    dtype = DTYPES[code]
    numel = int(np.prod(dims, dtype=np.int64)) if dims else 1
    if not 0 <= numel < 2**31 or n > numel:
        raise ValueError(f"implausible shape {dims} with {n} stored values")
    idx = _decompress(body[pos : pos + idx_len], ic, idx_raw)
    vals = _decompress(body[pos + idx_len :], vc, val_raw)
    if icoding == 0:
        keep = None
        if n != numel:
            raise ValueError(f"dense record stores {n} of {numel} values")
    elif icoding == 1:
        if len(idx) != (numel + 7) // 8:
            raise ValueError("bitmask length does not match the shape")
        all_bits = np.unpackbits(np.frombuffer(idx, np.uint8), bitorder="little")
        keep = all_bits[:numel].astype(bool)
        if all_bits[numel:].any() or int(keep.sum()) != n:
            raise ValueError("bitmask does not mark the stored values")
    else:
        gaps = varint_decode(idx)
        if (gaps >= numel).any():
            raise ValueError("a gap is longer than the tensor")
        where = np.cumsum(gaps + 1) - 1
        if len(where) != n or (n and where[-1] >= numel):
            raise ValueError("gaps do not fit the shape")
        keep = np.zeros(numel, dtype=bool)
        keep[where] = True
    if vcoding == 1:
        rows = dims[0]
        if dtype != torch.float32 or ndim < 2 or len(vals) != 4 * rows + n:
            raise ValueError("int8 values do not match the shape")
        scale = torch.frombuffer(bytearray(vals[: 4 * rows]), dtype=torch.float32)
        q = torch.frombuffer(bytearray(vals[4 * rows :]), dtype=torch.int8)
        full = torch.zeros(numel, dtype=torch.int8)
        full[torch.from_numpy(keep) if keep is not None else slice(None)] = q
        out = full.reshape(rows, -1).to(torch.float32) * scale[:, None]
    else:
        item = torch.empty(0, dtype=dtype).element_size()
        if len(vals) != n * item:
            raise ValueError(f"{len(vals)} value bytes for {n} values of {dtype}")
        stored = (
            torch.frombuffer(bytearray(vals), dtype=torch.uint8).view(dtype)
            if n
            else torch.empty(0, dtype=dtype)
        )
        out = torch.zeros(numel, dtype=dtype)
        out[torch.from_numpy(keep) if keep is not None else slice(None)] = stored
    info = RecordInfo(
        name,
        dims,
        str(dtype).removeprefix("torch."),
        numel,
        n,
        INDEX_CODINGS[icoding],
        VALUE_CODINGS[vcoding],
        numel * torch.empty(0, dtype=dtype).element_size(),
        len(body) + 8,
    )
    return name, out.reshape(dims), info
