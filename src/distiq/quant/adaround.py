"""AdaRound: learn, per weight, whether to round up or down (Nagel et al., 2020, "Up or Down? Adaptive
Rounding for Post-Training Quantization").

Rounding every weight to the nearest grid point minimises each weight's own error, not the layer's
output error: at 4 bits the two differ a lot, because errors of neighbouring weights add up in ``W x``.
AdaRound keeps distiq's grid (the per-channel scales :class:`~distiq.quant.modules.WeightQuant` chose)
and learns only the up/down choice. For each Conv/Linear layer, in the order the forward pass calls
them, it minimises over ``V`` (one real number per weight)

    ``|| f(W x) - f(W~ x^) ||^2  +  lambda * sum(1 - |2 h(V) - 1|^beta)``,

with ``W~ = s * clamp(floor(W / s) + h(V), qmin, qmax)``, ``h(V) = clamp(sigmoid(V) (zeta - gamma) +
gamma, 0, 1)`` the rectified sigmoid (``zeta = 1.1``, ``gamma = -0.1``: it reaches 0 and 1 exactly, so
the regulariser can finish its job), ``V`` initialised so that ``h(V)`` equals the fractional part of
``W / s`` (the soft start is the float weight itself), ``f`` the layer's fused ReLU when it has one.
The regulariser is off for a warm-up, then ``beta`` is annealed from 20 to 2: first it only pushes
values already near 0 or 1, at the end every one. Training ends with hard rounding ``h(V) >= 0.5``.

Which inputs: ``x`` is the float model's input to the layer (the target is the float layer's output)
and ``x^`` the *quantized* model's input (earlier layers already AdaRounded, activation grids applied):
the paper's asymmetric reconstruction (its eq. 25), the better of its variants, because each layer then
corrects the error its quantized predecessors hand it, and learns on the inputs it will see deployed.

A layer whose learned rounding reconstructs worse than nearest rounding on the calibration data (a too
short or too noisy run) keeps nearest rounding, and its progress line says so: AdaRound never makes a
layer's calibration error worse.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from .modules import QuantConv2d, QuantLinear, WeightQuant, quant_layers, set_state

Tensor = torch.Tensor
ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (Nagel et al., 2020, section 4)


class AdaRoundSpec(BaseModel):
    """AdaRound's knobs (recipe ``quantize.adaround``, CLI ``--adaround-*``)."""

    model_config = ConfigDict(extra="forbid")

    iters: int = Field(1000, ge=1, description="Optimisation steps per layer.")
    samples: int = Field(512, ge=1, description="Calibration inputs the layers are reconstructed on.")
    batch_size: int = Field(32, ge=1, description="Samples per step.")
    lr: float = Field(1e-2, gt=0, description="Adam learning rate of the rounding variables V.")
    reg: float = Field(0.01, ge=0, description="Weight lambda of the rounding regulariser.")
    warmup: float = Field(0.2, ge=0, lt=1, description="Share of the steps without the regulariser.")
    beta_start: float = Field(20.0, gt=0, description="Regulariser exponent after the warm-up.")
    beta_end: float = Field(2.0, gt=0, description="Regulariser exponent at the last step.")
    seed: int = Field(0, description="Seed of the mini-batch draws.")
    progress: bool = Field(True, description="One line per layer (output error before/after) on stderr.")

    @model_validator(mode="after")
    def _annealed_down(self) -> AdaRoundSpec:
        if self.beta_end > self.beta_start:
            raise ValueError("beta_end must not exceed beta_start: beta is annealed downwards")
        return self


