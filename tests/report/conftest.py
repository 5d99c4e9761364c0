"""A synthetic run directory, shaped like the pipeline's, for the report tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]


def _confusion(rng: np.random.Generator, acc: float) -> list[list[int]]:
    n = len(CLASSES)
    cm = rng.integers(0, 12, size=(n, n))
    np.fill_diagonal(cm, int(100 * acc))
    return cm.tolist()


def _history(epochs: int, start: float) -> list[dict]:
    return [
        {
            "epoch": e + 1,
            "train_loss": 1.2 / (e + 1),
            "val_loss": 1.3 / (e + 1) + 0.05,
            "train_accuracy": start + 0.04 * e,
            "val_accuracy": start - 0.01 + 0.035 * e,
        }
        for e in range(epochs)
    ]


def _metrics(rng, acc, f1, size, latency, params, **extra) -> dict:
    return {
        "accuracy": acc,
        "f1_macro": f1,
        "f1_per_class": rng.uniform(0.6, 0.99, len(CLASSES)).round(4).tolist(),
        "confusion": _confusion(rng, acc),
        "class_names": CLASSES,
        "size_bytes": size,
        "params": params,
        "macs": params * 12,
        "latency_ms_p50": latency,
        "latency_ms_p95": latency * 1.3,
        "throughput": 1000 / latency * 64,
        "ece": 0.021,
        "ci95": [acc - 0.006, acc + 0.006],
        "robustness": {
            "gaussian_noise": {"0.1": acc - 0.02, "0.2": acc - 0.07, "0.4": acc - 0.2},
            "blur": {"0.5": acc - 0.01, "1.0": acc - 0.05, "2.0": acc - 0.15},
            "contrast": {"0.5": acc - 0.03, "0.3": acc - 0.08},
        },
        **extra,
    }


def make_run(root: Path) -> dict:
    """Write ``root/run.json`` (4 stages, quantization details, a search) and return its content."""
    rng = np.random.default_rng(0)
    layers = ["features.0", "features.3", "classifier.1", "classifier.4"]
    quant = {
        "layers": [
            {
                "layer": name,
                "weight_sqnr_db": 38.5 - 3 * i,
                "act_sqnr_db": 31.2 - 2 * i,
                "weight_mse": 1e-5 * (i + 1),
                "act_mse": 3e-4 * (i + 1),
                "sensitivity_drop": [0.012, 0.003, 0.001, 0.0004][i],
                "kept_float": i == 0,
            }
            for i, name in enumerate(layers)
        ],
        "histograms": [
            {
                "layer": name,
                "edges": np.linspace(-4, 4, 65).tolist(),
                "counts": np.histogram(rng.standard_normal(5000), bins=np.linspace(-4, 4, 65))[0].tolist(),
                "lo": -2.6,
                "hi": 2.6,
                "method": "kl",
            }
            for name in layers
        ],
        "integer_nodes": ["Conv_1", "Conv_2", "Gemm_3"],
        "float_nodes": [{"node": "Conv_0", "reason": "most sensitive layer kept in float"}],
    }
    stages = [
        {
            "name": "teacher",
            "kind": "teacher",
            "dir": "stages/01-teacher",
            "key": "key1",
            "seconds": 120.5,
            "skipped": True,
            "metrics": _metrics(rng, 0.9134, 0.9121, 4_812_345, 3.412, 1_203_456),
            "history": _history(5, 0.80),
            "artifacts": {"weights": "stages/01-teacher/model.safetensors"},
        },
        {
            "name": "distill",
            "kind": "distill",
            "dir": "stages/02-distill",
            "key": "key2",
            "seconds": 80.25,
            "skipped": False,
            "metrics": _metrics(rng, 0.9071, 0.9052, 402_113, 0.8123, 100_321, agreement_with_teacher=0.951),
            "history": _history(4, 0.78),
            "artifacts": {"weights": "stages/02-distill/model.safetensors"},
        },
        {
            "name": "prune",
            "kind": "prune",
            "dir": "stages/03-prune",
            "key": "key3",
            "seconds": 30.0,
            "skipped": False,
            "metrics": {"accuracy": 0.9043, "f1_macro": 0.9017, "size_bytes": 250_007, "params": 60_042},
        },
        {
            "name": "int8",
            "kind": "quantize",
            "dir": "stages/04-int8",
            "key": "key4",
            "seconds": 12.75,
            "skipped": False,
            "metrics": _metrics(rng, 0.9062, 0.9038, 95_871, 0.3456, 60_042, agreement_with_teacher=0.947),
            "quant": quant,
            "artifacts": {"onnx": "stages/04-int8/model.onnx"},
        },
    ]
    (root / "stages" / "03-prune").mkdir(parents=True)
    with open(root / "stages" / "03-prune" / "history.jsonl", "w") as f:
        for row in _history(3, 0.85):
            f.write(json.dumps(row) + "\n")
        f.write('{"epoch": 4, "train_lo')  # a run killed mid-line: skipped, not fatal
    search_trials = [
        {
            "id": i,
            "params": {"method": m, "bits": b, "prune": p},
            "val_accuracy": 0.905 - 0.004 * i,
            "size_bytes": 120_000 - 9_000 * i,
            "latency_ms": 0.5 - 0.03 * i,
            "meets_budget": 0.905 - 0.004 * i >= 0.9,
            "chosen": i == 1,
        }
        for i, (m, b, p) in enumerate(
            [("minmax", 8, 0.0), ("kl", 8, 0.3), ("mse", 8, 0.5), ("kl", 4, 0.5), ("percentile", 4, 0.7)]
        )
    ]
    run = {
        "name": "fashion-kd-int8",
        "recipe": {
            "dataset": "fashion-mnist",
            "stages": [{"teacher": {"model": "resnet20"}}, {"quantize": {"bits": 8}}],
        },
        "versions": {"distiq": "0.1.0", "torch": "2.13.0", "onnxruntime": "1.22.0", "python": "3.11.2"},
        "dataset": "fashion-mnist",
        "started": "2025-01-02T10:00:00",
        "finished": "2025-01-02T10:12:30",
        "stages": stages,
        "search": {
            "objective": "size",
            "budget": {"max_accuracy_drop": 1.0},
            "reference_accuracy": 0.91,
            "trials": search_trials,
            "missed_by": None,
        },
    }
    (root / "run.json").write_text(json.dumps(run))
    return run


INT8_LAYERS = ["features.0", "features.3", "classifier.1"]
"""The int8 stage's layers in :func:`make_pipeline_run`; features.0 was kept in float."""


