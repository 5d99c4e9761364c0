"""Deployability: which nodes ONNX Runtime runs with integer kernels, and is int8 actually faster?

A QDQ file only says "these tensors may be int8"; whether the runtime fuses ``DQ -> Conv -> Q`` into
``QLinearConv`` depends on details (a float bias, a missing output quantizer, a ReLU it cannot drop, an
op with no integer kernel). When it does not, the "quantized" model silently runs float kernels plus
conversions and is *slower* than the float model. This module asks ORT itself: it loads the file with
``optimized_model_filepath`` set, reads back the graph ORT will execute, names every compute node's
kernel (integer or float) with the reason read off the QDQ pattern around it, and times float against
int8 sessions, interleaved so that load on a shared machine hits both alike.

4-bit files (INT4 weight initializers) are small, not fast, on ONNX Runtime's CPU provider (1.32, as
read back from its optimised graph and profiles): no integer Conv/Gemm takes INT4, so each weight's
``DequantizeLinear`` runs at every inference and a float kernel follows; only a ``MatMul`` whose input
is float is fused into ``MatMulNBits``, which unpacks the 4-bit weight inside the kernel (and, at its
default ``accuracy_level`` 4, quantizes the activations to int8 per block). The report says which.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn
from torch.utils.data import Dataset

from distiq import runtime
from distiq.data.arrays import ArrayDataset, as_arrays
from distiq.engine.batches import predict_logits
from distiq.errors import DataError

from .target import TARGETS, cpu_info

#: Below this top-1 agreement between the ORT file and what it is checked against, warn loudly.
MIN_AGREEMENT = 0.99
#: Largest accuracy gap (fraction) between ORT and the simulation before warning: 0.3 points.
MAX_ACCURACY_GAP = 0.003

INTEGER_OPS = {
    "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool",
    "QLinearAveragePool", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax",
    "QAttention", "DynamicQuantizeLSTM", "QLinearReduceMean", "MatMulNBits",
}  # fmt: skip
FLOAT_COMPUTE_OPS = {
    "Conv", "FusedConv", "NchwcConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "ConvTranspose",
    "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention", "Einsum",
}  # fmt: skip
WEIGHTED_OPS = {"Conv", "Gemm", "MatMul", "ConvTranspose", "LSTM", "GRU", "RNN"}


class DeploymentWarning(UserWarning):
    """The int8 model will not run as expected (float kernels, or no faster than float)."""


@dataclass
class NodeKernel:
    """How ONNX Runtime will execute one compute node of the file.

    Attributes:
        layer: The layer it comes from (module path read off its weight), or its output's name.
        op: Op type in the file.
        kernel: "integer" or "float".
        runtime_op: Op type ORT runs after its graph optimisations (e.g. "QLinearConv").
        reason: Why it stays float (empty for integer kernels).
        weight: How the file stores the weight: "int8", "int4", "uint8", "float" (or "" when it has none).
        detail: What the kernel does with a 4-bit weight (the dequantization's cost, MatMulNBits' mode).
    """

    layer: str
    op: str
    kernel: str
    runtime_op: str
    reason: str = ""
    weight: str = ""
    detail: str = ""


@dataclass
class DeployReport:
    """Integer/float kernels before and after quantizing, latencies, and warnings.

    Attributes:
        before: Kernels of the float file.
        after: Kernels of the quantized file.
        latency: ``{batch: {"float_ms", "int8_ms", "ratio"}}`` (ratio = int8 / float time).
        warnings: Problems found (also raised as :class:`DeploymentWarning`).
        cpu: Where it was checked: ``{"model", "target"}`` (:func:`~distiq.quant.target.cpu_info`).
        file_target: The CPU target the int8 file was made for (its ``distiq.target`` metadata).
        agreement: Top-1 agreement of the ORT int8 file with what it should compute, on the check
            data (``None`` without data): the simulated model when one was given; else, for a QDQ
            file, the file's own arithmetic (:func:`qdq_reference_outputs`); else the float file.
        compared_with: "simulated", "qdq-reference" or "float": what ``agreement`` is measured against.
        float_agreement: Top-1 agreement of the ORT int8 file with the float file: what quantizing
            changed, as opposed to what the kernels changed (``agreement``).
        accuracy: ``{"float", "simulated", "onnx"}`` on the check data (labelled data only;
            "simulated" is the simulated model's or the QDQ reference's, ``None`` with neither).
        samples: Number of check samples.
    """

    before: list[NodeKernel] = field(default_factory=list)
    after: list[NodeKernel] = field(default_factory=list)
    latency: dict[int, dict[str, float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    cpu: dict[str, str] = field(default_factory=cpu_info)
    file_target: str | None = None
    agreement: float | None = None
    compared_with: str | None = None
    float_agreement: float | None = None
    accuracy: dict[str, float | None] | None = None
    samples: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """The quantized file's kernels as a markdown table."""
        rows = [
            "| layer | op | ORT kernel | runs as | why float | weight | 4-bit weight |",
            "|---|---|---|---|---|---|---|",
        ]
        rows += [
            f"| {n.layer} | {n.op} | {n.kernel} | {n.runtime_op} | {n.reason} | {n.weight} | {n.detail} |"
            for n in self.after
        ]
        return "\n".join(rows)


