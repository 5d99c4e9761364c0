"""The entropy coder of distiq's shared-weight files: canonical, length-limited Huffman codes of bytes,
and bit-packing of small integers.

Why by hand: no well-kept PyPI library encodes a byte stream with a length-limited canonical code
whose table fits the file's own header; the coder is small and tested against hand-worked lengths and
round trips (``tests/prune/test_prune_sharing.py``). :mod:`distiq.prune.sparse_format` chooses per
stream between it, lzma and raw bytes, whichever is smallest.
"""

from __future__ import annotations

import heapq

import numpy as np

_MAX_CODE = 15  # Huffman code lengths fit a nibble


def huffman_lengths(counts: np.ndarray, max_len: int = _MAX_CODE) -> np.ndarray:
    """Huffman code length per symbol (0 for an unused one), at most ``max_len``.

    Over-long codes are avoided the simple way (halve the counts, keeping used symbols at least 1,
    and rebuild), which costs a fraction of a percent on skewed streams. A single used symbol gets
    length 1.
    """
    counts = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) == 1:
        lengths[used] = 1
        return lengths
    c = counts[used].copy()
    while True:
        heap = [(int(f), i, (i,)) for i, f in enumerate(c)]
        heapq.heapify(heap)
        depth = np.zeros(len(c), dtype=np.int64)
        tick = len(c)
        while len(heap) > 1:
            f1, _, s1 = heapq.heappop(heap)
            f2, _, s2 = heapq.heappop(heap)
            depth[list(s1 + s2)] += 1
            heapq.heappush(heap, (f1 + f2, tick, s1 + s2))
            tick += 1
        if depth.max(initial=0) <= max_len:
            lengths[used] = depth
            return lengths
        c = np.maximum(c >> 1, 1)


def _canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical Huffman codes: by (length, symbol), each code the previous plus one, shifted on."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code = prev = 0
    for sym in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[sym]) - prev
        codes[sym], prev = code, int(lengths[sym])
        code += 1
    return codes


def huffman_encode(data: bytes) -> bytes:
    """Canonical Huffman over bytes: 256 code lengths as nibbles (128 B, or a list of the used symbols
    when fewer than 64: count u8, then symbol + length bytes), then the codes MSB first."""
    sym = np.frombuffer(data, dtype=np.uint8)
    lengths = huffman_lengths(np.bincount(sym, minlength=256))
    used = np.flatnonzero(lengths)
    if len(used) < 64:
        table = bytes([len(used)]) + b"".join(bytes([s, lengths[s]]) for s in used)
    else:
        table = b"\xff" + bytes((lengths[0::2] << 4 | lengths[1::2]).astype(np.uint8))
    codes, lens = _canonical_codes(lengths)[sym], lengths[sym]
    start = np.cumsum(lens) - lens
    bits = np.zeros(int(lens.sum()), dtype=np.uint8)
    for b in range(int(lens.max(initial=0))):
        sel = lens > b
        bits[start[sel] + b] = (codes[sel] >> (lens[sel] - 1 - b)) & 1
    return table + np.packbits(bits).tobytes()


def huffman_decode(data: bytes, n: int) -> bytes:
    """Inverse of :func:`huffman_encode` for ``n`` symbols; ``ValueError`` on any inconsistency."""
    if not data:
        raise ValueError("empty Huffman section")
    lengths = np.zeros(256, dtype=np.int64)
    if data[0] == 0xFF:
        nib = np.frombuffer(data[1:129], dtype=np.uint8).astype(np.int64)
        if len(nib) != 128:
            raise ValueError("Huffman table cut short")
        lengths[0::2], lengths[1::2], pos = nib >> 4, nib & 15, 129
    else:
        pairs = np.frombuffer(data[1 : 1 + 2 * data[0]], dtype=np.uint8).astype(np.int64)
        if len(pairs) != 2 * data[0] or (pairs[1::2] > _MAX_CODE).any() or (pairs[1::2] == 0).any():
            raise ValueError("Huffman table damaged")
        lengths[pairs[0::2]], pos = pairs[1::2], 1 + 2 * data[0]
    if n and not lengths.any() or float(np.sum(2.0 ** -lengths[lengths > 0])) > 1.0:
        raise ValueError("Huffman code lengths are not a prefix code")
    codes = _canonical_codes(lengths)
    table_sym = np.zeros(1 << _MAX_CODE, dtype=np.int64)
    table_len = np.zeros(1 << _MAX_CODE, dtype=np.int64)  # 0: no code starts with these bits
    for s in np.flatnonzero(lengths):
        lo = int(codes[s]) << (_MAX_CODE - int(lengths[s]))
        table_sym[lo : lo + (1 << (_MAX_CODE - int(lengths[s])))] = s
        table_len[lo : lo + (1 << (_MAX_CODE - int(lengths[s])))] = lengths[s]
    bits = np.unpackbits(np.frombuffer(data[pos:], dtype=np.uint8)).astype(np.int64)
    total = len(bits)
    bits = np.concatenate([bits, np.zeros(_MAX_CODE, dtype=np.int64)])
    window = np.zeros(total + 1, dtype=np.int64)
    for j in range(_MAX_CODE):
        window = (window << 1) | bits[j : j + total + 1]
    syms, lens = table_sym[window].tolist(), table_len[window].tolist()
    out = bytearray(n)
    at = 0
    for i in range(n):
        if at >= total or lens[at] == 0:
            raise ValueError("Huffman bits do not decode to the stored count")
        out[i] = syms[at]
        at += lens[at]
    if at > total or total - at >= 8:
        raise ValueError("Huffman bits do not end where the symbols do")
    return bytes(out)


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Integers in ``[0, 2**bits)`` as ``bits`` bits each, LSB first, concatenated."""
    out = np.zeros(len(values) * bits, dtype=np.uint8)
    for b in range(bits):
        out[b::bits] = (values >> b) & 1
    return np.packbits(out, bitorder="little").tobytes()


def unpack_bits(data: bytes, bits: int, n: int) -> np.ndarray:
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if len(flat) != (n * bits + 7) // 8 * 8 or flat[n * bits :].any():
        raise ValueError("packed indices do not match the stored count")
    return (flat[: n * bits].reshape(n, bits).astype(np.int64) << np.arange(bits)).sum(axis=1)
