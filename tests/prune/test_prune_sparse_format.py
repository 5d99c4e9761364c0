"""The compressed sparse format: documented layout, exact round trips, and no wrong weights from a
damaged file (every byte flipped, every cut)."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
import torch
from torch import nn

import distiq as dq
from distiq.errors import DataError, DistiqError
from distiq.prune import fold_masks_, prune_channels_, prune_magnitude_, sparse
from distiq.prune.sparse_coding import varint_decode, varint_encode
from distiq.quant.calibrate import calibrate
from distiq.quant.observers import dequantize, quantize_int


def bits(t: torch.Tensor) -> torch.Tensor:
    """A float tensor's bit patterns, so -0.0 and NaN payloads count."""
    view = {torch.float32: torch.int32, torch.float64: torch.int64}.get(t.dtype, torch.int16)
    return t.contiguous().view(view) if t.is_floating_point() else t


def pruned_mlp(amount: float = 0.8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 12), nn.ReLU(), nn.Linear(12, 3))
    prune_magnitude_(model, amount)
    return fold_masks_(model)


def odd_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 7, generator=g)
    w[w.abs() < 0.8] = 0.0
    w[0, 0], w[1, 1], w[2, 2], w[3, 3] = -0.0, float("nan"), float("inf"), -1e-40  # -0, NaN, inf, subnormal
    return {
        "w": w,
        "half": (torch.randn(5, 3, generator=g) * (torch.rand(5, 3, generator=g) > 0.5)).half(),
        "bf16": torch.randn(4, generator=g).bfloat16(),
        "f64": torch.randn(2, 2, generator=g).double(),
        "count": torch.tensor(7, dtype=torch.int64),
        "flags": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(3.5),
    }


@pytest.mark.parametrize("index", ["auto", "dense", "bitmask", "gaps"])
@pytest.mark.parametrize("codec", ["lzma", "zlib", "none"])
def test_float_round_trip_is_bit_identical(tmp_path, index, codec):
    tensors = odd_tensors()
    path = tmp_path / "t.dqsp"
    report = sparse.save(tensors, path, index=index, codec=codec)
    got, meta, info = sparse.read(path)
    assert list(got) == list(tensors) and meta["format"] == "distiq-sparse"
    for name, t in tensors.items():
        assert got[name].dtype == t.dtype and got[name].shape == t.shape, name
        assert torch.equal(bits(got[name]), bits(t)), name
    assert report.file_bytes == path.stat().st_size == info.file_bytes
    assert [r.file_bytes for r in report.records] == [r.file_bytes for r in info.records]


def test_int8_round_trip_equals_per_row_dequantized_weights(tmp_path):
    model = pruned_mlp(0.6)
    path = tmp_path / "m.dqsp"
    sparse.save(model, path, values="int8")
    loaded = sparse.load(pruned_mlp(0.0, seed=1), path)
    for name, w in model.state_dict().items():
        if w.ndim < 2:  # biases stay exact
            assert torch.equal(loaded.state_dict()[name], w), name
            continue
        qp = calibrate(w, "minmax", bits=8, symmetric=True, axis=0)  # the quantization module, as peer
        expected = dequantize(quantize_int(w, qp), qp)
        assert torch.equal(loaded.state_dict()[name], expected), name
        assert torch.all(loaded.state_dict()[name][w == 0] == 0)


def test_model_round_trip_and_bytes_per_layer(tmp_path):
    model = pruned_mlp(0.9)
    path = tmp_path / "m.dqsp"
    report = sparse.save(model, path)
    assert [r.name for r in report.records] == list(model.state_dict())
    assert report.dense_bytes == 4 * sum(p.numel() for p in model.parameters())
    w1 = next(r for r in report.records if r.name == "1.weight")
    assert w1.stored == int(torch.count_nonzero(model[1].weight)) and w1.index in ("bitmask", "gaps")
    assert sum(r.file_bytes for r in report.records) < report.file_bytes
    fresh = pruned_mlp(0.0, seed=3)
    sparse.load(fresh, path)
    for k, v in model.state_dict().items():
        assert torch.equal(bits(fresh.state_dict()[k]), bits(v)), k


def test_masked_model_saves_its_effective_weights(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4))
    prune_magnitude_(model, 0.5)  # masks still attached
    sparse.save(model, tmp_path / "m.dqsp")
    got, _, _ = sparse.read(tmp_path / "m.dqsp")
    assert set(got) == {"0.weight", "0.bias"}
    assert torch.equal(got["0.weight"], model[0].weight.detach())