def _layer_name(weight: str) -> str:
    for suffix in (".weight_int8", ".weight_int4", ".weight_t", ".weight_quantized", ".weight"):
        if weight.endswith(suffix):
            return weight[: -len(suffix)]
    return weight


FOUR_BIT = {onnx.TensorProto.INT4: "int4", onnx.TensorProto.UINT4: "uint4"}
STORAGE = {onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8", **FOUR_BIT}


def _weight_storage(node: onnx.NodeProto, producers: dict, inits: dict) -> str:
    """The element type the file stores ``node``'s weight in ("" when it has no weight input)."""
    weight = node.input[1] if len(node.input) > 1 else ""
    src = producers.get(weight)
    init = (
        inits.get(src.input[0])
        if src is not None and src.op_type == "DequantizeLinear"
        else inits.get(weight)
    )
    if init is None:
        return ""
    return STORAGE.get(init.data_type, "float")


def _four_bit_detail(weight: str, runtime_op: str, optimized) -> str:
    """What ORT does with the 4-bit weight initializer ``weight`` (its fused MatMulNBits reads a
    repacked copy named after it)."""
    if runtime_op == "MatMulNBits":
        level = next(
            (
                a.i
                for n in optimized.graph.node
                if n.op_type == "MatMulNBits" and any(i.startswith(weight) for i in n.input)
                for a in n.attribute
                if a.name == "accuracy_level"
            ),
            None,
        )
        mode = (
            "activations quantized to int8 per block at run time, int8 dot products (accuracy_level 4)"
            if level == 4
            else f"float compute (accuracy_level {level})"
        )
        return f"MatMulNBits unpacks the 4-bit weight inside the kernel; {mode}"
    return (
        f"DequantizeLinear expands the 4-bit weight to float at every run, then a float {runtime_op} runs "
        "(small file, float speed; a static file exported with int4=False keeps int8 containers, which "
        "ORT runs on integer kernels)"
    )


def _why_float(node: onnx.NodeProto, producers: dict, consumers: dict, inits: dict) -> tuple[str, str]:
    """``(layer, reason)`` for a compute node of the file, the reason empty when the QDQ pattern
    around it is one ORT fuses into an integer kernel."""

    def producer_op(name: str) -> str | None:
        p = producers.get(name)
        return p.op_type if p is not None else None

    weight = node.input[1] if len(node.input) > 1 else ""
    w_src = producers.get(weight)
    if w_src is not None and w_src.op_type == "DequantizeLinear":
        layer = _layer_name(w_src.input[0])
    else:
        layer = _layer_name(weight) if weight in inits else node.output[0]
    if node.op_type not in WEIGHTED_OPS - {"LSTM", "GRU", "RNN", "ConvTranspose"}:
        return layer, f"ORT has no integer kernel for {node.op_type} in QDQ form"
    if w_src is None or w_src.op_type != "DequantizeLinear":
        return layer, "weights are float (layer not quantized)"
    w_init = inits.get(w_src.input[0])
    if w_init is not None and w_init.data_type in FOUR_BIT:
        return layer, f"4-bit weights: ORT has no integer {node.op_type} kernel for INT4"
    if producer_op(node.input[0]) != "DequantizeLinear":
        return layer, "input is not quantized (no DequantizeLinear before it)"
    if len(node.input) > 2 and node.input[2]:
        b_src = producers.get(node.input[2])
        is_dq = b_src is not None and b_src.op_type == "DequantizeLinear"
        b_init = inits.get(b_src.input[0]) if is_dq else None
        if b_init is None or b_init.data_type != onnx.TensorProto.INT32:
            return layer, "bias is not int32 with scale input_scale x weight_scale"
    if node.op_type == "Conv":
        readers = consumers.get(node.output[0], [])
        if len(readers) == 1 and readers[0].op_type == "Relu":
            readers = consumers.get(readers[0].output[0], [])
        if not readers or any(r.op_type != "QuantizeLinear" for r in readers):
            return layer, "output is not quantized (no QuantizeLinear after it)"
    return layer, ""


def read_onnx(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """The ONNX model at ``path`` (external data not loaded); a missing or corrupt file is a
    :class:`~distiq.errors.DataError` naming it, not a protobuf traceback."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: ONNX file not found")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, onnx's own errors
        raise DataError(f"{path}: not a readable ONNX file ({' '.join(str(e).split())})") from None


def kernels(path: str | os.PathLike[str]) -> list[NodeKernel]:
    """The compute nodes of an ONNX file and the kernels ONNX Runtime's CPU provider will use.

    ORT optimises the graph (extended level: the QDQ fusions, without hardware-specific layout
    changes) and writes it out; nodes whose output survives under an integer op count as integer.
    """

    model = read_onnx(path)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    with tempfile.TemporaryDirectory() as tmp:
        optimized_path = Path(tmp) / "optimized.onnx"
        runtime.session(path, threads=1, opt_level="extended", optimized_path=optimized_path)
        optimized = onnx.load(str(optimized_path))
    result = []
    dynamic = {n.output[0] for n in graph.node if n.op_type in ("MatMulInteger", "ConvInteger")}
    for node in graph.node:
        if node.op_type in ("MatMulInteger", "ConvInteger"):
            layer = _layer_name(node.input[1])
            after = _runtime_op(node, producers, consumers, optimized)
            result.append(NodeKernel(layer, node.op_type, "integer", after))
            continue
        if node.op_type not in FLOAT_COMPUTE_OPS or node.input[0] in dynamic:
            continue
        layer, reason = _why_float(node, producers, consumers, inits)
        after = _runtime_op(node, producers, consumers, optimized)
        integer = after in INTEGER_OPS
        if integer:
            reason = ""
        elif not reason:
            reason = f"ORT kept {node.op_type} in float"
        storage = _weight_storage(node, producers, inits)
        four = storage in FOUR_BIT.values()
        detail = _four_bit_detail(producers[node.input[1]].input[0], after, optimized) if four else ""
        if four and node.op_type == "MatMul" and after in ("Gemm", "FusedGemm"):
            reason = "4-bit weights: ORT fused this MatMul with its bias (and ReLU) into a float Gemm first"
        kind = "integer" if integer else "float"
        result.append(NodeKernel(layer, node.op_type, kind, after, reason, storage, detail))
    return result


def _runtime_op(node: onnx.NodeProto, producers: dict, consumers: dict, optimized) -> str:
    """The op ORT executes for ``node``: the optimised node reading the same weight (an integer kernel
    reads the int8 initializer itself, a float one the DequantizeLinear's output), else the one making
    ``node``'s output or the output of the Relu/Q chain ORT fused it with."""
    weight = node.input[1] if len(node.input) > 1 else ""
    names = {weight} | ({producers[weight].input[0]} if weight in producers else set())
    for candidate in optimized.graph.node:
        if candidate.op_type not in ("DequantizeLinear", "QuantizeLinear") and names & set(candidate.input):
            return candidate.op_type
    runtime = {o: n.op_type for n in optimized.graph.node for o in n.output}
    frontier, seen = list(node.output), list(node.output)
    for _ in range(3):
        frontier = [o for n in frontier for r in consumers.get(n, []) for o in r.output]
        seen += frontier
    return next((runtime[n] for n in seen if n in runtime), "fused")


def compare_latency(
    paths: dict[str, str | os.PathLike[str]],
    batch_sizes: tuple[int, ...] = (1, 256),
    *,
    threads: int = 2,
    repeats: int = 30,
    warmup: int = 3,
    seconds: float | None = None,
    seed: int = 0,
) -> dict[int, dict[str, float]]:
    """Median ORT latency (ms) of several files at each batch size, measured interleaved.

    Rounds run every file once in turn (each round starting one file later, so no file always
    follows the same one), so a burst of load from another process slows all of them alike instead
    of biasing whichever happened to run then; worker threads do not spin between runs.

    Args:
        paths: Label -> ONNX file (same input shape).
        batch_sizes: Batch sizes to time.
        threads: ORT intra-op threads.
        repeats: Timed rounds per batch size.
        warmup: Untimed rounds first.
        seconds: Stop a batch size's rounds early after this long (at least 5 rounds are kept).
        seed: Seed of the random input.
    """
    timed = runtime.time_files(
        paths, batch_sizes, threads=threads, rounds=repeats, warmup=warmup, seconds=seconds, seed=seed
    )
    return {batch: {label: r.p50_ms for label, r in row.items()} for batch, row in timed.items()}


def onnx_outputs(
    path: str | os.PathLike[str], x: torch.Tensor, batch_size: int = 256, *, opt_level: str = "all"
) -> torch.Tensor:
    """First output of an ONNX file run by ORT's CPU provider on ``x``, in batches."""
    session = runtime.session(path, threads=0, opt_level=opt_level)
    outs = [
        runtime.run_checked(session, x[i : i + batch_size].numpy(), path)
        for i in range(0, len(x), batch_size)
    ]
    return torch.from_numpy(np.concatenate(outs))


def has_qdq_reference(path: str | os.PathLike[str]) -> bool:
    """Can the file serve as its own reference? True for a QDQ file: quantize/dequantize nodes around
    float ops and no integer op in the file itself (``QLinearConv``, ``MatMulInteger``, ...), which
    would run the same integer kernels with or without graph optimisations."""
    ops = {n.op_type for n in read_onnx(path).graph.node}
    return "DequantizeLinear" in ops and not ops & (INTEGER_OPS | {"DynamicQuantizeLinear"})


def qdq_reference_outputs(path: str | os.PathLike[str], x: torch.Tensor) -> torch.Tensor:
    """What a QDQ file defines: ORT with every graph optimisation off runs each ``QuantizeLinear`` /
    ``DequantizeLinear`` and then the float op, exactly as written (no fusion into ``QLinearConv``).

    Why: the optimised session fuses the same file into integer kernels, which may compute something
    else on this CPU (the u8s8 saturation of AVX2 without VNNI). The two runs differ only by those
    kernels, so their disagreement is the deployment error alone; the float file's disagreement mixes
    in the quantization error, which a handful of check samples turns into noise.
    """
    return onnx_outputs(path, x, opt_level="disabled")


def file_target(path: str | os.PathLike[str]) -> str | None:
    """The CPU target a distiq int8 file was made for (``None`` for other files)."""
    from .export import TARGET_KEY

    props = {p.key: p.value for p in read_onnx(path).metadata_props}
    return props.get(TARGET_KEY)


def _fix(report: DeployReport) -> str:
    here = report.cpu["target"]
    return (
        f"re-quantize on this machine with target='auto' (= {here!r}), or with target='generic' for a "
        "file that is exact on every CPU"
    )


def _check_target(report: DeployReport) -> None:
    made = TARGETS.get(report.file_target or "")
    here = TARGETS[report.cpu["target"]]
    if made is not None and here.saturates and not made.saturates:
        report.warnings.append(
            f"INT8 FILE MADE FOR {made.name} RUNS ON {report.cpu['model']} ({here.name}), whose int8 "
            f"kernels use {here.kernel}: its 8-bit weights overflow them and it computes something "
            f"else than was calibrated; {_fix(report)}"
        )


#: What ``DeployReport.agreement`` is measured against (``compared_with``), as reports and the command
#: line word it.
COMPARED_WITH = {
    "simulated": "the simulated model",
    "qdq-reference": "the file's own QDQ arithmetic",
    "float": "the float model",
}
#: How a reference was run, where its name alone does not say it (the loud warning adds it).
_REFERENCE_RUN = {"qdq-reference": " (ORT, no graph optimisation)"}


def _check_agreement(
    report: DeployReport, float_path, int8_path, data: Dataset | torch.Tensor, simulated: nn.Module | None
) -> None:
    """ORT int8 vs what the file should compute (:class:`DeployReport`'s ``agreement``), vs float, and
    accuracies on ``data``; warns when the kernels disagree."""
    labelled = not isinstance(data, torch.Tensor)
    arrays = as_arrays(data) if labelled else ArrayDataset(data, torch.zeros(len(data), dtype=torch.int64))
    x = arrays.x
    got = onnx_outputs(int8_path, x).argmax(1)
    ref_float = onnx_outputs(float_path, x).argmax(1)
    if simulated is not None:
        against, report.compared_with = predict_logits(simulated, arrays).argmax(1), "simulated"
    elif has_qdq_reference(int8_path):
        against, report.compared_with = qdq_reference_outputs(int8_path, x).argmax(1), "qdq-reference"
    else:
        against, report.compared_with = ref_float, "float"
    sim = None if report.compared_with == "float" else against
    report.agreement = float((got == against).double().mean())
    report.float_agreement = float((got == ref_float).double().mean())
    report.samples = len(x)
    if labelled:
        y = arrays.y

        def acc(pred: torch.Tensor) -> float:
            return float((pred == y).double().mean())

        report.accuracy = {
            "float": acc(ref_float),
            "simulated": acc(sim) if sim is not None else None,
            "onnx": acc(got),
        }
    where = f"{report.cpu['model']} ({report.cpu['target']})"
    if report.agreement < MIN_AGREEMENT:
        reference = COMPARED_WITH[report.compared_with].upper() + _REFERENCE_RUN.get(report.compared_with, "")
        report.warnings.append(
            f"INT8 FILE DISAGREES WITH {reference} on {where}: top-1 agreement "
            f"{100 * report.agreement:.2f}% on {len(x)} samples (expected >= {100 * MIN_AGREEMENT:.0f}%)"
            + (f"; {_fix(report)}" if sim is not None else "; keep sensitive layers in float")
        )
    acc_ = report.accuracy
    if acc_ and acc_["simulated"] is not None and acc_["simulated"] - acc_["onnx"] > MAX_ACCURACY_GAP:
        report.warnings.append(
            f"ONNX RUNTIME DELIVERS {100 * acc_['onnx']:.2f}% ON {where}, NOT THE SIMULATED "
            f"{100 * acc_['simulated']:.2f}% (gap over {100 * MAX_ACCURACY_GAP:.1f} points); {_fix(report)}"
        )


def _chosen_float_layers(simulated: nn.Module | None) -> dict[str, str]:
    """Layers the quantizer kept in float on purpose (``skip``, thin convs), with why: float kernels
    there are the plan, not a deployment problem."""
    report = getattr(simulated, "quant_report", None)
    entries = report.float_layers if report is not None else []
    return {e["layer"]: e["reason"] for e in entries if e.get("chosen")}


def deploy_check(
    float_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str],
    *,
    data: Dataset | torch.Tensor | None = None,
    simulated: nn.Module | None = None,
    batch_sizes: tuple[int, ...] = (1, 256),
    threads: int = 2,
    repeats: int = 30,
    warn: bool = True,
) -> DeployReport:
    """Does the int8 file run on integer kernels, compute what was simulated, and run faster — on this
    CPU? Warns loudly (:class:`DeploymentWarning`) when not.

    Args:
        float_path: The float ONNX file.
        int8_path: The quantized ONNX file of the same model.
        data: Held-out check data (a labelled dataset, or a tensor of inputs): the int8 file is run
            in ORT on it and compared top-1 with ``simulated`` (without one: with the QDQ file's
            own arithmetic, or the float file for a file that has none), and with labels each one's
            accuracy is recorded. ``None``: kernels and latency only.
        simulated: The simulated-quantized model the file was exported from.
        batch_sizes: Batch sizes to time (none: skip timing).
        threads: ORT intra-op threads.
        repeats: Timed rounds per batch size.
        warn: Raise :class:`DeploymentWarning` for each problem (they are listed in the report anyway).
    """
    report = DeployReport(before=kernels(float_path), after=kernels(int8_path))
    report.file_target = file_target(int8_path)
    _check_target(report)
    if data is not None:
        _check_agreement(report, float_path, int8_path, data, simulated)
    chosen = _chosen_float_layers(simulated)
    for n in report.after:
        if n.kernel == "float" and n.layer in chosen:
            n.reason = f"kept in float: {chosen[n.layer]}"
        elif n.kernel == "float":
            report.warnings.append(f"{n.layer} ({n.op}) runs a float kernel: {n.reason}")
    if batch_sizes:
        timed = compare_latency(
            {"float": float_path, "int8": int8_path}, batch_sizes, threads=threads, repeats=repeats
        )
        for batch, t in timed.items():
            ratio = t["int8"] / t["float"]
            report.latency[batch] = {"float_ms": t["float"], "int8_ms": t["int8"], "ratio": ratio}
            if ratio >= 1.0:
                report.warnings.append(
                    f"INT8 IS NOT FASTER at batch {batch}: {t['int8']:.3f} ms vs float "
                    f"{t['float']:.3f} ms ({threads} threads) — deploy the float model, or check the "
                    "float kernels listed above"
                )
    if warn:
        for message in report.warnings:
            warnings.warn(message, DeploymentWarning, stacklevel=2)
    return report
