"""Fuzz the file loaders: a damaged or hostile file is loaded or refused with distiq's own error.

Each loader starts from a small valid file, which hypothesis damages at the byte level (flips,
truncation, splices, insertions; biased towards the headers, where one byte changes the most) and at
the level of the format (JSON metadata fields, YAML values, npz arrays of odd dtypes and shapes,
declared sizes far beyond the data, checksums recomputed so the damage reaches the decoder). The only
outcomes allowed are success and :class:`~distiq.errors.DistiqError` (the CLI's exit 2): any other
exception is a traceback for the user, an example running past its time limit is a hang, and address
space is capped for the whole module so an allocation sized by a file fails instead of swapping.

Deterministic (``derandomize``) and bounded: the whole module runs in well under a minute.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import signal
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import distiq as dq
from distiq.engine import weights
from distiq.errors import DistiqError
from distiq.pipeline.recipe import load_recipe
from distiq.prune import sparse_format
from distiq.quant.deploy import deploy_check

EXAMPLE_SECONDS = 2  # one example past this is a hang (they take milliseconds)
HEADROOM = 1 << 30  # address space allowed beyond what the process holds when the module starts


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,  # the SIGALRM limit below bounds each example; timing noise is no finding
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class Hang(Exception):
    """An example ran past ``EXAMPLE_SECONDS``."""


@contextlib.contextmanager
def time_limit(seconds: int):
    def expire(signum, frame):
        raise Hang(f"loader still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def loads_or_refuses(load: Callable[[], object]) -> None:
    """``load()`` succeeds or raises DistiqError; anything else (a hang included) fails the example."""
    with time_limit(EXAMPLE_SECONDS):
        try:
            load()
        except DistiqError as e:
            assert "\n" not in str(e).strip(), f"a multi-line error: {e}"


def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.fixture(scope="module", autouse=True)
def bounded_memory():
    """Cap the address space while the fuzzers run: a file that makes distiq allocate gigabytes ends
    in a MemoryError (a finding) within the example instead of exhausting the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_bytes() + HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# --- byte-level damage --------------------------------------------------------------------------


