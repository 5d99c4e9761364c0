"""Latency and throughput in ONNX Runtime, the way a deployed model runs.

Why ONNX Runtime and not PyTorch: the question a user asks is "how fast is the exported model", and
an int8 model is only faster in a runtime with int8 kernels. A PyTorch model is first exported to a
temporary ONNX file (``torch.onnx.export(dynamo=False)``, dynamic batch), so float and compressed
models are timed by the same engine.

Method: one session per measurement with a fixed thread count (default 1: timings on a shared
machine are otherwise dominated by contention), a few untimed warm-up runs (allocations, kernel
selection), then ``runs`` timed runs of a fixed random batch. The percentiles are of per-batch
wall-clock times; throughput is ``batch_size / median``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distiq.errors import DataError


@dataclass
class LatencyResult:
    """Timings of one batch size.

    Attributes:
        batch_size: Samples per run.
        threads: ONNX Runtime intra-op threads.
        runs: Timed runs.
        p50_ms: Median milliseconds per batch.
        p95_ms: 95th percentile milliseconds per batch.
        mean_ms: Mean milliseconds per batch.
        throughput: Samples per second at the median (``batch_size / p50``).
    """

    batch_size: int
    threads: int
    runs: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    throughput: float

    def to_dict(self) -> dict:
        return asdict(self)


def export_for_timing(model: nn.Module, input_shape: Sequence[int], path: str | os.PathLike[str]) -> Path:
    """Export ``model`` (float, eval mode) to ``path`` with a dynamic batch dimension."""
    was_training = model.training
    model.eval()
    example = torch.zeros((1, *input_shape))
    try:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    finally:
        model.train(was_training)
    return Path(path)


@contextlib.contextmanager
def as_onnx(model: nn.Module | str | os.PathLike[str], input_shape: Sequence[int] | None) -> Iterator[Path]:
    """Yield an ONNX path for ``model``: the path itself, or a temporary export of a module."""
    if not isinstance(model, nn.Module):
        path = Path(model)
        if not path.is_file():
            raise DataError(f"{path}: ONNX file not found")
        yield path
        return
    if input_shape is None:
        raise ValueError("input_shape is needed to export a module to ONNX")
    with tempfile.TemporaryDirectory(prefix="distiq-latency-") as tmp:
        yield export_for_timing(model, input_shape, Path(tmp) / "model.onnx")


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for bad files
        raise DataError(f"{path}: ONNX Runtime cannot load it ({e})") from None


def _input_shape_of(session) -> tuple[int, ...]:
    shape = session.get_inputs()[0].shape[1:]
    if not all(isinstance(d, int) for d in shape):
        raise ValueError(f"the ONNX input has symbolic non-batch dimensions {shape}; pass input_shape")
    return tuple(shape)


def _first_run(session, feed: dict[str, np.ndarray], path: Path) -> None:
    """Run once untimed, so a file made for other inputs than ``feed`` fails in one line naming it."""
    try:
        session.run(None, feed)
    except Exception as e:  # ORT's own exception types
        meta = session.get_inputs()[0]
        got = list(next(iter(feed.values())).shape[1:])
        raise DataError(
            f"{path}: ONNX Runtime cannot run it on inputs {got} (the file expects {meta.type} "
            f"{meta.shape}): {' '.join(str(e).split())}"
        ) from None


def measure_latency(
    model: nn.Module | str | os.PathLike[str],
    input_shape: Sequence[int] | None = None,
    *,
    batch_sizes: Sequence[int] = (1, 32),
    threads: int = 1,
    warmup: int = 5,
    runs: int = 30,
    seed: int = 0,
) -> list[LatencyResult]:
    """Time ``model`` (a module or an ``.onnx`` path) in ONNX Runtime's CPU provider.

    Args:
        model: A module (exported to a temporary ONNX file first) or an ONNX file.
        input_shape: One sample's shape, e.g. ``(1, 28, 28)``; read from the ONNX file if omitted.
        batch_sizes: Batch sizes to time, each with its own warm-up.
        threads: Intra-op threads of the session.
        warmup: Untimed runs before timing.
        runs: Timed runs per batch size.
        seed: Seed of the random input batch.

    Returns:
        One :class:`LatencyResult` per batch size, in the order given.
    """
    if threads < 1 or runs < 1 or warmup < 0:
        raise ValueError(f"need threads >= 1, runs >= 1, warmup >= 0; got {threads}, {runs}, {warmup}")
    with as_onnx(model, input_shape) as path:
        session = _session(path, threads)
        shape = tuple(input_shape) if input_shape is not None else _input_shape_of(session)
        name = session.get_inputs()[0].name
        rng = np.random.default_rng(seed)
        results = []
        for bs in batch_sizes:
            feed = {name: rng.random((bs, *shape), dtype=np.float32)}
            _first_run(session, feed, path)
            for _ in range(warmup):
                session.run(None, feed)
            times = np.empty(runs)
            for i in range(runs):
                t0 = time.perf_counter()
                session.run(None, feed)
                times[i] = time.perf_counter() - t0
            p50, p95 = np.percentile(times, [50, 95])
            results.append(
                LatencyResult(
                    batch_size=int(bs),
                    threads=threads,
                    runs=runs,
                    p50_ms=float(p50 * 1e3),
                    p95_ms=float(p95 * 1e3),
                    mean_ms=float(times.mean() * 1e3),
                    throughput=float(bs / p50),
                )
            )
    return results
