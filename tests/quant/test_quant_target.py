"""CPU targets: detection from feature flags, the int8 grid each target computes exactly, and the
on-machine check that the ORT file computes what the simulation promised.

The tests that run int8 files in ONNX Runtime exercise this machine's int8 path; pytest's header
line "int8 path: ..." (tests/conftest.py) and every assertion message say which one.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import distiq as dq
from distiq.errors import DistiqError
from distiq.quant import DeploymentWarning, cpu_target, deploy_check, export_onnx, quantize
from distiq.quant.deploy import has_qdq_reference, onnx_outputs, qdq_reference_outputs
from distiq.quant.target import SAFE_WEIGHT_MAX, TARGETS, cpu_info, resolve_target, target_from_flags

HERE = f"{cpu_info()['model']} ({cpu_target()})"


@pytest.mark.parametrize(
    ("machine", "flags", "expected"),
    [
        ("x86_64", {"sse4_2", "avx", "avx2", "fma"}, "x86-avx2"),  # the AMD EPYC seen here
        ("x86_64", {"avx2", "avx512f", "avx512bw"}, "x86-avx512"),  # Skylake-SP
        ("x86_64", {"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "x86-vnni"),  # Cascade Lake
        ("x86_64", {"avx2", "avx_vnni"}, "x86-vnni"),  # Alder Lake
        ("x86_64", {"avx512_vnni", "amx_int8", "amx_tile", "amx_bf16"}, "x86-amx"),  # Sapphire Rapids
        ("x86_64", {"sse4_2"}, "generic"),
        ("aarch64", {"fp", "asimd"}, "arm64"),  # Cortex-A72
        ("aarch64", {"fp", "asimd", "asimddp"}, "arm64-dotprod"),  # Neoverse N1
        ("riscv64", set(), "generic"),
    ],
)
def test_target_from_flags(machine, flags, expected):
    assert target_from_flags(machine, flags) == expected


def test_this_machine_has_a_known_target():
    assert cpu_target() in TARGETS and resolve_target("auto").name == cpu_target()
    assert cpu_info()["model"]


def test_unknown_target_is_a_one_line_error():
    with pytest.raises(DistiqError, match="unknown CPU target 'x86-avx3'.*x86-avx2"):
        quantize(dq.models.create("mlp", image_size=8), mode="dynamic", target="x86-avx3")


def _vpmaddubsw_dot(a_u8: np.ndarray, w_s8: np.ndarray) -> np.ndarray:
    """What AVX2's u8 x s8 dot product computes: pairs of products summed with int16 saturation
    (VPMADDUBSW), then pairs of those summed in int32 (VPMADDWD with ones)."""
    prod = a_u8.astype(np.int32) * w_s8.astype(np.int32)
    pairs = np.clip(prod[..., 0::2] + prod[..., 1::2], -32768, 32767)
    return pairs.sum(-1)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_each_target_grid_never_saturates_its_kernel(name):
    """Worst case for a saturating kernel: activations 255 against weights at the grid's edge."""
    w_max = TARGETS[name].weight_max(8)
    a = np.full(64, 255, dtype=np.uint8)
    w = np.full(64, w_max, dtype=np.int8)
    exact = int(a.astype(np.int64) @ w.astype(np.int64))
    if TARGETS[name].saturates:
        assert w_max == SAFE_WEIGHT_MAX and int(_vpmaddubsw_dot(a, w)) == exact
        assert int(_vpmaddubsw_dot(a, np.full(64, 127, dtype=np.int8))) != 255 * 127 * 64  # the trap
    else:
        assert w_max == 127
    assert TARGETS[name].weight_max(4) == 7  # narrow grids never reach the int16 limit


@pytest.fixture(scope="module")
def digits():
    return dq.data.load("digits", "train"), dq.data.load("digits", "test")


@pytest.fixture(scope="module")
def model(digits):
    torch.manual_seed(0)
    m = dq.models.create("vgg-small", image_size=8)
    dq.train(m, digits[0], epochs=3, lr=3e-3, batch_size=64, progress=False)
    return m.eval()


def _int8_weights(path) -> list[np.ndarray]:
    proto = onnx.load(str(path))
    return [numpy_helper.to_array(i) for i in proto.graph.initializer if i.name.endswith(".weight_int8")]


@pytest.mark.parametrize(("target", "edge"), [("x86-avx2", 64), ("x86-vnni", 127), ("generic", 64)])
def test_weights_span_the_target_grid(model, digits, tmp_path, target, edge):
    q = quantize(
        model, dq.data.subsample(digits[0], 128), method="minmax", target=target, thin_conv_channels=0
    )
    assert q.quant_report.target == target
    path = export_onnx(q, tmp_path / "m.onnx", digits[0].x[:1])
    weights = _int8_weights(path)
    # per-channel minmax: every channel's largest |weight| lands exactly on the grid's edge
    assert len(weights) == 6 and all(int(np.abs(w).max()) == edge for w in weights)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["distiq.target"] == target