@st.composite
def damaged(draw, seed: bytes, head: int = 256) -> bytes:
    """``seed`` with one to four byte-level edits, positions biased to its first ``head`` bytes."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        where = draw(st.one_of(st.integers(0, max(min(n, head) - 1, 0)), st.integers(0, max(n - 1, 0))))
        op = draw(st.sampled_from(["flip", "byte", "truncate", "splice", "insert", "delete"]))
        if op == "flip" and n:
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and n:
            data[where] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x22, 0x7B, 0x7D]))
        elif op == "truncate":
            del data[where:]
        elif op == "splice" and n:  # a copy of another stretch of the file, over this one
            start = draw(st.integers(0, n - 1))
            chunk = data[start : start + draw(st.integers(1, 64))]
            data[where : where + len(chunk)] = chunk
        elif op == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[where : where + draw(st.integers(1, 16))]
    return bytes(data)


# --- safetensors with a model config in its metadata ----------------------------------------------


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return dq.models.create("mlp", image_size=8, hidden=(4,))


def safetensors_bytes(header: dict, blob: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + blob


def split_safetensors(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack_from("<Q", data)
    return json.loads(data[8 : 8 + n]), data[8 + n :]


@pytest.fixture(scope="module")
def weights_seed(work) -> bytes:
    return weights.save_weights(tiny_model(), work / "seed.safetensors").read_bytes()


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.sampled_from(["mlp", "lenet5", "torch.hub:load", "logging:basicConfig", "os:system", "F32", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


@st.composite
def edited_header(draw, seed: bytes) -> bytes:
    """A safetensors file whose JSON header (tensor entries or metadata config) was edited."""
    header, blob = split_safetensors(seed)
    meta = header["__metadata__"]
    config = json.loads(meta["config"])
    target = draw(st.sampled_from(["config", "config-raw", "tensor", "metadata"]))
    if target == "config":
        key = draw(st.sampled_from([*config, "name", "hidden", "num_classes", "image_size", "extra"]))
        config[key] = draw(JSON_VALUES)
        meta["config"] = json.dumps(config)
    elif target == "config-raw":
        meta["config"] = draw(st.text(max_size=40) | st.sampled_from(["[]", "null", "{}", '"mlp"', "1e999"]))
    elif target == "metadata":
        meta[draw(st.sampled_from(["format", "config", "x"]))] = draw(st.text(max_size=20))
    else:
        name = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        header[name][field] = draw(
            JSON_VALUES
            | st.lists(st.integers(-1, 2**40), max_size=5)
            | st.sampled_from(["F16", "BF16", "I64", "U8", "BOOL", "F64", "C64", "F8_E4M3"])
        )
    return safetensors_bytes(header, blob)


def load_weights_file(path: Path) -> None:
    loads_or_refuses(lambda: weights.load_model(path))
    loads_or_refuses(lambda: weights.read_config(path))
    loads_or_refuses(lambda: weights.load_weights(tiny_model(), path))


def test_safetensors_damaged_bytes(work, weights_seed):
    path = work / "bytes.safetensors"

    @fuzz(400)
    @given(damaged(weights_seed, head=200))
    def check(data):
        path.write_bytes(data)
        load_weights_file(path)

    check()


def test_safetensors_edited_header(work, weights_seed):
    path = work / "header.safetensors"

    @fuzz(500)
    @given(edited_header(weights_seed))
    def check(data):
        path.write_bytes(data)
        load_weights_file(path)

    check()


# --- .npz -----------------------------------------------------------------------------------------


def npz_bytes(arrays: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def npz_seed() -> bytes:
    rng = np.random.default_rng(0)
    x = rng.random((6, 1, 4, 4), dtype=np.float32)
    return npz_bytes({"x": x, "y": np.arange(6, dtype=np.int64) % 3})


ODD_DTYPES = ["float16", "float64", "uint8", "int8", "bool", "complex64", "U3", "S2", "V4", "M8[s]", "int64"]
ODD_SHAPES = [(), (0,), (6, 4, 4), (6, 4, 4, 3), (6, 3, 4, 4), (6, 1), (2, 2, 2, 2, 2), (7,), (0, 1, 4, 4)]
ODD_VALUES = [-1, 3, 10, 1000, 2**31, 2**40, 2**62, float("nan"), float("inf"), -float("inf"), 1e38]


def valid_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.random((6, 1, 4, 4), dtype=np.float32), "y": np.arange(6, dtype=np.int64) % 3}


@st.composite
def odd_arrays(draw) -> bytes:
    """A valid npz with one to three edits: an array's dtype, shape or one element, a key removed or
    renamed, a ``classes`` array added."""
    arrays = valid_arrays()
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(["x", "y"]))
        edit = draw(st.sampled_from(["dtype", "shape", "value", "value", "drop", "classes"]))
        if key not in arrays:
            continue
        with np.errstate(all="ignore"):
            if edit == "dtype":
                try:
                    arrays[key] = arrays[key].astype(draw(st.sampled_from(ODD_DTYPES)))
                except (ValueError, TypeError):
                    arrays[key] = np.zeros(arrays[key].shape, draw(st.sampled_from(ODD_DTYPES)))
            elif edit == "shape":
                arrays[key] = np.zeros(draw(st.sampled_from(ODD_SHAPES)), arrays[key].dtype)
            elif edit == "value" and arrays[key].size:
                flat = arrays[key].reshape(-1).copy()
                value = draw(st.sampled_from(ODD_VALUES))
                try:
                    flat[draw(st.integers(0, flat.size - 1))] = value
                except (ValueError, OverflowError, TypeError):
                    continue
                arrays[key] = flat.reshape(arrays[key].shape)
            elif edit == "drop":
                arrays[draw(st.sampled_from(["z", "X", "y.npy"]))] = arrays.pop(key)
            elif edit == "classes":
                names = draw(st.lists(st.text(max_size=3), max_size=4))
                arrays["classes"] = np.array(names, dtype="U3") if names else np.zeros((0,), "U1")
    return npz_bytes(arrays, compressed=draw(st.booleans()))


@st.composite
def huge_declared(draw) -> bytes:
    """An npz whose ``.npy`` header declares far more elements than the member holds (or a member
    that inflates far beyond its compressed size)."""
    shape = draw(
        st.sampled_from([(2**40,), (2**20, 1, 2**10, 2**10), (2**31,), (1 << 62,), (3, 1, 2**16, 2**16)])
    )
    key = draw(st.sampled_from(["x", "y"]))
    dtype = "<f4" if key == "x" else "<i8"
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x00" * 64
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{key}.npy", npy)
        other = "y" if key == "x" else "x"
        arrays = {"x": np.zeros((2, 1, 4, 4), np.float32), "y": np.zeros(2, np.int64)}
        z.writestr(f"{other}.npy", _npy(arrays[other]))
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_npz_damaged(work, npz_seed):
    path = work / "data.npz"

    @fuzz(600)
    @given(damaged(npz_seed, head=128) | odd_arrays() | huge_declared())
    def check(data):
        path.write_bytes(data)
        loads_or_refuses(lambda: dq.data.load_npz(path))

    check()


# --- image folder ---------------------------------------------------------------------------------


def png_bytes(size=(4, 4), mode="L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@st.composite
def hostile_png(draw) -> bytes:
    """A PNG with a valid checksum whose header declares huge sizes or odd modes (a decompression
    bomb when the pixels are a small deflate stream that inflates to gigabytes)."""
    width = draw(st.sampled_from([1, 4, 2**14, 2**16, 2**31 - 1, 0]))
    height = draw(st.sampled_from([1, 4, 2**14, 2**16, 2**31 - 1, 0]))
    depth, colour = draw(st.sampled_from([(8, 0), (16, 0), (1, 0), (8, 2), (8, 3), (8, 6), (16, 6), (8, 9)]))
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
    pixels = zlib.compress(b"\x00" * draw(st.sampled_from([0, 16, 1 << 16, 1 << 22])), 9)
    extra = png_chunk(b"PLTE", b"\x00" * 6) if colour == 3 else b""
    return b"\x89PNG\r\n\x1a\n" + ihdr + extra + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")


def test_image_folder_damaged(work):
    root = work / "images"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(2):
            (root / label / f"{i}.png").write_bytes(png_bytes())
    victim = root / "b" / "1.png"
    seed = png_bytes()

    @fuzz(400)
    @given(damaged(seed, head=64) | hostile_png(), st.sampled_from([None, 4]))
    def check(data, image_size):
        victim.write_bytes(data)
        loads_or_refuses(lambda: dq.data.load_folder(root, image_size=image_size))

    check()


# --- sparse .dqsp files ---------------------------------------------------------------------------


def dqsp_parts(data: bytes) -> tuple[dict, list[bytes]]:
    """The metadata and record bodies of a valid sparse file."""
    head = sparse_format._HEAD
    _, _, _, n_records, _, meta_len = head.unpack_from(data, 0)
    pos = head.size + 4
    meta = json.loads(data[pos : pos + meta_len])
    pos += meta_len + 4
    bodies = []
    for _ in range(n_records):
        (size,) = struct.unpack_from("<I", data, pos)
        bodies.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size + 4
    return meta, bodies


def dqsp_bytes(meta_b: bytes, bodies: list[bytes], n_records: int | None = None) -> bytes:
    """A sparse file around ``meta_b`` and ``bodies``, every length and checksum correct, so damage
    inside them reaches the decoder instead of stopping at a checksum."""
    u32 = struct.Struct("<I")
    records = [u32.pack(len(b)) + b + u32.pack(zlib.crc32(b)) for b in bodies]
    end = sparse_format.END
    length = sparse_format._HEAD.size + 4 + len(meta_b) + 4 + sum(map(len, records)) + len(end) + 4
    count = len(bodies) if n_records is None else n_records
    head = sparse_format._HEAD.pack(sparse_format.MAGIC, sparse_format.VERSION, 0, count, length, len(meta_b))
    data = b"".join([head, u32.pack(zlib.crc32(head)), meta_b, u32.pack(zlib.crc32(meta_b)), *records, end])
    return data + u32.pack(zlib.crc32(data))


@pytest.fixture(scope="module")
def dqsp_seed(work) -> bytes:
    model = tiny_model()
    with torch.no_grad():
        model.classifier.fc1.weight[:, ::2] = 0  # some zeros, so index codings are exercised
    path = work / "seed.dqsp"
    dq.sparse.save(model, path)
    return path.read_bytes()


@st.composite
def rechecksummed(draw, seed: bytes) -> bytes:
    """A sparse file with damaged metadata or record bodies and recomputed checksums."""
    meta, bodies = dqsp_parts(seed)
    meta_b = json.dumps(meta).encode()
    what = draw(st.sampled_from(["body", "body", "fields", "meta", "config", "records"]))
    n_records = None
    if what == "body":
        i = draw(st.integers(0, len(bodies) - 1))
        bodies[i] = draw(damaged(bodies[i], head=48))
    elif what == "fields":  # the fixed-size fields after the name: dims, codings, declared lengths
        i = draw(st.integers(0, len(bodies) - 1))
        body = bytearray(bodies[i])
        (n,) = struct.unpack_from("<H", body)
        at = 2 + n + draw(st.integers(0, 30))
        width = draw(st.sampled_from([1, 4]))
        value = draw(st.sampled_from([0, 1, 2, 3, 255, 2**16, 2**31, 2**32 - 1]))
        body[at : at + width] = (value % (256**width)).to_bytes(width, "little")
        bodies[i] = bytes(body)
    elif what == "meta":
        meta_b = draw(damaged(meta_b, head=len(meta_b)))
    elif what == "config":
        meta["config"] = draw(JSON_VALUES)
        meta_b = json.dumps(meta).encode()
    else:
        n_records = draw(st.sampled_from([0, len(bodies) - 1, len(bodies) + 1, 2**32 - 1]))
        if draw(st.booleans()):
            bodies = bodies + [bodies[0]]  # the same tensor twice
            n_records = None
    return dqsp_bytes(meta_b, bodies, n_records)


def test_sparse_damaged(work, dqsp_seed):
    path = work / "fuzz.dqsp"

    @fuzz(500)
    @given(damaged(dqsp_seed, head=96) | rechecksummed(dqsp_seed))
    def check(data):
        path.write_bytes(data)
        loads_or_refuses(lambda: sparse_format.info(path))
        loads_or_refuses(lambda: sparse_format.load_model(path))
        loads_or_refuses(lambda: sparse_format.load(tiny_model(), path))

    check()


# --- recipe YAML ----------------------------------------------------------------------------------

RECIPE = {
    "name": "fuzz",
    "data": {"name": "digits", "subsample": 100},
    "teacher": {"model": "mlp", "model_options": {"hidden": [8]}, "train": {"epochs": 1}},
    "distill": {"student": "mlp", "loss": "kd", "features": [], "freeze": [], "train": {"epochs": 1}},
    "quantize": {"skip": [], "method": "minmax"},
    "budget": {"search": {"methods": ["minmax"], "float_fallback": [0, 1]}},
}

YAML_TRICKS = [
    "!!python/object/apply:os.system ['true']",
    "!!python/name:os.system",
    "&a [*a]",
    "*undefined",
    "{a: 1, a: 2}",
    "1e999",
    ".nan",
    "0x10",
    "~",
    "'",
    '"\\x"',
    "[",
    "{",
    "? a",
    "- - -",
    "\t",
    "&a [1, 2]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]",
]


def _paths(tree: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    return out


@st.composite
def edited_recipe(draw) -> bytes:
    recipe = json.loads(json.dumps(RECIPE))
    path = draw(st.sampled_from(_paths(recipe)[1:]))
    node = recipe
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = draw(JSON_VALUES)
    text = yaml.safe_dump(recipe)
    if draw(st.booleans()):  # a raw YAML trick in place of one value
        lines = text.splitlines()
        i = draw(st.integers(0, len(lines) - 1))
        head, _, _ = lines[i].partition(":")
        lines[i] = f"{head}: {draw(st.sampled_from(YAML_TRICKS))}"
        text = "\n".join(lines)
    return text.encode()


def test_recipe_damaged(work):
    path = work / "recipe.yaml"
    seed = yaml.safe_dump(RECIPE).encode()

    @fuzz(500)
    @given(damaged(seed, head=len(seed)) | edited_recipe())
    def check(data):
        path.write_bytes(data)
        loads_or_refuses(lambda: load_recipe(path))

    check()


# --- ONNX -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_seed(work) -> bytes:
    from distiq.evaluate.latency import export_for_timing

    return export_for_timing(tiny_model(), (1, 8, 8), work / "seed.onnx").read_bytes()


@st.composite
def edited_graph(draw, seed: bytes) -> bytes:
    """An ONNX model with one structural edit: input shape or type, an op, a node removed, an
    initializer's declared dims."""
    import onnx

    model = onnx.load_from_string(seed)
    graph = model.graph
    what = draw(st.sampled_from(["input-dim", "input-type", "op", "drop-node", "init-dims", "opset"]))
    if what == "input-dim":
        dims = graph.input[0].type.tensor_type.shape.dim
        dims[draw(st.integers(1, len(dims) - 1))].dim_value = draw(st.sampled_from([1, 3, 7, 9, 2**20]))
    elif what == "input-type":
        graph.input[0].type.tensor_type.elem_type = draw(st.sampled_from([2, 3, 7, 9, 10, 11, 16]))
    elif what == "op":
        graph.node[draw(st.integers(0, len(graph.node) - 1))].op_type = draw(
            st.sampled_from(["Relu", "NoSuchOp", "Conv", "Softmax", "Identity", "Loop"])
        )
    elif what == "drop-node":
        del graph.node[draw(st.integers(0, len(graph.node) - 1))]
    elif what == "init-dims" and len(graph.initializer):
        init = graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))]
        init.dims[0] = draw(st.sampled_from([0, 1, 2**20, 2**40]))
    else:
        model.opset_import[0].version = draw(st.sampled_from([1, 7, 99]))
    return model.SerializeToString()


