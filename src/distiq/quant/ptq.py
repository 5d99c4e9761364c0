"""Post-training quantization: fold, fuse, wrap, place activation quantizers, calibrate.

``prepare`` turns a float model into a simulated-quantized copy following a :class:`QuantizeSpec`;
``calibrate_`` streams calibration batches through it. Where the activation quantizers go decides
whether ONNX Runtime can run the exported graph with integer kernels, so placement follows the
recorded dataflow (:mod:`distiq.quant.trace`), as ORT's QDQ fusions expect:

* every quantized Conv/Linear quantizes its output (after the fused ReLU), except a model output
  (the logits stay float): ``DQ -> Conv -> Q`` is what ORT fuses into ``QLinearConv``;
* a layer's input is walked back through value-preserving ops (max pool, flatten, dropout, ReLU,
  identity) to the tensor that made it. If that tensor is already quantized the layer reuses its grid
  (re-applied after e.g. a max pool, which ORT then runs on uint8); otherwise one new quantizer wraps
  the module on that path nearest the layer (e.g. the ReLU after a residual add, or the global pool:
  after a ReLU, not before it), so every reader of that module's output — the next conv and the
  shortcut alike — sees the same grid; failing a module there, the layer quantizes its own input (the
  model's input, a functional op's result).

A layer type with weights that distiq cannot quantize (LSTM, Embedding, ConvTranspose, a BN with no
conv to fold into, ...) is named in a warning and in the report, and left in float.
"""

from __future__ import annotations

import copy
import itertools
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from distiq.data.arrays import as_arrays
from distiq.errors import DistiqError
from distiq.models.hooks import get_module

from .adaround import adaround_
from .fuse import FusedGroup, fold_bn_, set_module
from .modules import (
    ActQuant,
    QuantConv2d,
    QuantLinear,
    QuantOutput,
    WeightQuant,
    quant_layers,
    quantizers,
    set_state,
)
from .spec import MODES, QuantizeSpec
from .target import resolve_target
from .trace import INPUT, Dataflow, Node, trace

PRESERVING_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.Identity, nn.Flatten, nn.Dropout, nn.ReLU)
SKIPPED = "kept in float on request (skip)"
NO_OPS = (nn.Identity, nn.Dropout)  # vanish in eval mode and in the exported graph
PRESERVING_FUNCTIONS = {
    "flatten", "view", "reshape", "squeeze", "unsqueeze", "contiguous", "__getitem__",
    "max_pool2d", "relu", "dropout", "detach", "clone",
}  # fmt: skip


@dataclass
class QuantReport:
    """What quantization did, for users and the JSON report of ``distiq quantize``.

    Attributes:
        config: The options used.
        layers: Quantized layers: path, type, weight bits, per-channel, fused ReLU, input/output grid.
        float_layers: Layers left in float, each with the reason and ``chosen``: True when kept in float
            on purpose (``skip``, thin convs), False when distiq cannot quantize it.
        fused: Fused groups (layer, folded BN, fused ReLU).
        activation_quantizers: Number of calibrated activation grids.
        calibration_seconds: Wall-clock time of the calibration pass.
        calibration_samples: Samples streamed through the calibrators.
        target: The CPU target the grids were made for (``config.target`` resolved).
        rounding: AdaRound's per-layer records (output error with nearest and learned rounding, share
            of weights rounded the other way, seconds); empty with nearest rounding.
    """

    config: dict
    layers: list[dict] = field(default_factory=list)
    float_layers: list[dict] = field(default_factory=list)
    fused: list[dict] = field(default_factory=list)
    activation_quantizers: int = 0
    calibration_seconds: float = 0.0
    calibration_samples: int = 0
    target: str = ""
    rounding: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def iter_inputs(data: Any, batch_size: int = 64, limit: int | None = None) -> Iterator[torch.Tensor]:
    """Input batches from a dataset, a tensor of inputs, or an iterable of tensors / ``(x, y)`` pairs."""
    if isinstance(data, Dataset) and not isinstance(data, torch.Tensor):
        data = as_arrays(data).x
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if isinstance(data, torch.Tensor):
        tensor = data
        data = (tensor[i : i + batch_size] for i in range(0, len(tensor), batch_size))
    for i, batch in enumerate(data):
        if limit is not None and i >= limit:
            return
        if isinstance(batch, list | tuple):
            batch = batch[0]
        yield torch.as_tensor(batch, dtype=torch.float32)


