"""Latency and throughput in ONNX Runtime, the way a deployed model runs.

Why ONNX Runtime and not PyTorch: the question a user asks is "how fast is the exported model", and
an int8 model is only faster in a runtime with int8 kernels. A PyTorch model is first written to a
temporary ONNX file by distiq's one exporter (:func:`distiq.quant.export.export_onnx`, dynamic batch),
so float and compressed models are timed by the same engine from the same kind of file.

The sessions and the timer are :mod:`distiq.runtime`'s, shared with the deployability check, the
pipeline and the benches: one file here is timed as a one-file interleaved measurement.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from distiq.errors import DataError
from distiq.runtime import LatencyResult, time_files


def export_for_timing(model: nn.Module, input_shape: Sequence[int], path: str | os.PathLike[str]) -> Path:
    """Write ``model`` (float or quantized) to ``path`` with a dynamic batch dimension."""
    from distiq.quant.export import export_onnx

    return export_onnx(model, path, torch.zeros((2, *input_shape)))


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

    To compare files, time them together with :func:`distiq.runtime.time_files` instead: two calls of
    this function minutes apart measure the machine's load as much as the models.

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
        timed = time_files(
            {"model": path}, batch_sizes, threads=threads, rounds=runs, warmup=warmup,
            input_shape=input_shape, seed=seed,
        )  # fmt: skip
    return [timed[int(bs)]["model"] for bs in batch_sizes]


__all__ = ["LatencyResult", "as_onnx", "export_for_timing", "measure_latency"]