def test_onnx_damaged(work, onnx_seed):
    path, seed_path = work / "model.onnx", work / "seed.onnx"  # the float file deploy_check compares with
    data = dq.data.load("digits", "test").subset(range(8))

    @fuzz(300)
    @given(damaged(onnx_seed, head=128) | edited_graph(onnx_seed))
    def check(blob):
        path.write_bytes(blob)
        loads_or_refuses(lambda: dq.evaluate(path, data))
        loads_or_refuses(lambda: deploy_check(seed_path, path, batch_sizes=(), warn=False))

    check()


# --- what the fuzzers found in the loaders, pinned one by one -------------------------------------


def _one_line_refusal(load: Callable[[], object]) -> None:
    with time_limit(EXAMPLE_SECONDS), pytest.raises(DistiqError) as err:
        load()
    assert "\n" not in str(err.value)


def test_found_weights_config_option_of_the_wrong_type_is_refused(work, weights_seed):
    header, blob = split_safetensors(weights_seed)
    config = json.loads(header["__metadata__"]["config"])
    header["__metadata__"]["config"] = json.dumps(config | {"hidden": None})
    path = work / "hidden-null.safetensors"
    path.write_bytes(safetensors_bytes(header, blob))
    _one_line_refusal(lambda: weights.load_model(path))  # was: TypeError in mlp.py