def test_weight_only_keeps_every_level(model, digits):
    q = quantize(model, mode="weight-only", example_input=digits[0].x[:2], target="x86-avx2")
    assert {layer.weight_quant.qmax for layer in dq.quant.modules.quant_layers(q).values()} == {127}


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_auto_target_agrees_with_onnx_runtime_here(model, digits, tmp_path, mode):
    """The simulation predicts what ORT computes on this CPU, whatever its int8 path."""
    if mode == "dynamic":
        torch.manual_seed(0)
        net = dq.models.create("mlp", image_size=8, hidden=(64, 32))
        dq.train(net, digits[0], epochs=3, lr=3e-3, batch_size=64, progress=False)
        net.eval()
        q = quantize(net, mode="dynamic", example_input=digits[0].x[:2])
    else:
        net = model
        q = quantize(net, dq.data.subsample(digits[0], 256), method="minmax")
    float_path = export_onnx(net, tmp_path / "float.onnx", digits[0].x[:1])
    int8_path = export_onnx(q, tmp_path / "int8.onnx", digits[0].x[:1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = deploy_check(float_path, int8_path, data=digits[1], simulated=q, batch_sizes=())
    assert not [str(w.message) for w in caught if issubclass(w.category, DeploymentWarning)], HERE
    assert report.cpu["target"] == cpu_target() and report.file_target == cpu_target()
    assert report.compared_with == "simulated" and report.samples == len(digits[1])
    assert report.agreement >= 0.995, f"{mode} on {HERE}: agreement {report.agreement}"
    acc = report.accuracy
    assert abs(acc["onnx"] - acc["simulated"]) <= 0.003, f"{mode} on {HERE}: {acc}"
    y = digits[1].y
    with torch.no_grad():
        sim = q(digits[1].x).argmax(1)
    assert acc["simulated"] == pytest.approx(float((sim == y).double().mean()))


def test_disagreement_warns_naming_the_cpu_and_the_fix(model, digits, tmp_path):
    q = quantize(model, dq.data.subsample(digits[0], 256), method="minmax")
    float_path = export_onnx(model, tmp_path / "float.onnx", digits[0].x[:1])
    int8_path = export_onnx(q, tmp_path / "int8.onnx", digits[0].x[:1])
    wrong = quantize(model, dq.data.subsample(digits[0], 256), method="minmax")
    with torch.no_grad():
        wrong.classifier.fc.bias.add_(torch.arange(10.0) * 5)  # a simulation that predicts otherwise
    with pytest.warns(DeploymentWarning, match="DISAGREES WITH THE SIMULATED MODEL") as caught:
        report = deploy_check(float_path, int8_path, data=digits[1], simulated=wrong, batch_sizes=())
    message = next(str(w.message) for w in caught if "DISAGREES" in str(w.message))
    assert cpu_info()["model"] in message and "target='auto'" in message
    assert report.agreement < 0.99


def test_file_for_another_target_is_flagged_where_it_saturates(model, digits, tmp_path):
    """A file made for VNNI overflows an AVX2-only CPU's kernels: flagged there, and only there."""
    q = quantize(model, dq.data.subsample(digits[0], 256), method="minmax", target="x86-vnni")
    float_path = export_onnx(model, tmp_path / "float.onnx", digits[0].x[:1])
    int8_path = export_onnx(q, tmp_path / "int8.onnx", digits[0].x[:1])
    report = deploy_check(float_path, int8_path, batch_sizes=(), warn=False)
    flagged = [m for m in report.warnings if "MADE FOR x86-vnni" in m]
    if resolve_target("auto").saturates:
        assert flagged and cpu_target() in flagged[0], f"{HERE}: {report.warnings}"
    else:
        assert not flagged, f"{HERE}: {report.warnings}"


def test_qdq_reference_is_the_simulation_and_exposes_saturating_kernels(model, digits, tmp_path):
    """Run with no graph optimisation, a QDQ file computes what distiq simulated, on every CPU (the
    simulation is torch, the reference ORT's unfused ops: independent code). ORT's fused integer
    kernels match that reference unless they saturate here: a file for VNNI on an AVX2-only CPU."""
    x, fused_error = digits[1].x, {}
    for target in ("auto", "x86-vnni"):
        q = quantize(model, dq.data.subsample(digits[0], 256), method="minmax", target=target)
        int8_path = export_onnx(q, tmp_path / f"{target}.onnx", digits[0].x[:1])
        reference = qdq_reference_outputs(int8_path, x)
        with torch.no_grad():
            simulated = q(x)
        assert has_qdq_reference(int8_path)
        assert float((reference - simulated).abs().max()) < 0.01 * float(simulated.abs().max()), HERE
        assert float((reference.argmax(1) == simulated.argmax(1)).double().mean()) >= 0.995, HERE
        fused_error[target] = float((onnx_outputs(int8_path, x) - reference).abs().max())
    print(f"{HERE}: fused kernels vs QDQ reference, max |logit error|: {fused_error}")
    if resolve_target("auto").saturates:
        assert fused_error["x86-vnni"] > 20 * fused_error["auto"], f"{HERE}: {fused_error}"
    else:
        assert fused_error["x86-vnni"] < 0.05 and fused_error["auto"] < 0.05, f"{HERE}: {fused_error}"


def test_check_without_simulation_compares_with_the_files_own_arithmetic(model, digits, tmp_path):
    """No simulated model (a file from elsewhere): the kernels are judged against the QDQ file's own
    arithmetic, the quantization error is recorded apart as the float agreement."""
    q = quantize(model, dq.data.subsample(digits[0], 256), method="minmax")
    float_path = export_onnx(model, tmp_path / "float.onnx", digits[0].x[:1])
    int8_path = export_onnx(q, tmp_path / "int8.onnx", digits[0].x[:1])
    report = deploy_check(float_path, int8_path, data=digits[1], batch_sizes=(), warn=False)
    assert report.compared_with == "qdq-reference" and report.agreement >= 0.995, HERE
    y, x = digits[1].y, digits[1].x
    with torch.no_grad():
        float_pred = model(x).argmax(1)
    got = onnx_outputs(int8_path, x).argmax(1)
    assert report.float_agreement == pytest.approx(float((got == float_pred).double().mean()), abs=0.003)
    assert report.accuracy["simulated"] == pytest.approx(
        float((qdq_reference_outputs(int8_path, x).argmax(1) == y).double().mean())
    )
    assert not has_qdq_reference(float_path)  # no quantize/dequantize: compared with float, as before
