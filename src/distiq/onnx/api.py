"""``distiq.quantize_onnx``: int8 for a model given only as an ONNX file.

The same measured path as distiq's own models: activations collected through ONNX Runtime and
calibrated with distiq's calibrators (:mod:`distiq.onnx.collect`), grids placed as the torch path
places them (:mod:`distiq.onnx.graph`), the same QDQ graph written (:mod:`distiq.onnx.qdq`) for the CPU
target, optionally with the most sensitive nodes kept float under an accuracy budget
(:mod:`distiq.onnx.budget`), optionally after SmoothQuant (:mod:`distiq.onnx.smoothquant`, its
strength chosen on validation data when several are given), then checked where it will run:
per-layer error of each quantized node's output against float (both through ORT) and
:func:`distiq.quant.deploy.deploy_check` on the file. What was done and measured goes to a JSON
report next to the file (:func:`report_path`).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from distiq.data.arrays import ArrayDataset
from distiq.errors import DistiqError
from distiq.io import atomic_path
from distiq.quant.deploy import DeploymentWarning, DeployReport, deploy_check
from distiq.quant.export import TARGET_KEY
from distiq.quant.modules import ActQuant
from distiq.quant.spec import QuantizeSpec
from distiq.quant.target import resolve_target

from .budget import fidelity, mixed_precision
from .collect import Kept, batches, calibrate_tensors, run, session
from .graph import Graph, Layer, Plan, classify, grid_candidates, load, plan_activations
from .qdq import WeightGrid, dynamic_qdq, static_qdq
from .smoothquant import smooth

MODES = ("static", "dynamic")
APPLIES = ("mode", "method", "per_channel", "target")  # quantize_onnx's own keywords
#: QuantizeSpec fields that mean something for an ONNX file (the others are about torch models or QAT).
OPTIONS = (
    "bits", "act_bits", "weight_method", "symmetric_activations", "method_options", "skip",
    "calib_batches", "batch_size", "thin_conv_channels",
)  # fmt: skip


@dataclass
class OnnxQuantReport:
    """What :func:`quantize_onnx` did and measured (written as ``report_path(out_path)``).

    Attributes:
        source: The float file.
        output: The int8 file.
        config: The options used (the QuantizeSpec fields that apply to an ONNX file).
        target: The CPU target the grids were made for.
        layers: Quantized nodes: ``layer``, ``op``, ``input_grid``/``output_grid`` (tensor names).
        float_nodes: Nodes left float: ``layer``, ``op``, ``reason``, ``chosen`` (True when on purpose)
            and, for an op with weights, ``weight`` (its initializer's name).
        ranges: Grid tensor -> ``{"scale", "zero_point", "lo", "hi"}`` (static).
        calibration_samples: Samples streamed through the calibrators.
        calibration_seconds: Wall-clock time of the calibration pass.
        layer_errors: Per quantized node, ``sqnr_db`` and ``mse`` of its output (after its ReLU and
            output grid, as the next node reads it) in the int8 file against the float file, both run
            by ORT on the kept calibration samples; errors accumulate from the input onwards.
        smoothing: With ``smooth_quant``: ``alpha`` used (None: no smoothing chosen), ``groups`` (per
            smoothed input tensor: its MatMuls, where ``1/s`` was folded, the outlier ratio and the
            scales' range), and with several strengths the ``scores`` of each on ``val_data`` and
            their ``metric``.
        mixed_precision: With a ``budget``: ``budget``, ``float_accuracy``, ``accuracy`` (on the
            ``val_data``), ``float_layers``, ``met_budget``, ``steps`` and the ``sensitivity`` ranking.
        checked_on: What the deployability check's accuracy and agreement were measured on:
            "check_data", "calibration samples (not held out)" or "nothing" (kernels and latency only).
        deploy: :meth:`DeployReport.to_dict` of the file on this CPU.
    """

    source: str
    output: str
    config: dict
    target: str
    layers: list[dict] = field(default_factory=list)
    float_nodes: list[dict] = field(default_factory=list)
    ranges: dict[str, dict] = field(default_factory=dict)
    calibration_samples: int = 0
    calibration_seconds: float = 0.0
    layer_errors: list[dict] = field(default_factory=list)
    smoothing: dict | None = None
    mixed_precision: dict | None = None
    checked_on: str = "nothing"
    deploy: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def report_path(out_path: str | os.PathLike[str]) -> Path:
    """Where :func:`quantize_onnx` writes its JSON report: ``out_path`` with the suffix ``.json``."""
    return Path(out_path).with_suffix(".json")


def quantize_onnx(
    model_path: str | os.PathLike[str],
    calib_data: Any,
    out_path: str | os.PathLike[str],
    *,
    mode: str = "static",
    method: str = "kl",
    per_channel: bool = True,
    target: str = "auto",
    check_data: Any = None,
    check_samples: int = 512,
    latency_batches: tuple[int, ...] = (),
    threads: int = 2,
    budget: float | None = None,
    val_data: Any = None,
    matmul_outputs: str = "int8",
    smooth_quant: float | Sequence[float | None] | None = None,
    error_mask: str | None = None,
    **options: Any,
) -> Path:
    """Write an int8 ONNX file of the float ONNX model at ``model_path``.

    Static: uint8 activations calibrated on ``calib_data``, int8 weights (per output channel) and int32
    biases, as a QDQ graph ONNX Runtime runs with integer kernels (``QLinearConv``, ``QGemm``,
    ``QLinearMatMul``); convs with few input channels stay float (``thin_conv_channels``). Dynamic:
    MatMul/Gemm weights int8, activations quantized at run time (``MatMulInteger``, which ORT fuses into
    ``DynamicQuantizeMatMul``); convs stay float. Nodes distiq cannot quantize (another domain, an
    unsupported op with weights, a MatMul of two activations) stay float and are named in a warning;
    weightless standard ops (Add, Concat, pooling, activations) compute in float between the grids.

    Args:
        model_path: The float ONNX file.
        calib_data: Calibration inputs: a dataset, an array/tensor, or an iterable of arrays, ``(x, y)``
            pairs or ``{input name: array}`` dicts, streamed. Optional in dynamic mode.
        out_path: Destination ``.onnx`` file (replaced atomically); the report goes to
            :func:`report_path` of it.
        mode: "static" or "dynamic".
        method: Activation calibrator: kl, minmax, percentile, mse, ema (or a registered one).
        per_channel: One weight scale per output channel.
        target: CPU target (``"auto"``: this machine); on one whose int8 kernels saturate, weights use
            ``[-64, 64]`` (see :mod:`distiq.quant.target`).
        check_data: Held-out data for the deployability check (a labelled dataset or a tensor of
            inputs); default: the first calibration samples.
        check_samples: Calibration samples kept for the per-layer error (and the default check).
        latency_batches: Batch sizes the deployability check times float against int8 (none: no timing).
        threads: ORT intra-op threads for that timing.
        budget: Largest accepted accuracy drop against the float file on ``val_data`` (a fraction:
            0.01 = one point): the most sensitive nodes (accuracy lost by each quantized alone) are
            kept float, one more at a time, until it holds (:mod:`distiq.onnx.budget`). ``None``: all.
        val_data: Held-out labelled data the budget is tuned on (never the data you report on); also
            what a choice of ``smooth_quant`` strengths is scored on (unlabelled data allowed there).
        matmul_outputs: Static mode: "int8" puts a grid on each MatMul/Gemm output (ORT runs
            ``QLinearMatMul`` / ``QGemm``, int8 in and out, as the torch path exports); "float" leaves
            it float (``MatMulIntegerToFloat`` / ``QGemm`` with a float output): one rounding less per
            layer, the right choice where a float op reads the output anyway (a transformer's bias
            Add, residual and LayerNorm: all-MiniLM-L6-v2 loses about 0.07 of mean cosine to those
            grids).
        smooth_quant: Static mode: SmoothQuant's migration strength ``alpha`` (0.5 in the paper):
            activation outliers are moved into the weights before calibration
            (:mod:`distiq.onnx.smoothquant`). A sequence of strengths (``None`` in it: no smoothing)
            is tried on ``val_data`` and the one whose int8 file is closest to float is kept
            (accuracy with labels, else mean cosine of the first output). ``calib_data`` is read
            again for each, so it must be re-iterable (a dataset, an array, a list).
        error_mask: The name of an input ``[N, S]`` whose zeros mark padding (``attention_mask``):
            the per-layer error leaves those positions out (see :func:`layer_errors`).
        **options: Further QuantizeSpec fields: ``bits``, ``act_bits``, ``weight_method``,
            ``symmetric_activations``, ``method_options``, ``skip`` (layer or node names),
            ``calib_batches``, ``batch_size``, ``thin_conv_channels``.

    Returns:
        ``out_path``.

    Raises:
        DistiqError: A missing, corrupt or already quantized file, a calibration batch that does not
            fit the model's input, no or empty ``calib_data`` in static mode, unknown options, a
            ``skip`` entry naming no layer, a ``budget`` without labelled ``val_data``. One line,
            before anything is written.
    """
    spec = _spec(mode, method, per_channel, target, options)
    if budget is not None and (val_data is None or budget < 0):
        raise DistiqError(
            "quantize_onnx: budget needs val_data (held-out labelled data to tune on) and must be >= 0 "
            f"(a fraction: 0.01 = one point), got budget={budget}, val_data={type(val_data).__name__}"
        )
    alphas = _alphas(smooth_quant, spec.mode, calib_data, val_data)
    if matmul_outputs not in ("int8", "float"):
        raise DistiqError(f"quantize_onnx: matmul_outputs must be 'int8' or 'float', got {matmul_outputs!r}")
    float_matmul = matmul_outputs == "float"
    grid = WeightGrid(spec.bits, spec.per_channel, spec.weight_method or "minmax", spec.weight_max)
    source = load(model_path)
    smoothing = None
    if alphas:
        source, smoothing = _smoothed(source, alphas, calib_data, val_data, spec, grid, float_matmul)
    g = Graph(source)
    thin = spec.thin_conv_channels if spec.mode == "static" else -1
    layers, floats = classify(g, thin, spec.skip)
    if spec.mode == "dynamic":
        floats += [_conv_in_dynamic(layer) for layer in layers if layer.node.op_type == "Conv"]
        layers = [layer for layer in layers if layer.node.op_type != "Conv"]
    for entry in floats:
        if not entry["chosen"]:
            warnings.warn(
                f"quantize_onnx: {entry['layer']} ({entry['op']}) stays float: {entry['reason']}",
                stacklevel=2,
            )
    report = OnnxQuantReport(
        str(model_path),
        str(out_path),
        spec.model_dump(mode="json", include={*APPLIES, *OPTIONS})
        | {"matmul_outputs": matmul_outputs, "smooth_quant": smooth_quant, "error_mask": error_mask},
        resolve_target(target).name,
    )
    report.float_nodes, report.smoothing = floats, smoothing
    if spec.mode == "static":
        quantizers, kept, seen, report.calibration_seconds = _calibrate(
            g, layers, spec, calib_data, check_samples, float_matmul
        )
        report.calibration_samples = seen
        act = _act(quantizers)

        def build(subset: list[Layer]) -> onnx.ModelProto:
            return static_qdq(source, subset, plan_activations(g, subset, float_matmul), act, grid)
    else:
        quantizers, kept = {}, _keep(source, calib_data, spec, check_samples)

        def build(subset: list[Layer]) -> onnx.ModelProto:
            return dynamic_qdq(source, subset, grid)

    if budget is not None:
        layers = _fallback(source, layers, build, val_data, budget, report)
    plan = plan_activations(g, layers, float_matmul) if spec.mode == "static" else Plan()
    quantized = build(layers)
    report.ranges = {t: _range(quantizers[t]) for t in plan.grids}
    report.layers = [
        {
            "layer": layer.name,
            "op": layer.node.op_type,
            "input_grid": plan.input_grid.get(layer.name),
            "output_grid": plan.output_grid.get(layer.name),
        }
        for layer in layers
    ]
    out = _write(quantized, out_path, report.target)
    if kept.samples:
        report.layer_errors = layer_errors(source, quantized, layers, plan, kept, error_mask)
    check, report.checked_on = _check_set(check_data, kept)
    report.deploy = _deploy(model_path, out, check, floats, latency_batches, threads).to_dict()
    with atomic_path(report_path(out)) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2, default=float))
    return out


def _spec(mode: str, method: str, per_channel: bool, target: str, options: dict[str, Any]) -> QuantizeSpec:
    if mode not in MODES:
        raise DistiqError(f"quantize_onnx: mode must be one of {', '.join(MODES)}, got {mode!r}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise DistiqError(
            f"quantize_onnx: unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}"
        )
    spec = QuantizeSpec.build(mode=mode, method=method, per_channel=per_channel, target=target, **options)
    if spec.act_bits != 8:
        raise DistiqError(f"quantize_onnx: act_bits must be 8 (ONNX QDQ activations), got {spec.act_bits}")
    return spec


def _conv_in_dynamic(layer: Layer) -> dict:
    reason = "dynamic mode quantizes MatMul/Gemm only (as PyTorch and ONNX Runtime do)"
    return {"layer": layer.name, "op": "Conv", "reason": reason, "chosen": False, "weight": layer.weight}


def _calibrate(g: Graph, layers: list[Layer], spec: QuantizeSpec, data, keep: int, float_matmul: bool):
    """Stream ``data`` into one quantizer per grid candidate (every tensor a plan of any subset of
    ``layers`` can need: one pass serves the budget search too); returns ``(quantizers, kept,
    samples seen, seconds)``."""
    if data is None:
        raise DistiqError("quantize_onnx: mode 'static' needs calib_data to calibrate activation ranges")
    quantizers = {
        t: ActQuant(spec.act_bits, spec.symmetric_activations, spec.method, spec.method_options)
        for t in grid_candidates(g, layers, float_matmul)
    }
    t0 = time.perf_counter()
    seen, kept = calibrate_tensors(
        g.model, quantizers, data, batch_size=spec.batch_size, limit=spec.calib_batches, keep=keep
    )
    return quantizers, kept, seen, time.perf_counter() - t0


def _act(quantizers: dict[str, ActQuant]) -> dict[str, tuple[float, int, bool]]:
    return {t: (float(q.scale), int(q.zero_point), q.symmetric) for t, q in quantizers.items()}


def _alphas(smooth_quant, mode: str, calib_data: Any, val_data: Any) -> list[float | None]:
    """The SmoothQuant strengths to try (empty: no smoothing), checked before anything runs."""
    if smooth_quant is None:
        return []
    alphas = list(smooth_quant) if isinstance(smooth_quant, list | tuple) else [smooth_quant]
    if mode != "static":
        raise DistiqError(
            "quantize_onnx: smooth_quant applies to mode 'static' (dynamic ranges follow outliers)"
        )
    if not alphas or any(a is not None and not 0 <= a <= 1 for a in alphas):
        raise DistiqError(
            f"quantize_onnx: smooth_quant strengths must be in [0, 1] (or None), got {smooth_quant}"
        )
    if len(alphas) > 1 and val_data is None:
        raise DistiqError("quantize_onnx: several smooth_quant strengths need val_data to choose on")
    if calib_data is None or iter(calib_data) is calib_data:  # read once to smooth, once to calibrate
        raise DistiqError(
            "quantize_onnx: smooth_quant needs re-iterable calib_data (a dataset, an array or a list), "
            f"got {type(calib_data).__name__}"
        )
    return alphas


def _smoothed(source, alphas, calib_data, val_data, spec: QuantizeSpec, grid: WeightGrid, float_matmul: bool):
    """``(model, report entry)``: ``source`` smoothed at the one strength given, or at the one of
    several whose whole int8 graph is closest to float on ``val_data`` (each calibrated on its own)."""
    options = {"skip": spec.skip, "batch_size": spec.batch_size, "limit": spec.calib_batches}
    tried = {a: smooth(source, calib_data, a, **options) if a is not None else (source, []) for a in alphas}
    scores: dict[str, float] = {}
    metric = None
    if len(alphas) > 1:
        for a, (model, _) in tried.items():
            g = Graph(model)
            layers, _ = classify(g, spec.thin_conv_channels, spec.skip)
            quantizers, *_ = _calibrate(g, layers, spec, calib_data, 0, float_matmul)
            int8 = static_qdq(
                model, layers, plan_activations(g, layers, float_matmul), _act(quantizers), grid
            )
            metric, scores[str(a)] = fidelity(source, int8, val_data)
    best = max(alphas, key=lambda a: scores[str(a)]) if scores else alphas[0]
    model, groups = tried[best]
    return model, {"alpha": best, "groups": groups, "scores": scores, "metric": metric}


def _range(q: ActQuant) -> dict:
    s, z = float(q.scale), int(q.zero_point)
    return {"scale": s, "zero_point": z, "lo": (q.qmin - z) * s, "hi": (q.qmax - z) * s}


def _fallback(source, layers: list[Layer], build, val_data, budget: float, report) -> list[Layer]:
    """The nodes that stay quantized under ``budget`` (:func:`distiq.onnx.budget.mixed_precision`);
    those it keeps float are listed as float on purpose, with the accuracy each cost alone."""
    kept, report.mixed_precision = mixed_precision(source, layers, build, val_data, budget)
    drop = {r["layer"]: r["drop"] for r in report.mixed_precision["sensitivity"]}
    for layer in layers:
        if layer.name in report.mixed_precision["float_layers"]:
            reason = f"kept in float by the accuracy budget (costs {100 * drop[layer.name]:.2f} points alone)"
            report.float_nodes.append(
                {"layer": layer.name, "op": layer.node.op_type, "reason": reason, "chosen": True,
                 "weight": layer.weight}
            )  # fmt: skip
    return kept


def _keep(model: onnx.ModelProto, data: Any, spec: QuantizeSpec, keep: int) -> Kept:
    """The first ``keep`` samples of ``data`` (dynamic mode calibrates nothing)."""
    kept = Kept()
    if data is None:
        return kept
    inputs = session(model).get_inputs()
    for feed, labels in batches(data, inputs, spec.batch_size, spec.calib_batches):
        kept.add(feed, labels, keep)
        if kept.samples >= keep:
            break
    return kept


def _write(model: onnx.ModelProto, out_path: str | os.PathLike[str], target: str) -> Path:
    onnx.helper.set_model_props(model, {TARGET_KEY: target})
    onnx.checker.check_model(model, full_check=True)
    path = Path(out_path)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return path


def layer_errors(
    float_model: onnx.ModelProto,
    int8_model: onnx.ModelProto,
    layers: list[Layer],
    plan: Plan,
    kept: Kept,
    mask: str | None = None,
) -> list[dict]:
    """SQNR (dB) and MSE of each quantized node's output in the int8 model against the float model,
    both run by ORT on ``kept``: the tensor after the node's output grid (what the next node reads),
    or its raw output where it has none (a graph output, dynamic mode).

    ``mask``: an input ``[N, S]`` whose zeros mark positions to leave out (a transformer's
    ``attention_mask``) in outputs whose leading axes are ``[N, S]``. Padding positions compute
    values nothing reads (pooling and attention mask them), often far outside the real tokens'
    range: counted, they swamp the error of the tokens that matter (MiniLM: -3.7 dB with them,
    22 dB without, on the same file)."""
    pairs = {}
    for layer in layers:
        grid = plan.output_grid.get(layer.name)
        pairs[layer.name] = (grid, f"{grid}_dq") if grid else (layer.node.output[0], layer.node.output[0])
    ref_sess = session(float_model, [r for r, _ in pairs.values()])
    int_sess = session(int8_model, [q for _, q in pairs.values()])
    # sums, not concatenated outputs: batches may differ in every axis (text batches in sequence length)
    sums = {name: np.zeros(3) for name in pairs}  # signal, noise, elements
    for feed in kept.feeds:
        ref = run(ref_sess, [r for r, _ in pairs.values()], feed)
        got = run(int_sess, [q for _, q in pairs.values()], feed)
        if mask is not None and mask not in feed:
            raise DistiqError(
                f"quantize_onnx: error_mask {mask!r} is not an input of the model ({', '.join(feed)})"
            )
        keep = feed[mask].astype(bool) if mask is not None else None
        for name, (r, q) in pairs.items():
            a, b = ref[r].astype(np.float64), got[q].astype(np.float64)
            if keep is not None and a.shape[: keep.ndim] == keep.shape:
                a, b = a[keep], b[keep]
            sums[name] += [(a**2).sum(), ((a - b) ** 2).sum(), a.size]
    result = []
    for layer in layers:
        signal, noise, n = sums[layer.name]
        sqnr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
        result.append({"layer": layer.name, "op": layer.node.op_type, "sqnr_db": sqnr, "mse": noise / n})
    return result


def _check_set(check_data: Any, kept: Kept) -> tuple[Any, str]:
    """What the deployability check runs on, and what to call it in the report: ``check_data``, else
    the kept samples when the model has one image input (deploy_check takes ``[N, C, H, W]`` data),
    else nothing (kernels and latency only)."""
    if check_data is not None:
        return check_data, "check_data"
    if not kept.samples or len(kept.feeds[0]) != 1:
        return None, "nothing"
    x = torch.from_numpy(np.concatenate([next(iter(f.values())) for f in kept.feeds]))
    if x.dim() != 4 or not x.is_floating_point():
        return None, "nothing"
    what = "calibration samples (not held out)"
    if len(kept.labels) == len(kept.feeds):
        return ArrayDataset(x, torch.from_numpy(np.concatenate(kept.labels)).to(torch.int64)), what
    return x, what


def _deploy(
    float_path, int8_path: Path, data, floats: list[dict], latency_batches, threads: int
) -> DeployReport:
    """:func:`deploy_check` of the file. Float kernels of the nodes :func:`quantize_onnx` left float
    are no news: those kept float on purpose (thin convs, ``skip``) are the plan, and the others were
    named in a warning already, so each gets its reason instead of a second warning."""
    report = deploy_check(
        float_path, int8_path, data=data, batch_sizes=tuple(latency_batches), threads=threads, warn=False
    )
    # the check names a float node by its weight (``onnx::Conv_89`` in a torch export): use our name
    known = {e.get("weight", e["layer"]).removesuffix(".weight"): e for e in floats}
    for node in report.after:
        entry = known.get(node.layer)
        if node.kernel == "float" and entry is not None:
            report.warnings = [w for w in report.warnings if not w.startswith(f"{node.layer} ({node.op}) ")]
            node.layer = entry["layer"]
            node.reason = f"kept in float: {entry['reason']}" if entry["chosen"] else entry["reason"]
    for message in report.warnings:
        warnings.warn(message, DeploymentWarning, stacklevel=3)
    return report


__all__ = ["OnnxQuantReport", "layer_errors", "quantize_onnx", "report_path"]
