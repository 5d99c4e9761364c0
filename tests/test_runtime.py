"""distiq.runtime: the one ORT session builder and the interleaved timer every measurement uses."""

from __future__ import annotations

import itertools

import pytest
import torch

import distiq as dq
from distiq import runtime
from distiq.errors import DataError


def test_rounds_rotate_so_no_file_always_follows_the_same_one():
    calls = []
    runners = {label: (lambda label=label: calls.append(label)) for label in "ABC"}
    ticks = itertools.count()
    times = runtime.interleave(runners, rounds=3, warmup=1, clock=lambda: float(next(ticks)))
    assert calls == list("ABCBCACABABC")  # warm-up round first, then each round one later
    assert {label: len(t) for label, t in times.items()} == {"A": 3, "B": 3, "C": 3}
    assert all(t == 1.0 for ts in times.values() for t in ts)  # one tick of the fake clock per call


def test_a_time_limit_keeps_the_minimum_rounds():
    ticks = itertools.count(step=10)  # every clock read 10 s later: the limit is hit at once
    times = runtime.interleave(
        {"a": lambda: None}, rounds=50, warmup=0, seconds=1.0, clock=lambda: next(ticks)
    )
    assert len(times["a"]) == runtime.MIN_ROUNDS


def test_latency_statistics_hand_worked():
    r = runtime.LatencyResult.of([0.001, 0.002, 0.003, 0.010], batch_size=8, threads=2)
    assert r.p50_ms == pytest.approx(2.5) and r.mean_ms == pytest.approx(4.0)
    assert r.throughput == pytest.approx(8 / 0.0025) and r.runs == 4


def test_files_timed_together_on_one_input(tmp_path):
    torch.manual_seed(0)
    x = torch.zeros(2, 1, 8, 8)
    small = dq.export_onnx(dq.models.create("mlp", image_size=8, hidden=(8,)), tmp_path / "s.onnx", x)
    big = dq.export_onnx(dq.models.create("mlp", image_size=8, hidden=(512, 512)), tmp_path / "b.onnx", x)
    timed = runtime.time_files({"small": small, "big": big}, (1, 64), threads=1, rounds=15, warmup=2)
    assert set(timed) == {1, 64} and set(timed[64]) == {"small", "big"}
    assert all(r.runs == 15 and r.threads == 1 for row in timed.values() for r in row.values())
    assert timed[64]["big"].p50_ms > timed[64]["small"].p50_ms  # ~500x the multiply-adds


def test_bad_files_and_inputs_are_one_line_naming_the_file(tmp_path):
    with pytest.raises(DataError, match="ONNX file not found"):
        runtime.session(tmp_path / "none.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(DataError, match="junk.onnx: ONNX Runtime cannot load it") as e:
        runtime.session(tmp_path / "junk.onnx")
    assert "\n" not in str(e.value)
    path = dq.export_onnx(
        dq.models.create("mlp", image_size=8, hidden=(8,)), tmp_path / "m.onnx", torch.zeros(2, 1, 8, 8)
    )
    with pytest.raises(DataError, match=r"m.onnx: ONNX Runtime cannot run it on inputs \[1, 5, 5\]"):
        runtime.run_checked(runtime.session(path), torch.zeros(2, 1, 5, 5).numpy(), path)
