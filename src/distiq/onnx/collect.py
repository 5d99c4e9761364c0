"""Activations of an ONNX model, read through ONNX Runtime and streamed into distiq's calibrators.

Why ORT and not a re-implementation: a file from elsewhere is only defined by what its runtime
computes. A copy of the graph lists the tensors to calibrate as extra graph outputs; each calibration
batch runs once, every tensor goes to its own :class:`~distiq.quant.modules.ActQuant` (the quantizer the
torch path calibrates with, so the same calibrator and options give the same grid) and is dropped, so
no activation is kept beyond one batch. A few samples are kept for the checks that follow.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
from torch.utils.data import Dataset

from distiq.data.arrays import as_arrays
from distiq.errors import DistiqError
from distiq.quant.modules import ActQuant

Feed = dict[str, np.ndarray]
_DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def session(model: onnx.ModelProto, extra: Iterable[str] = ()):
    """An ORT CPU session of ``model`` that also returns the tensors ``extra`` (graph inputs excepted,
    which the feed holds already)."""
    import onnxruntime as ort

    model = copy.deepcopy(model)
    have = {o.name for o in model.graph.output} | {i.name for i in model.graph.input}
    for name in dict.fromkeys(extra):
        if name not in have:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def run(sess, names: list[str], feed: Feed) -> dict[str, np.ndarray]:
    """``names`` -> their values on ``feed`` (graph inputs read from the feed)."""
    wanted = [n for n in names if n not in feed]
    try:
        got = dict(zip(wanted, sess.run(wanted, feed), strict=True))
    except Exception as e:  # ORT's own exception types
        raise DistiqError(
            f"quantize_onnx: ONNX Runtime failed on a batch: {' '.join(str(e).split())[:300]}"
        ) from None
    return {n: feed[n] if n in feed else got[n] for n in names}


def _expected(meta) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else "N" for d in meta.shape) + "]"


def _checked(meta, value: Any, index: int, what: str) -> np.ndarray:
    """One input array of batch ``index``, cast to the input's type; a wrong shape is a one-line error."""
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if meta.type not in _DTYPES:
        raise DistiqError(f"quantize_onnx: input {meta.name!r} is {meta.type}; float and int inputs only")
    fixed = [d if isinstance(d, int) else None for d in meta.shape]
    wrong = [i for i, (d, s) in enumerate(zip(fixed, array.shape, strict=False)) if d is not None and d != s]
    if array.ndim != len(fixed) or wrong:
        hint = ""
        if array.ndim == len(fixed) and wrong == [0]:
            hint = " (its batch size is fixed: export it with a dynamic batch axis)"
        raise DistiqError(
            f"{what}: batch {index} has shape {list(array.shape)} for input {meta.name!r}; "
            f"the model expects {_expected(meta)}{hint}"
        )
    return array.astype(_DTYPES[meta.type], copy=False)


def _raw_batches(data: Any, batch_size: int) -> Iterator[Any]:
    if isinstance(data, Dataset) and not isinstance(data, torch.Tensor):
        arrays = as_arrays(data)
        for i in range(0, len(arrays), batch_size):
            yield arrays.x[i : i + batch_size], arrays.y[i : i + batch_size]
    elif isinstance(data, np.ndarray | torch.Tensor):
        for i in range(0, len(data), batch_size):
            yield data[i : i + batch_size]
    else:
        yield from data


def batches(
    data: Any, inputs: list, batch_size: int = 64, limit: int | None = None, what: str = "calib_data"
) -> Iterator[tuple[Feed, Any]]:
    """``(feed, labels or None)`` per batch of ``data``: a dataset, an array/tensor of inputs, or an
    iterable of arrays, ``(x, y)`` pairs or ``{input name: array}`` dicts (models with several inputs).
    ``what`` names the data in errors."""
    names = [m.name for m in inputs]
    for index, batch in enumerate(_raw_batches(data, batch_size)):
        if limit is not None and index >= limit:
            return
        labels = None
        if isinstance(batch, dict):
            missing = sorted(set(names) - set(batch))
            if missing:
                raise DistiqError(f"{what}: batch {index} lacks input(s) {', '.join(missing)}")
            values = [batch[n] for n in names]
        elif len(inputs) > 1:
            raise DistiqError(f"{what}: the model has inputs {', '.join(names)}; give batches as dicts")
        elif isinstance(batch, list | tuple):
            values, labels = [batch[0]], (batch[1] if len(batch) > 1 else None)
        else:
            values = [batch]
        yield {m.name: _checked(m, v, index, what) for m, v in zip(inputs, values, strict=True)}, labels


@dataclass
class Kept:
    """The first calibration samples, kept for the per-layer error and the deployability check."""

    feeds: list[Feed] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    samples: int = 0

    def add(self, feed: Feed, labels: Any, room: int) -> None:
        take = min(room - self.samples, len(next(iter(feed.values()))))
        if take <= 0:
            return
        self.feeds.append({k: v[:take] for k, v in feed.items()})
        if labels is not None:
            self.labels.append(np.asarray(labels)[:take])
        self.samples += take


def calibrate_tensors(
    model: onnx.ModelProto,
    quantizers: dict[str, ActQuant],
    data: Any,
    *,
    batch_size: int = 64,
    limit: int | None = None,
    keep: int = 512,
) -> tuple[int, Kept]:
    """Stream ``data`` through ``model`` into each tensor's quantizer and set their grids.

    Returns:
        ``(samples seen, the first samples kept)``.
    """
    names = list(quantizers)
    sess = session(model, names)
    for q in quantizers.values():
        q.begin_observe()
    seen, kept = 0, Kept()
    for feed, labels in batches(data, sess.get_inputs(), batch_size, limit):
        values = run(sess, names, feed)
        for name, q in quantizers.items():
            q(torch.from_numpy(np.ascontiguousarray(values[name], dtype=np.float32)))
        seen += len(next(iter(feed.values())))
        kept.add(feed, labels, keep)
    if seen == 0:
        raise DistiqError("calib_data is empty")
    for name, q in quantizers.items():
        if not q.end_observe():
            raise DistiqError(f"quantize_onnx: tensor {name!r} was empty on every calibration batch")
    return seen, kept


__all__ = ["Kept", "batches", "calibrate_tensors", "run", "session"]
