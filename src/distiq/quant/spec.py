"""The quantize stage's options, declared once.

:class:`QuantizeSpec` is what ``dq.quantize(model, data, spec)`` takes (or builds from keywords), the
recipe's ``quantize:`` section (which adds what a pipeline stage measures) and the source of the
``distiq quantize`` options. A bad value fails when the spec is built, before any calibration.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distiq.engine.config import TrainSpec
from distiq.errors import DistiqError, validation_message

from .adaround import AdaRoundSpec
from .observers import OBSERVERS, check_bits
from .target import resolve_target

MODES = ("static", "dynamic", "weight-only", "qat")
ROUNDINGS = ("nearest", "adaround")
THIN_CONV_CHANNELS = 4


def _qat_training() -> TrainSpec:
    """A short, low learning-rate fine-tune: the weights start trained."""
    return TrainSpec(epochs=2, lr=1e-4)


class QuantizeSpec(BaseModel):
    """How to quantize a model (post-training, or with quantization-aware training)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["static", "dynamic", "weight-only", "qat"] = Field(
        "static",
        description="static (calibrated activations), dynamic (activation ranges at run time; Linear "
        "layers), weight-only (smaller files, float compute) or qat (static, then fine-tuned).",
    )
    method: str = Field("kl", description="Activation calibrator: kl, minmax, percentile, mse, ema.")
    bits: int = Field(8, ge=2, le=8, description="Weight bits.")
    act_bits: int = Field(8, ge=2, le=8, description="Activation bits (ONNX export needs 8).")
    per_channel: bool = Field(True, description="One weight scale per output channel.")
    weight_method: str | None = Field(None, description="Weight calibrator (minmax at 8 bits, mse below).")
    symmetric_activations: bool = Field(False, description="Signed activation grids (zero point 0).")
    method_options: dict[str, Any] = Field(
        default_factory=dict, description="Options of the activation calibrator, e.g. {percentile: 99.9}."
    )
    rounding: Literal["nearest", "adaround"] = Field(
        "nearest",
        description="Weight rounding: nearest, or adaround (up/down learned per weight to reconstruct "
        "each layer's output on the calibration data; slower, pays off at 4 bits and below).",
    )
    adaround: AdaRoundSpec = Field(default_factory=AdaRoundSpec, description="AdaRound options.")
    skip: list[str] = Field(default_factory=list, description="Layers (module paths) kept in float.")
    calib_batches: int | None = Field(None, ge=1, description="Use at most this many calibration batches.")
    batch_size: int = Field(64, ge=1, description="Calibration batch size (data given as a dataset).")
    target: str = Field(
        "auto",
        description="CPU the int8 file is made for: auto (this machine), x86-avx2, x86-avx512, x86-vnni, "
        "x86-amx, arm64, arm64-dotprod or generic (exact on every CPU).",
    )
    thin_conv_channels: int = Field(
        THIN_CONV_CHANNELS,
        ge=0,
        description="Static/qat: convs with at most this many input channels (a first conv on grey or RGB "
        "images) stay float, as ONNX Runtime runs them slower in int8 than in float (0: quantize them).",
    )
    qat: TrainSpec = Field(default_factory=_qat_training, description="QAT training options.")
    teacher: bool = Field(True, description="QAT distils from the float model (False: labels only).")
    distill_loss: str = Field("kd", description="QAT logit distillation loss.")
    temperature: float = Field(4.0, gt=0, description="QAT distillation temperature.")
    alpha: float = Field(0.5, ge=0, le=1, description="QAT weight of the distillation term.")

    @classmethod
    def build(cls, **options: Any) -> QuantizeSpec:
        """Validate keyword options, raising :class:`DistiqError` naming the field."""
        try:
            return cls.model_validate(options)
        except ValidationError as e:
            raise DistiqError(validation_message(e, "quantize")) from None

    @field_validator("method", "weight_method")
    @classmethod
    def _known_calibrator(cls, name: str | None) -> str | None:
        if name is not None and name not in OBSERVERS:
            raise ValueError(f"unknown calibrator {name!r}; known: {', '.join(OBSERVERS)}")
        return name

    @field_validator("target")
    @classmethod
    def _known_target(cls, name: str) -> str:
        resolve_target(name)  # an unknown name fails here, listing the known ones
        return name

    @field_validator("bits", "act_bits")
    @classmethod
    def _supported_bits(cls, bits: int) -> int:
        check_bits(bits)
        return bits

    @model_validator(mode="after")
    def _default_weight_method(self) -> QuantizeSpec:
        if self.weight_method is None:
            self.weight_method = "minmax" if self.bits == 8 else "mse"
        return self

    @model_validator(mode="after")
    def _rounding_applies(self) -> QuantizeSpec:
        if self.rounding == "adaround" and self.mode == "qat":
            raise ValueError(
                "rounding 'adaround' is for post-training modes (static, dynamic, weight-only): QAT "
                "learns its weights, and with them their rounding"
            )
        return self

    @property
    def quantizes_activations(self) -> bool:
        return self.mode in ("static", "qat")

    @property
    def weight_max(self) -> int:
        """Largest weight integer: narrowed on saturating targets where integer kernels compute
        (weight-only files dequantize to float and keep every level)."""
        natural = 2 ** (self.bits - 1) - 1
        return natural if self.mode == "weight-only" else resolve_target(self.target).weight_max(self.bits)
