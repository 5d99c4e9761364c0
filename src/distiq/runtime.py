"""ONNX Runtime, driven one way: the session every caller opens and the interleaved timer.

Why one module: evaluation, the deployability check, the pipeline and the benches all run ONNX files;
with a session builder each they drifted (one let idle threads spin and steal the CPU from the next
file timed, one timed files minutes apart). Everything here is numpy + onnxruntime, below every
other distiq layer, so ``quant`` and ``evaluate`` share it.

Timing method: every file is run once per round, the order rotating by one each round (A B C, B C A,
C A B, ...), so a burst of load from another process slows all files alike instead of whichever ran
then, and no file always follows the same one. Untimed warm-up rounds come first (allocations, kernel
selection); the statistics are of per-run wall-clock times; throughput is ``batch_size / median``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from distiq.errors import DataError

OptLevel = Literal["disabled", "basic", "extended", "all"]
#: Rounds always kept when a time limit (``seconds``) stops a measurement early.
MIN_ROUNDS = 5


def _one_line(error: Exception) -> str:
    """ORT's messages span lines; the command line prints one."""
    return " ".join(str(error).split())


def session(
    path: str | os.PathLike[str],
    *,
    threads: int = 1,
    opt_level: OptLevel = "all",
    providers: Sequence[str] = ("CPUExecutionProvider",),
    profile: str | os.PathLike[str] | None = None,
    optimized_path: str | os.PathLike[str] | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` of the file at ``path``, built the one way distiq times it.

    Sequential execution, one inter-op thread, worker threads that do not spin between runs (a
    spinning pool steals the CPU from the next session timed), warnings only.

    Args:
        path: The ONNX file.
        threads: Intra-op threads; 0 lets ORT choose (all cores).
        opt_level: Graph optimisation level. "extended" applies the QDQ fusions without the
            hardware-specific layout changes of "all".
        providers: Execution providers, in order of preference.
        profile: Write ORT's JSON profile of every run to files starting with this prefix.
        optimized_path: Write the graph ORT will execute (after optimisation) to this file.

    Raises:
        DataError: The file is missing or ORT cannot load it; one line naming it.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: ONNX file not found")
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0: ORT chooses), got {threads}")
    levels = ort.GraphOptimizationLevel
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "disabled": levels.ORT_DISABLE_ALL,
        "basic": levels.ORT_ENABLE_BASIC,
        "extended": levels.ORT_ENABLE_EXTENDED,
        "all": levels.ORT_ENABLE_ALL,
    }[opt_level]
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile)
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    try:
        return ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as e:  # ORT raises its own exception types for bad files
        raise DataError(f"{path}: ONNX Runtime cannot load it ({_one_line(e)})") from None


def run_checked(sess: Any, x: np.ndarray, path: str | os.PathLike[str]) -> np.ndarray:
    """The first output of ``sess`` on ``x``; inputs the file was not made for fail in one line naming it."""
    first = sess.get_inputs()[0]
    try:
        return sess.run(None, {first.name: x})[0]
    except Exception as e:  # ORT's own types: a file made for other inputs (shape, type) than the data
        raise DataError(
            f"{path}: ONNX Runtime cannot run it on inputs {list(x.shape[1:])} (the file expects "
            f"{first.type} {first.shape}): {_one_line(e)}"
        ) from None


def sample_shape(sess: Any) -> tuple[int, ...]:
    """One sample's input shape read off the session (the batch dimension dropped)."""
    shape = sess.get_inputs()[0].shape[1:]
    if not all(isinstance(d, int) for d in shape):
        raise ValueError(f"the ONNX input has symbolic non-batch dimensions {shape}; pass input_shape")
    return tuple(shape)


@dataclass
class LatencyResult:
    """Timings of one file at one batch size.

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

    @classmethod
    def of(cls, seconds: Sequence[float], batch_size: int, threads: int) -> LatencyResult:
        """The statistics of per-run wall-clock ``seconds``."""
        times = np.asarray(seconds, dtype=float)
        p50, p95 = np.percentile(times, [50, 95])
        return cls(
            batch_size=int(batch_size),
            threads=threads,
            runs=len(times),
            p50_ms=float(p50 * 1e3),
            p95_ms=float(p95 * 1e3),
            mean_ms=float(times.mean() * 1e3),
            throughput=float(batch_size / p50),
        )


def interleave(
    runners: Mapping[str, Callable[[], object]],
    *,
    rounds: int,
    warmup: int,
    seconds: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Per-run wall-clock seconds of each runner, timed in rotating interleaved rounds.

    Args:
        runners: Label -> a call to time (one inference).
        rounds: Timed rounds.
        warmup: Untimed rounds first.
        seconds: Stop early once the timed rounds have taken this long (at least
            :data:`MIN_ROUNDS` are kept).
        clock: The clock read around each call (a fake one in tests).
    """
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1 and warmup >= 0, got {rounds} and {warmup}")
    labels = list(runners)
    times: dict[str, list[float]] = {label: [] for label in labels}
    start = None
    for r in range(warmup + rounds):
        if r == warmup:
            start = clock()
        for i in range(len(labels)):
            label = labels[(i + r) % len(labels)]
            t0 = clock()
            runners[label]()
            if r >= warmup:
                times[label].append(clock() - t0)
        timed = r + 1 - warmup
        if seconds is not None and timed >= MIN_ROUNDS and clock() - start > seconds:
            break
    return times


def time_files(
    paths: Mapping[str, str | os.PathLike[str]],
    batch_sizes: Sequence[int],
    *,
    threads: int = 1,
    rounds: int = 30,
    warmup: int = 3,
    seconds: float | None = None,
    input_shape: Sequence[int] | None = None,
    seed: int = 0,
) -> dict[int, dict[str, LatencyResult]]:
    """Time several ONNX files (same input) together: ``{batch: {label: LatencyResult}}``.

    Every file sees the same random batch; each is run once untimed first, so a file made for other
    inputs fails in one line naming it before anything is timed.

    Args:
        paths: Label -> ONNX file.
        batch_sizes: Batch sizes, each measured in its own interleaved rounds.
        threads: Intra-op threads of every session.
        rounds: Timed rounds per batch size.
        warmup: Untimed rounds per batch size.
        seconds: Stop a batch size's rounds early after this long (see :func:`interleave`).
        input_shape: One sample's shape; read off the first file when omitted.
        seed: Seed of the random input.
    """
    sessions = {label: session(p, threads=threads) for label, p in paths.items()}
    if not sessions:
        return {}
    shape = tuple(input_shape) if input_shape is not None else sample_shape(next(iter(sessions.values())))
    rng = np.random.default_rng(seed)
    out: dict[int, dict[str, LatencyResult]] = {}
    for batch in batch_sizes:
        x = rng.random((batch, *shape), dtype=np.float32)
        for label, sess in sessions.items():
            run_checked(sess, x, paths[label])
        runners = {label: _runner(sess, x) for label, sess in sessions.items()}
        times = interleave(runners, rounds=rounds, warmup=warmup, seconds=seconds)
        out[int(batch)] = {label: LatencyResult.of(t, batch, threads) for label, t in times.items()}
    return out


def _runner(sess: Any, x: np.ndarray) -> Callable[[], object]:
    feed = {sess.get_inputs()[0].name: x}
    return lambda: sess.run(None, feed)