def rectified_sigmoid(v: Tensor) -> Tensor:
    """``h(V) = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)`` (paper eq. 23)."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def init_v(fraction: Tensor) -> Tensor:
    """The ``V`` whose ``h(V)`` is ``fraction`` (in ``[0, 1)``): the inverse of the rectified sigmoid."""
    p = (fraction - GAMMA) / (ZETA - GAMMA)
    return torch.log(p / (1 - p))


def rounding_regularizer(h: Tensor, beta: float) -> Tensor:
    """``sum(1 - |2h - 1|^beta)`` (paper eq. 24): 0 only when every ``h`` is exactly 0 or 1."""
    return (1 - (2 * h - 1).abs().pow(beta)).sum()


def beta_at(step: int, spec: AdaRoundSpec) -> float | None:
    """The regulariser's exponent at ``step``: ``None`` (off) during the warm-up, then linear from
    ``beta_start`` down to ``beta_end`` at the last step."""
    start = int(spec.warmup * spec.iters)
    if step < start:
        return None
    t = (step - start) / max(spec.iters - 1 - start, 1)
    return spec.beta_end + (spec.beta_start - spec.beta_end) * max(0.0, 1.0 - t)


def _channel_scale(wq: WeightQuant, w: Tensor) -> Tensor:
    scale = wq.scale
    return scale.reshape([-1] + [1] * (w.dim() - 1)) if scale.dim() else scale


class AdaRoundWeightQuant(WeightQuant):
    """A weight quantizer on the same grid whose integers are ``floor(W / s)`` plus learned offsets.

    The float weight stays in the layer (so errors are still measured against it); ``rounding`` holds
    0 or 1 per weight. Export reads :meth:`integers`, so the ONNX file holds the learned integers.
    """

    def __init__(self, source: WeightQuant, rounding: Tensor) -> None:
        channels = source.scale.numel() if source.per_channel else None
        super().__init__(
            source.bits, source.per_channel, source.method, channels, source.options, source.max_int
        )
        self.set_qparams(source.scale, source.zero_point)
        self.state, self.enabled = source.state, source.enabled
        self.register_buffer("rounding", rounding.detach().to(torch.int8).clone())

    def integers(self, w: Tensor) -> Tensor:
        """The weight's integers: ``clamp(floor(w / s) + rounding, qmin, qmax)`` (zero point 0)."""
        return torch.clamp(torch.floor(w / _channel_scale(self, w)) + self.rounding, self.qmin, self.qmax)

    def forward(self, w: Tensor) -> Tensor:
        if self.state in ("off", "observe") or not self.enabled:
            return w
        wq = self.integers(w) * _channel_scale(self, w)
        return w + (wq - w).detach()  # straight-through: the rounding is learned, not trained further

    def extra_repr(self) -> str:
        return super().extra_repr() + ", adaround"


class _Stop(Exception):
    """Raised by a capture hook: the rest of the forward pass is not needed."""


@torch.no_grad()
def _capture(model: nn.Module, layer: nn.Module, inputs: Tensor, output: bool, batch: int = 256) -> Tensor:
    """``layer``'s input (or output) over ``inputs``, stopping each forward pass at the layer."""
    seen: list[Tensor] = []

    def hook(module, args, result=None):
        seen.append((result if output else args[0]).detach())
        raise _Stop

    handle = layer.register_forward_hook(hook) if output else layer.register_forward_pre_hook(hook)
    try:
        for i in range(0, len(inputs), batch):
            try:
                model(inputs[i : i + batch])
            except _Stop:
                pass
    finally:
        handle.remove()
    return torch.cat(seen)


def call_order(model: nn.Module, example: Tensor) -> list[str]:
    """The quantized layers' paths in the order one forward pass calls them."""
    layers = quant_layers(model)
    order: list[str] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, path=path: order.append(path))
        for path, m in layers.items()
    ]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(order))


def _layer_output(layer: nn.Module, x: Tensor, w: Tensor) -> Tensor:
    """The layer's output (fused ReLU included, output quantizer not) with weight ``w``."""
    if isinstance(layer, QuantConv2d):
        y = layer._conv_forward(x, w, layer.bias)
    else:
        y = F.linear(x, w, layer.bias)
    return F.relu(y) if layer.relu else y


def _error(y: Tensor, target: Tensor) -> Tensor:
    """Squared error summed over channels, averaged over samples (and positions): the scale at which
    the paper's and its reference code's regulariser weight (0.01) was chosen."""
    return (y - target).pow(2).sum(1).mean()


def _full_error(layer: nn.Module, x: Tensor, target: Tensor, w: Tensor, batch: int = 256) -> float:
    with torch.no_grad():
        total = sum(
            float(_error(_layer_output(layer, x[i : i + batch], w), target[i : i + batch]))
            * len(x[i : i + batch])
            for i in range(0, len(x), batch)
        )
    return total / len(x)


