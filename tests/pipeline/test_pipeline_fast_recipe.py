"""The shipped fast recipe (``recipes/fashion_mnist_fast.yaml``) end to end, shrunk to seconds.

Only the data and the epochs are changed: the stride-2-stem student, the channel pruning, the int8
stage and the timing run as shipped, so what the benchmark measures is what this walks.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import yaml
from torch import nn

import distiq.pipeline as pipeline
from distiq.distill import offline as offline_mod
from distiq.engine.config import training_views
from distiq.prune import load_pruned

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "fashion_mnist_fast.yaml"


def shrunk_recipe() -> dict:
    """The shipped recipe on 600 digits with one epoch per training stage."""
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["data"] = {"name": "digits", "subsample": 600, "val_fraction": 0.2}
    for section in (recipe["teacher"]["train"], recipe["distill"]["train"], recipe["prune"]["fine_tune"]):
        section["epochs"] = 1
    recipe["quantize"] |= {"calib_samples": 64, "calib_repeats": 0, "sensitivity": False}
    recipe["evaluate"] |= {"robustness": False, "bootstrap": 0}
    recipe["report"] = False
    return recipe


def test_fast_recipe_gives_a_strided_pruned_int8_student(tmp_path, monkeypatch):
    shipped = yaml.safe_load(RECIPE.read_text())
    teacher_runs = []
    real = offline_mod.predict_logits
    monkeypatch.setattr(
        offline_mod, "predict_logits", lambda *a, **k: teacher_runs.append(1) or real(*a, **k)
    )
    result = pipeline.run(shrunk_recipe(), tmp_path)
    assert [s.kind for s in result.stages] == ["teacher", "distill", "prune", "quantize"]
    # distillation and the pruned student's fine-tune share one cache: the teacher ran once per view
    assert len(teacher_runs) == training_views(shipped["distill"]["train"]).count
    assert len(list((tmp_path / "teacher-cache").glob("teacher-logits-*.safetensors"))) == 1

    pruned = load_pruned(tmp_path / result.stage("prune").dir / "model.safetensors")
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].stride == (2, 2) and all(c.stride == (1, 1) for c in convs[1:])
    widths = [w for w in shipped["distill"]["student_options"]["cfg"] if w != "M"]
    amount, block = shipped["prune"]["amount"], shipped["prune"]["round_to"]
    for conv, width in zip(convs, widths, strict=True):  # each lost at least `amount`, in whole blocks
        assert conv.out_channels % block == 0 and 0 < conv.out_channels <= (1 - amount) * width

    quantized = result.stage("quantize")
    assert any("Conv" in n and "QLinearConv" in n for n in quantized.quant["integer_nodes"])
    int8 = onnx.load(tmp_path / quantized.artifacts["onnx"])
    assert any(n.op_type == "QuantizeLinear" for n in int8.graph.node)
    teacher_bytes = (tmp_path / result.stage("teacher").artifacts["onnx"]).stat().st_size
    assert (tmp_path / quantized.artifacts["onnx"]).stat().st_size * 20 < teacher_bytes
    for stage in result.stages:  # every stage timed in the one interleaved measurement
        assert stage.metrics["latency_ms_p50"] > 0 and stage.metrics["latency_ms_batch256"] > 0