def test_layout_matches_the_documentation(tmp_path):
    x = torch.tensor([0.0, 1.5, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0])
    path = tmp_path / "x.dqsp"
    sparse.save({"x": x}, path, index="bitmask", codec="none")
    data = path.read_bytes()
    magic, version, flags, records, length, meta_len = struct.unpack_from("<8sHHIQI", data, 0)
    assert (magic, version, flags, records, length) == (b"DQSPARSE", 1, 0, 1, len(data))
    assert struct.unpack_from("<I", data, 28)[0] == zlib.crc32(data[:28])
    meta = json.loads(data[32 : 32 + meta_len])
    assert meta["format"] == "distiq-sparse"
    pos = 32 + meta_len + 4
    (body_len,) = struct.unpack_from("<I", data, pos)
    body = data[pos + 4 : pos + 4 + body_len]
    assert struct.unpack_from("<I", data, pos + 4 + body_len)[0] == zlib.crc32(body)
    assert body[:3] == b"\x01\x00x" and body[3:5] == b"\x01\x01"  # name "x", float32, 1 dim
    assert struct.unpack_from("<I", body, 5)[0] == 10
    fields = struct.unpack_from("<BBBBI4I", body, 9)
    assert fields == (1, 0, 0, 0, 3, 2, 2, 12, 12)  # bitmask, raw, no codecs, 3 values, 2 + 12 bytes
    assert body[33:35] == bytes([0b00010010, 0b00000010])  # positions 1, 4 | 9, LSB first
    assert torch.equal(torch.frombuffer(bytearray(body[35:]), dtype=torch.float32), x[x != 0])
    assert data[-12:-4] == b"DQSPEND\x00" and struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])


def test_varint_known_values():
    import numpy as np

    encoded = varint_encode(np.array([0, 1, 127, 128, 300, 2**35]))
    assert encoded[:7] == bytes([0x00, 0x01, 0x7F, 0x80, 0x01, 0xAC, 0x02])  # 300 = 0xAC 0x02 (LEB128)
    assert varint_decode(encoded).tolist() == [0, 1, 127, 128, 300, 2**35]


def small_file(tmp_path) -> bytes:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    prune_magnitude_(model, 0.5)
    path = tmp_path / "small.dqsp"
    sparse.save(fold_masks_(model), path, values="int8")
    return path.read_bytes()


def test_every_flipped_byte_is_rejected(tmp_path):
    data = small_file(tmp_path)
    bad = tmp_path / "bad.dqsp"
    for i in range(len(data)):
        for mask in (0xFF, 0x01):
            damaged = bytearray(data)
            damaged[i] ^= mask
            bad.write_bytes(bytes(damaged))
            with pytest.raises(DataError, match=r"bad\.dqsp: (corrupt sparse|not a distiq sparse)"):
                sparse.read(bad)


def test_every_cut_and_any_extra_byte_is_rejected(tmp_path):
    data = small_file(tmp_path)
    bad = tmp_path / "cut.dqsp"
    for n in range(len(data)):
        bad.write_bytes(data[:n])
        with pytest.raises(DataError, match=r"cut\.dqsp: (corrupt sparse|not a distiq sparse)"):
            sparse.read(bad)
    bad.write_bytes(data + b"\x00")
    with pytest.raises(DataError, match="trailing"):
        sparse.read(bad)


def test_a_damaged_record_is_named(tmp_path):
    data = bytearray(small_file(tmp_path))
    name = b"2.weight"
    at = data.index(name) + len(name) + 30  # inside that record's body
    data[at] ^= 0x10
    (tmp_path / "r.dqsp").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"record \d \('2\.weight'\) checksum"):
        sparse.read(tmp_path / "r.dqsp")


def test_other_files_and_mismatched_models(tmp_path):
    with pytest.raises(DataError, match="not found"):
        sparse.read(tmp_path / "missing.dqsp")
    other = tmp_path / "w.safetensors"
    dq.save_weights(nn.Linear(3, 3), other)
    with pytest.raises(DataError, match="not a distiq sparse"):
        sparse.read(other)
    sparse.save(pruned_mlp(), tmp_path / "m.dqsp")
    with pytest.raises(DistiqError, match="do not fit"):
        sparse.load(nn.Sequential(nn.Linear(3, 3)), tmp_path / "m.dqsp")


def test_channel_pruned_model_loads_into_a_fresh_one(tmp_path):
    torch.manual_seed(0)
    model = dq.models.create("vgg-small", image_size=8, width=0.25)
    prune_channels_(model, 0.5, scope="global")
    sparse.save(model, tmp_path / "p.dqsp")
    rebuilt = sparse.load_model(tmp_path / "p.dqsp")  # config from the file, shapes from the records
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(rebuilt.eval()(x), model.eval()(x))