def test_found_npz_declaring_a_huge_array(work):
    path = work / "huge.npz"
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }"
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)
        z.writestr("y.npy", _npy(np.zeros(2, np.int64)))
    _one_line_refusal(lambda: dq.data.load_npz(path))


def test_found_npz_label_of_2_to_the_40(work):
    path = work / "label.npz"
    np.savez(path, x=np.zeros((2, 1, 4, 4), np.float32), y=np.array([0, 2**40], np.int64))
    _one_line_refusal(lambda: dq.data.load_npz(path))  # was: built 2**40 class names


def test_found_decompression_bomb_png(work):
    root = work / "bomb"
    (root / "a").mkdir(parents=True)
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2**14, 2**15, 8, 0, 0, 0, 0))
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + ihdr
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )
    (root / "a" / "0.png").write_bytes(bomb)
    _one_line_refusal(lambda: dq.data.load_folder(root))


def test_found_sparse_error_quoting_a_name_with_a_newline_stays_one_line(work):
    path = work / "newline.dqsp"
    dq.sparse.save({"w\nx": torch.ones(3)}, path, codec="none")
    meta, bodies = dqsp_parts(path.read_bytes())
    path.write_bytes(dqsp_bytes(json.dumps(meta).encode(), [bodies[0][:-1]]))  # one byte short
    _one_line_refusal(lambda: sparse_format.info(path))