def make_pipeline_run(root: Path) -> dict:
    """Write ``root/run.json`` the way the pipeline's runner does and return its content.

    Every stage is a :class:`distiq.pipeline.rundir.StageRecord`, so float stages carry the empty
    ``quant`` record the runner gives them; the ``quantize`` stage's record has the format of
    ``distiq.pipeline.compress.run_quantize`` (``"layer (op -> runtime op)"`` kernel entries), and the
    budget ``search`` stage, which ships an int8 file too, has no record of its own.
    """
    from distiq.pipeline.rundir import StageRecord

    rng = np.random.default_rng(1)
    quant = {
        "layers": [
            {
                "layer": name,
                "weight_sqnr_db": [None, 41.25, 36.5][i],
                "weight_mse": [0.0, 2.5e-6, 1.25e-5][i],
                "act_sqnr_db": [None, 29.75, 33.0][i],
                "act_mse": [0.0, 4.5e-4, 1.5e-4][i],
                "sensitivity_drop": [0.0125, 0.003, None][i],
                "kept_float": i == 0,
            }
            for i, name in enumerate(INT8_LAYERS)
        ],
        "histograms": [
            {
                "layer": f"{name}.input_quant",
                "edges": np.linspace(-4, 4, 65).tolist(),
                "counts": np.histogram(rng.standard_normal(2000), bins=np.linspace(-4, 4, 65))[0].tolist(),
                "lo": lo,
                "hi": hi,
                "method": "kl",
            }
            for name, lo, hi in zip(INT8_LAYERS[1:], [0.0, -1.5], [3.25, 2.125], strict=True)
        ],
        "integer_nodes": ["features.3 (Conv -> QLinearConv)", "classifier.1 (Gemm -> QGemm)"],
        "float_nodes": [{"node": "features.0 (Conv -> Conv)", "reason": "weight is not quantized"}],
        "deploy": {
            "agreement": 0.9975,
            "compared_with": "simulated",
            "samples": 400,
            "file_target": "x86-vnni",
            "cpu": {"model": "AMD EPYC", "target": "x86-avx2"},
            "accuracy": {"float": 0.905, "simulated": 0.91, "onnx": 0.902},
            "warnings": [
                "INT8 FILE MADE FOR x86-vnni RUNS ON AMD EPYC (x86-avx2)",
                "fc (Gemm) runs a float kernel",
            ],
        },
    }

    def stage(i: int, kind: str, acc: float | None, **fields) -> dict:
        m = {} if acc is None else _metrics(rng, acc, acc - 0.002, 400_000 // (i + 1), 1.0 / (i + 1), 50_000)
        record = StageRecord(
            kind, kind, f"stages/{i:02d}-{kind}", f"key{i}", seconds=10.0, metrics=m, **fields
        )
        return record.to_dict()

    trials = [
        {
            "id": i,
            "params": {"prune": 0.0, "method": m, "bits": 8, "per_channel": True, "float_layers": fl},
            "val_accuracy": 0.9 - 0.003 * i,
            "size_bytes": 120_000 - 8_000 * i,
            "meets_budget": i < 2,
            "chosen": i == 1,
            "file": f"stages/04-search/trials/trial-{i:03d}.onnx",
        }
        for i, (m, fl) in enumerate([("minmax", []), ("kl", ["features.0"]), ("kl", [])])
    ]
    search = {"objective": "size", "budget": {"max_accuracy_drop": 1.0}, "trials": trials, "chosen": 1}
    stages = [
        stage(0, "teacher", 0.91, history=_history(2, 0.8)),
        stage(1, "distill", 0.905, history=_history(2, 0.78)),
        stage(2, "prune", 0.903),
        stage(3, "quantize", 0.902, quant=quant, artifacts={"onnx": "stages/03-quantize/model.onnx"}),
        stage(4, "search", 0.9, extra={"search": search}, artifacts={"onnx": "stages/04-search/model.onnx"}),
    ]
    run = {
        "name": "pipeline-like",
        "dataset": "fashion-mnist",
        "cpu": {"model": "AMD EPYC", "target": "x86-avx2"},
        "stages": stages,
        "search": search,
    }
    (root / "run.json").write_text(json.dumps(run))
    return run


@pytest.fixture
def pipeline_run(tmp_path) -> Path:
    """A run directory whose ``run.json`` has the runner's stage records (:func:`make_pipeline_run`)."""
    make_pipeline_run(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory) -> tuple[Path, dict]:
    """A run directory and its ``run.json`` content (do not modify: shared by the session)."""
    root = tmp_path_factory.mktemp("run")
    return root, make_run(root)


@pytest.fixture(scope="session")
def built_report(synthetic_run):
    """``build_report`` of the synthetic run, built once for every test that only reads it."""
    from distiq.report import build_report

    return build_report(synthetic_run[0])


@pytest.fixture
def fresh_run(tmp_path) -> Path:
    """A synthetic run directory of the test's own, for tests that change it."""
    make_run(tmp_path)
    return tmp_path
