"""A Keras student through a recipe's prune and quantize stages: masks on its kernels, int8 through its
ONNX export, and the report, as for any other model."""

import json

import numpy as np
import onnx
import pytest
import torch
import yaml

pytest.importorskip("keras", reason="the keras extra is not installed (pip install 'distiq[keras]')")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras's

from kerasnets import cnn, fit, nhwc, squares  # noqa: E402

import distiq as dq  # noqa: E402
import distiq.keras as dk  # noqa: E402
from distiq.cli.main import main  # noqa: E402
from distiq.errors import DistiqError  # noqa: E402
from distiq.keras.module import clone  # noqa: E402
from distiq.pipeline.recipe import load_recipe  # noqa: E402
from distiq.pipeline.runner import load_data  # noqa: E402

QUIET = {"latency": False, "robustness": False, "bootstrap": 0}
AMOUNT = 0.5
PRUNED = ("conv", "conv2")  # the kernels pruned: the output layer is excluded


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Generated squares as an .npz file, a trained Keras teacher and an untrained Keras student."""
    out = tmp_path_factory.mktemp("keras-recipe")
    data = squares(640, seed=3)
    np.savez(out / "squares.npz", x=data.x.numpy(), y=data.y.numpy())
    fit(cnn(8, seed=0, name="teacher"), data, epochs=4).save(out / "teacher.keras")
    cnn(6, seed=1, name="student").save(out / "student.keras")
    return out


def recipe_for(files, **stages) -> dict:
    return {
        "name": "keras-compress",
        "data": {"name": str(files / "squares.npz")},
        "teacher": {"weights": str(files / "teacher.keras")},
        "evaluate": QUIET,
        "report": False,
        **stages,
    }


PRUNE = {
    "amount": AMOUNT,
    "exclude": ["logits"],
    "fine_tune": {"epochs": 2, "lr": 0.005, "batch_size": 32},
}
QUANTIZE = {"method": "minmax", "calib_samples": 128, "thin_conv_channels": 0}


def kernel_zeros(model, names: tuple[str, ...] = PRUNED) -> float:
    kernels = [model.get_layer(name).kernel.numpy() for name in names]
    return sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)


def test_a_keras_student_is_distilled_pruned_quantized_and_reported(files, tmp_path):
    recipe = recipe_for(
        files,
        distill={
            "student": str(files / "student.keras"),
            "train": {"epochs": 4, "lr": 0.01, "batch_size": 32},
        },
        prune=PRUNE,
        quantize=QUANTIZE,
        report=True,
    )
    result = dq.run(recipe, tmp_path / "run")
    assert [s.kind for s in result.stages] == ["teacher", "distill", "prune", "quantize"]
    prune = result.stage("prune")
    pruned = dk.load_keras(tmp_path / "run" / prune.artifacts["keras"])
    assert pruned.name == "student"
    # the asked sparsity, after the fine-tune: every epoch kept the zeros (one global threshold)
    assert kernel_zeros(pruned) == pytest.approx(AMOUNT, abs=0.01)
    every_kernel = kernel_zeros(pruned, (*PRUNED, "logits"))  # what the record counts, as for torch
    assert [h["sparsity"] for h in prune.history] == pytest.approx([every_kernel] * 2)
    assert prune.extra["kernel_sparsity"] == pytest.approx(every_kernel)
    assert not (pruned.get_layer("logits").kernel.numpy() == 0).any()
    distilled = dk.load_model(files / "student.keras")  # the distill stage's student, unpruned
    dq.load_weights(distilled, tmp_path / "run" / result.stage("distill").artifacts["weights"])
    before = np.concatenate([distilled.keras_model.get_layer(n).kernel.numpy().ravel() for n in PRUNED])
    after = np.concatenate([pruned.get_layer(n).kernel.numpy().ravel() for n in PRUNED])
    smallest = np.argsort(np.abs(before))[: round(AMOUNT * before.size)]
    assert set(np.flatnonzero(after == 0)) == set(smallest)  # the smallest magnitudes, still zero
    kept = after != 0
    assert not np.allclose(after[kept], before[kept])  # while the others were fine-tuned
    # the float ONNX export reproduces the pruned Keras model
    _, _, _, test = load_data(load_recipe(recipe), [])
    x, y = nhwc(test)
    keras_acc = float((pruned.predict(x, verbose=0).argmax(1) == y).mean())
    assert keras_acc > 0.85  # four separable classes; chance is 0.25
    assert prune.metrics["accuracy"] == pytest.approx(keras_acc)
    # int8 on ONNX Runtime: integer kernels, accuracy within a few points of the float Keras student
    quant = result.stage("quantize")
    int8 = onnx.load(str(tmp_path / "run" / quant.artifacts["onnx"]))
    ops = {n.op_type for n in int8.graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    int8_weights = [i for i in int8.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 3  # both convs and the dense layer
    runtime_ops = {node.split(" -> ")[-1].rstrip(")") for node in quant.quant["integer_nodes"]}
    assert runtime_ops & {"QLinearConv", "ConvInteger"} and runtime_ops & {"QGemm", "QLinearMatMul"}
    deploy = quant.quant["deploy"]
    assert deploy["accuracy"]["float"] == pytest.approx(keras_acc)  # the float side is the Keras export
    assert deploy["accuracy"]["onnx"] >= keras_acc - 0.03 and deploy["agreement"] >= 0.97
    assert deploy["samples"] == len(test)  # measured on the whole test split
    assert quant.metrics["accuracy"] == pytest.approx(deploy["accuracy"]["onnx"])
    assert (tmp_path / "run" / quant.artifacts["float_onnx"]).is_file()
    html = (tmp_path / "run" / "report" / "report.html").read_text()
    assert "quantize" in html and "prune" in html


def test_the_command_line_prunes_and_quantizes_a_keras_teacher_and_reuses_it(files, tmp_path, capsys):
    recipe = recipe_for(files, prune={**PRUNE, "distill_from_teacher": False}, quantize=QUANTIZE)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    stages = {s["kind"]: s for s in info["stages"]}
    pruned = dk.load_keras(tmp_path / "run" / stages["prune"]["artifacts"]["keras"])
    assert kernel_zeros(pruned) == pytest.approx(AMOUNT, abs=0.01)
    assert stages["quantize"]["quant"]["integer_nodes"]
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0  # reloads the .keras file
    again = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [s["skipped"] for s in again["stages"]] == [True, True, True]
    assert [s["metrics"]["accuracy"] for s in again["stages"]] == [
        s["metrics"]["accuracy"] for s in info["stages"]
    ]


def test_the_prune_stage_prunes_a_copy_of_the_model_it_receives(data):
    view = dk.KerasModule(cnn(4, seed=2, name="student"))
    twin = clone(view)  # the stage before keeps its model: its split and attribution scores use it
    x = data[1].x[:16]
    torch.testing.assert_close(twin.eval()(x), view.eval()(x))
    dk.prune_(twin, AMOUNT, exclude=("logits",)).release()
    assert kernel_zeros(twin.keras_model) == pytest.approx(AMOUNT, abs=0.01)
    assert kernel_zeros(view.keras_model) == 0


@pytest.mark.parametrize(
    ("stages", "line"),
    [
        ({"prune": {"structured": True}}, r"prune\.structured: channel pruning rebuilds torch\.nn layers"),
        ({"prune": {"share_bits": 4}}, r"prune\.share_bits: weight sharing replaces torch\.nn layers"),
        ({"quantize": {"mode": "qat"}}, r"quantize\.mode: 'qat' trains a PyTorch model"),
        ({"quantize": {"mode": "weight-only"}}, r"quantize\.mode: 'weight-only' has no ONNX-file form"),
        ({"quantize": {"act_bits": 4}}, r"quantize\.act_bits: ONNX QDQ activations are 8-bit"),
        ({"quantize": {"rounding": "adaround"}}, r"quantize\.rounding: 'adaround' learns PyTorch weights"),
        ({"quantize": {"skip": ["conv"]}}, r"quantize\.skip: .*do not keep the Keras layer names"),
        ({"budget": {}}, r"budget: the search quantizes PyTorch models"),
    ],
)
def test_what_a_keras_student_cannot_do_is_one_line_naming_the_field(files, stages, line):
    recipe = recipe_for(files, distill={"student": str(files / "student.keras")}, **stages)
    with pytest.raises(DistiqError, match=line) as caught:
        load_recipe(recipe)
    assert "\n" not in str(caught.value) and "student.keras" in str(caught.value)


def test_an_unknown_exclude_layer_is_refused_before_any_stage_runs(files, tmp_path):
    recipe = recipe_for(files, prune={"exclude": ["logitz"]})
    with pytest.raises(
        DistiqError, match=r"prune\.exclude: no Dense/Conv layer named logitz; have conv, conv2"
    ):
        dq.run(recipe, tmp_path / "run")
    assert not (tmp_path / "run" / "stages").exists()