# --- what the fuzzers found and this change fixed, pinned one by one ------------------------------


def test_found_onnx_of_another_input_shape_is_refused_in_one_line(work):
    from distiq.evaluate.latency import export_for_timing

    path = export_for_timing(dq.models.create("mlp", image_size=6, hidden=(4,)), (1, 6, 6), work / "6.onnx")
    data = dq.data.load("digits", "test").subset(range(4))  # 8x8 images
    with pytest.raises(DistiqError, match=r"6.onnx: ONNX Runtime cannot run it on inputs \[1, 8, 8\]") as err:
        dq.evaluate(path, data)
    assert "\n" not in str(err.value)


def test_found_corrupt_onnx_is_refused_by_deploy_check(work, onnx_seed):
    path = work / "cut.onnx"
    path.write_bytes(onnx_seed[: len(onnx_seed) // 2])
    with pytest.raises(DistiqError, match=r"cut.onnx: not a readable ONNX file"):
        deploy_check(work / "seed.onnx", path, batch_sizes=(), warn=False)


def test_found_recipe_that_is_not_utf8_or_has_a_newline_in_a_key(work):
    path = work / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(DistiqError, match="latin1.yaml: not valid YAML"):
        load_recipe(path)
    path = work / "newline-key.yaml"
    path.write_text('teacher: {model: mlp}\ndata: {"na\\nme": digits}\n')
    with pytest.raises(DistiqError, match=r"data\.'na\\nme': Extra inputs") as err:
        load_recipe(path)
    assert "\n" not in str(err.value)