def example_from(model: nn.Module, data: Any, example_input: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
    """A small input batch for tracing (given, the first calibration batch, or built from the model's
    ``config``) and ``data`` again — re-chained when it is a one-shot iterator that was peeked."""
    if example_input is not None:
        return example_input[:2], data
    if data is not None:
        if isinstance(data, Iterator):
            first = next(data, None)
            if first is None:
                raise DistiqError("calib_data is empty")
            data = itertools.chain([first], data)
            return next(iter_inputs([first], 2, 1))[:2], data
        for batch in iter_inputs(data, 2, 1):
            return batch[:2], data
    config = getattr(model, "config", None) or {}
    if "in_channels" in config and "image_size" in config:
        size = config["image_size"]
        return torch.zeros(2, config["in_channels"], size, size), data
    raise DistiqError("quantize: give calib_data or example_input, to trace the model")


QUANTIZABLE = (nn.Conv2d, nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear)


def _float_reason(module: nn.Module, called: int, config: QuantizeSpec) -> str | None:
    """Why a module with weights stays in float, or ``None`` if it gets quantized."""
    if type(module) in QUANTIZABLE:
        if config.mode == "dynamic" and isinstance(module, nn.Conv2d):
            return "dynamic mode quantizes Linear layers only (as PyTorch and ONNX Runtime do)"
        if called > 1:
            return f"called {called} times per forward; one grid per call site is not supported"
        return None
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return f"{type(module).__name__} follows no Conv/Linear it could be folded into"
    return f"{type(module).__name__} has no quantized implementation in distiq"


def _chosen_float_reason(path: str, module: nn.Module, config: QuantizeSpec) -> str | None:
    """Why a quantizable module stays in float by choice (not reported as a warning), or ``None``."""
    if any(path == s or path.startswith(s + ".") for s in config.skip):
        return SKIPPED
    if not (config.quantizes_activations and isinstance(module, nn.Conv2d)):
        return None
    if module.in_channels > config.thin_conv_channels:
        return None
    return (
        f"{module.in_channels} input channel(s): ONNX Runtime's integer conv is slower than its float "
        f"conv on so few (thin_conv_channels={config.thin_conv_channels})"
    )


def _walk_back(
    graph: Dataflow, value: int, modules: dict[str, nn.Module], known: dict[str, ActQuant]
) -> tuple[ActQuant | None, list[Node]]:
    """Follow ``value`` back through value-preserving ops to the tensor that made it.

    Returns ``(grid, path)``: the quantizer already on that tensor (or ``None``) and the nodes walked,
    ordered from the source towards the reader (the unquantized source node itself first).
    """
    path: list[Node] = []
    while True:
        index = graph.producer.get(value, INPUT)
        if index < 0:
            return None, path[::-1]
        node = graph.nodes[index]
        if node.kind == "module" and node.target in known:
            return known[node.target], path[::-1]
        if node.kind == "module":
            preserving = isinstance(modules[node.target], PRESERVING_MODULES)
        else:
            preserving = node.target in PRESERVING_FUNCTIONS
        path.append(node)
        if not preserving or len(node.inputs) != 1:
            return None, path[::-1]
        value = node.inputs[0]


def prepare(
    model: nn.Module, config: QuantizeSpec, example_input: torch.Tensor
) -> tuple[nn.Module, QuantReport]:
    """A simulated-quantized copy of ``model`` (quantizers placed, weights calibrated, not activations).

    Args:
        model: The float model (not modified).
        config: What to quantize and how.
        example_input: A small batch, to record the dataflow.
    """
    qmodel = copy.deepcopy(model).eval()
    for path in config.skip:
        get_module(qmodel, path)  # a typo names the closest real paths
    groups = fold_bn_(qmodel, example_input)
    graph = trace(qmodel, example_input)
    modules = dict(qmodel.named_modules())
    report = QuantReport(config=config.model_dump(mode="json"), target=resolve_target(config.target).name)
    report.fused = [asdict(g) for g in groups]
    fused_relu = {g.layer: g.relu for g in groups if g.relu}
    targets = _choose_layers(qmodel, graph, config, report)
    for path in targets:
        layer = modules[path]
        relu = config.quantizes_activations and path in fused_relu
        wq = WeightQuant(
            config.bits,
            config.per_channel,
            config.weight_method or "minmax",
            layer.weight.shape[0],
            max_int=config.weight_max,
        )
        cls = QuantConv2d if isinstance(layer, nn.Conv2d) else QuantLinear
        set_module(qmodel, path, cls.from_float(layer, wq, relu))
        if relu:
            set_module(qmodel, fused_relu[path], nn.Identity())
    layers = quant_layers(qmodel)
    if config.mode == "dynamic":
        for layer in layers.values():
            layer.input_quant = ActQuant(8, False, "minmax", dynamic=True)
    elif config.quantizes_activations:
        _place_activations(qmodel, graph, layers, config)
    set_state(qmodel, "quant")
    for path, layer in layers.items():
        report.layers.append(_describe(path, layer))
    report.activation_quantizers = sum(
        1 for _, q in quantizers(qmodel) if isinstance(q, ActQuant) and not q._source and not q.dynamic
    )
    qmodel.quant_report = report  # type: ignore[assignment]
    return qmodel, report


def _choose_layers(
    qmodel: nn.Module, graph: Dataflow, config: QuantizeSpec, report: QuantReport
) -> list[str]:
    targets = []
    for path, module in qmodel.named_modules():
        if next(module.parameters(recurse=False), None) is None:
            continue
        calls = len(graph.modules.get(path, []))
        if type(module) in QUANTIZABLE and calls == 0:
            continue  # never called: its weights are used by a parent's forward (reported there)
        reason, chosen = _float_reason(module, calls, config), False
        if reason is not None:
            warnings.warn(f"quantize: {path} stays in float: {reason}", stacklevel=4)
        else:
            reason, chosen = _chosen_float_reason(path, module, config), True
        if reason is None:
            targets.append(path)
        else:
            entry = {"layer": path, "type": type(module).__name__, "reason": reason, "chosen": chosen}
            report.float_layers.append(entry)
    return targets


def _place_activations(qmodel: nn.Module, graph: Dataflow, layers: dict, config: QuantizeSpec) -> None:
    def new_quant() -> ActQuant:
        return ActQuant(config.act_bits, config.symmetric_activations, config.method, config.method_options)

    def tied(grid: ActQuant) -> ActQuant:
        return ActQuant(config.act_bits, config.symmetric_activations, config.method).tie(grid)

    modules = dict(qmodel.named_modules())
    known: dict[str, ActQuant] = {}  # module path -> the grid on its output
    for path, layer in layers.items():
        node = graph.module_node(path)
        if node is not None and not set(node.outputs) & set(graph.outputs):
            layer.output_quant = known[path] = new_quant()
    own_input: dict[int, ActQuant] = {}
    for path, layer in layers.items():
        node = graph.module_node(path)
        if node is None or not node.inputs:
            continue
        grid, walked = _walk_back(graph, node.inputs[0], modules, known)
        if grid is None:
            # the module nearest the reader (after a ReLU, not before it), if it makes one tensor
            sites = [
                i
                for i, n in enumerate(walked)
                if n.kind == "module" and len(graph.modules[n.target]) == 1 and len(n.outputs) == 1
            ]
            at = sites[-1] if sites else None
            if at is None:  # the model input, or only functional ops: quantize at this layer
                value = node.inputs[0]
                if value in own_input:
                    layer.input_quant = tied(own_input[value])
                else:
                    layer.input_quant = own_input[value] = new_quant()
                layer.input_grid = [layer.input_quant.source]
                continue
            site = walked[at].target
            grid = known[site] = new_quant()
            set_module(qmodel, site, QuantOutput(modules[site], grid))
            walked = walked[at + 1 :]
        ops = [n for n in walked if n.kind == "function" or not isinstance(modules[n.target], NO_OPS)]
        if ops:  # value-preserving ops in between: re-apply the same grid (ORT drops the pair)
            layer.input_quant = tied(grid)
        layer.input_grid = [grid]  # for the int32 bias of the export (scale = input x weight scale)


def _grid_name(q: ActQuant | None) -> str | None:
    if q is None:
        return None
    kind = "dynamic" if q.source.dynamic else ("tied" if q._source else q.method)
    return f"{'int' if q.symmetric else 'uint'}{q.bits} ({kind})"


def _describe(path: str, layer: Any) -> dict:
    own = layer.input_quant
    grid = layer.input_grid[0] if layer.input_grid else None
    source = _grid_name(own) if own is not None else ("upstream" if grid is not None else None)
    return {
        "layer": path,
        "type": "Conv2d" if isinstance(layer, QuantConv2d) else "Linear",
        "weight_bits": layer.weight_quant.bits,
        "per_channel": layer.weight_quant.per_channel,
        "relu_fused": bool(layer.relu),
        "input": source,
        "output": _grid_name(layer.output_quant),
    }


@torch.no_grad()
def calibrate_(qmodel: nn.Module, data: Any, config: QuantizeSpec) -> QuantReport:
    """Stream calibration batches through ``qmodel``'s activation quantizers, then set their grids.

    Weights stay float during the pass (ranges are those of the float model, as ONNX Runtime's
    ``quantize_static`` calibrates), and no batch is kept: each calibrator merges what it saw.
    """
    report: QuantReport = qmodel.quant_report  # type: ignore[assignment]
    acts = [q for _, q in quantizers(qmodel) if isinstance(q, ActQuant) and not q.dynamic]
    if not acts:
        return report
    if data is None:
        raise DistiqError(f"mode {config.mode!r} needs calib_data to calibrate activation ranges")
    set_state(qmodel, "observe", weights="off")
    for q in acts:
        q.begin_observe()
    t0 = time.perf_counter()
    seen = 0
    for batch in iter_inputs(data, config.batch_size, config.calib_batches):
        qmodel(batch)
        seen += len(batch)
    if seen == 0:
        raise DistiqError("calib_data is empty")
    unused = [q for q in acts if not q._source and not q.end_observe()]
    report.calibration_seconds = time.perf_counter() - t0
    report.calibration_samples = seen
    set_state(qmodel, "quant")
    for q in unused:  # e.g. behind a branch the calibration data never took
        q.enabled = False
    return report


def take_inputs(data: Any, count: int, batch_size: int = 64) -> tuple[torch.Tensor, Any]:
    """The first ``count`` inputs of ``data`` as one tensor, and ``data`` again (re-chained when it is a
    one-shot iterator, so calibration still sees every batch)."""
    taken: list[torch.Tensor] = []
    if isinstance(data, Iterator):
        raw = []
        for batch in data:
            raw.append(batch)
            taken.append(next(iter_inputs([batch], batch_size)))
            if sum(len(t) for t in taken) >= count:
                break
        data = itertools.chain(raw, data)
    else:
        for batch in iter_inputs(data, batch_size):
            taken.append(batch)
            if sum(len(t) for t in taken) >= count:
                break
    if not taken:
        raise DistiqError("calib_data is empty")
    return torch.cat(taken)[:count], data


def round_(qmodel: nn.Module, inputs: torch.Tensor, config: QuantizeSpec) -> QuantReport:
    """Apply ``config.rounding`` to ``qmodel``'s weights in place (nearest: nothing to do; adaround:
    learned on ``inputs``, after the activation grids are calibrated) and record what it did."""
    report: QuantReport = qmodel.quant_report  # type: ignore[assignment]
    if config.rounding == "adaround":
        report.rounding = adaround_(qmodel, inputs, config.adaround)
        by_layer = {r["layer"]: r for r in report.rounding}
        for entry in report.layers:
            entry["rounding"] = "adaround" if entry["layer"] in by_layer else "nearest"
    return report


__all__ = [
    "MODES",
    "FusedGroup",
    "QuantReport",
    "calibrate_",
    "iter_inputs",
    "prepare",
    "round_",
    "take_inputs",
]
