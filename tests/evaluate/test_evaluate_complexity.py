"""Parameters, MACs (torch hooks and ONNX graph) against hand counts; latency sanity."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from distiq.evaluate import count_macs, count_parameters, measure_latency, model_complexity
from distiq.evaluate.latency import export_for_timing


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))


# On a 1x4x4 input: conv out 2x4x4 = 32 elements, each 1 channel x 3x3 = 9 MACs -> 288;
# linear 32 -> 3: 96 MACs. Total 384. Parameters: conv 2·9 + 2 = 20, linear 32·3 + 3 = 99 -> 119.
HAND_MACS = {"0": 288, "3": 96}


def test_macs_and_parameters_by_hand():
    total, per_layer = count_macs(tiny(), (1, 4, 4))
    assert per_layer == HAND_MACS and total == 384
    assert count_parameters(tiny()) == 119


def test_grouped_and_strided_conv_by_hand():
    # groups=2: each output sees 4/2 = 2 channels x 3x3 = 18 MACs; stride 2 on 5x5 -> 2x2 outputs.
    conv = nn.Conv2d(4, 6, 3, stride=2, groups=2)
    total, _ = count_macs(nn.Sequential(conv), (4, 5, 5))
    assert total == 6 * 2 * 2 * 18


def test_onnx_graph_counts_match_hand_counts(tmp_path):
    path = export_for_timing(tiny(), (1, 4, 4), tmp_path / "tiny.onnx")
    c = model_complexity(path)
    assert c.macs == 384 and c.parameters == 119
    assert c.file_bytes == path.stat().st_size
    assert sorted(c.macs_per_layer.values()) == [96, 288]
    json.dumps(c.to_dict())


def test_module_complexity_needs_a_shape():
    with pytest.raises(ValueError, match="input_shape"):
        model_complexity(tiny())
    assert model_complexity(tiny(), (1, 4, 4)).macs == 384


def test_latency_of_module_and_file(tmp_path):
    res = measure_latency(tiny(), (1, 4, 4), batch_sizes=(1, 8), warmup=1, runs=5)
    assert [r.batch_size for r in res] == [1, 8]
    for r in res:
        assert 0 < r.p50_ms <= r.p95_ms
        assert r.throughput == pytest.approx(r.batch_size / (r.p50_ms / 1e3))
    path = export_for_timing(tiny(), (1, 4, 4), tmp_path / "tiny.onnx")
    (r,) = measure_latency(path, batch_sizes=(4,), warmup=0, runs=3, threads=1)
    assert r.runs == 3 and r.threads == 1
    json.dumps(r.to_dict())