def adaround_layer(
    layer: QuantConv2d | QuantLinear, x: Tensor, target: Tensor, spec: AdaRoundSpec
) -> tuple[Tensor, dict[str, Any]]:
    """Learn the rounding of one layer's weight.

    Args:
        layer: A quantized layer; its weight quantizer's grid (scale, ``[qmin, qmax]``) is kept.
        x: Its inputs, as the quantized model computes them (input quantizer already applied).
        target: The float layer's outputs on the float inputs (fused ReLU applied).
        spec: Steps, samples per step, learning rate, regulariser.

    Returns:
        ``(rounding, record)``: 0/1 offsets to add to ``floor(W / s)`` (nearest rounding's offsets
        when the learned ones reconstruct worse), and ``{"error_nearest", "error_adaround", "changed",
        "undecided", "kept_nearest", "seconds"}`` (``changed``: share of weights rounded otherwise
        than to nearest; ``undecided``: share whose soft ``h(V)`` was not yet within 0.01 of 0 or 1).
    """
    t0 = time.perf_counter()
    wq = layer.weight_quant
    w = layer.weight.detach()
    s = _channel_scale(wq, w)
    w_floor = torch.floor(w / s)
    nearest = torch.round(w / s) - w_floor  # the offsets of round-half-to-even, as export rounds

    def weight(offset: Tensor) -> Tensor:
        return torch.clamp(w_floor + offset, wq.qmin, wq.qmax) * s

    error_nearest = _full_error(layer, x, target, weight(nearest))
    v = nn.Parameter(init_v(w / s - w_floor))
    optimizer = torch.optim.Adam([v], lr=spec.lr)
    generator = torch.Generator().manual_seed(spec.seed)
    batch = min(spec.batch_size, len(x))
    for step in range(spec.iters):
        idx = torch.randint(len(x), (batch,), generator=generator)
        h = rectified_sigmoid(v)
        loss = _error(_layer_output(layer, x[idx], weight(h)), target[idx])
        beta = beta_at(step, spec)
        if beta is not None and spec.reg > 0:
            loss = loss + spec.reg * rounding_regularizer(h, beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        h = rectified_sigmoid(v)
        learned = (h >= 0.5).to(w.dtype)
        undecided = float(((h > 0.01) & (h < 0.99)).double().mean())
    error_learned = _full_error(layer, x, target, weight(learned))
    kept = error_learned > error_nearest
    rounding = nearest if kept else learned
    record = {
        "error_nearest": error_nearest,
        "error_adaround": min(error_learned, error_nearest),
        "changed": float((rounding != nearest).double().mean()),
        "undecided": undecided,
        "kept_nearest": bool(kept),
        "seconds": time.perf_counter() - t0,
    }
    return rounding, record


def adaround_(qmodel: nn.Module, inputs: Tensor, spec: AdaRoundSpec) -> list[dict]:
    """Learn the weight rounding of every quantized layer of ``qmodel``, in call order, in place.

    Activation grids must already be calibrated (static mode): each layer's inputs are taken from the
    quantized model. Each layer's weight quantizer is replaced by an :class:`AdaRoundWeightQuant`.

    Args:
        qmodel: A simulated-quantized model (from :func:`~distiq.quant.ptq.prepare`).
        inputs: Calibration inputs ``[N, ...]`` (a few hundred suffice).
        spec: AdaRound's options.

    Returns:
        One record per layer (see :func:`adaround_layer`), with its ``layer`` path.
    """
    qmodel.eval()
    layers = quant_layers(qmodel)
    records = []
    torch.manual_seed(spec.seed)
    try:
        for path in call_order(qmodel, inputs):
            layer = layers[path]
            if not layer.weight_quant.enabled:
                continue
            set_state(qmodel, "off")  # the float model (BN folded): the layer's float output
            target = _capture(qmodel, layer, inputs, output=True)
            set_state(qmodel, "quant")  # earlier layers already rounded as learned
            x = _capture(qmodel, layer, inputs, output=False)
            if layer.input_quant is not None:
                with torch.no_grad():
                    x = torch.cat([layer.input_quant(x[i : i + 256]) for i in range(0, len(x), 256)])
            with torch.enable_grad():
                rounding, record = adaround_layer(layer, x, target, spec)
            layer.weight_quant = AdaRoundWeightQuant(layer.weight_quant, rounding)
            records.append({"layer": path, **record})
            if spec.progress:
                kept = "  (kept nearest: learned rounding was not better)" if record["kept_nearest"] else ""
                print(
                    f"adaround {path}: output error {record['error_nearest']:.4g} (nearest) -> "
                    f"{record['error_adaround']:.4g}, {100 * record['changed']:.1f}% of weights rounded "
                    f"the other way, {spec.iters} steps, {record['seconds']:.1f} s{kept}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        set_state(qmodel, "quant")
    return records


__all__ = [
    "AdaRoundSpec",
    "AdaRoundWeightQuant",
    "adaround_",
    "adaround_layer",
    "beta_at",
    "call_order",
    "init_v",
    "rectified_sigmoid",
    "rounding_regularizer",
]
