"""Quantization: calibrators, fake quantization, PTQ (static, dynamic, weight-only), QAT, error
analysis, int8 ONNX export and deployability checks.

``dq.quantize(model, calib_data)`` returns a simulated-quantized copy; ``dq.export_onnx`` writes it
as QDQ ONNX that ONNX Runtime runs with integer kernels; :func:`deploy_check` says whether it does,
and whether that is faster.
"""

from .api import quantize
from .calibrate import calibrate
from .deploy import DeploymentWarning, DeployReport, compare_latency, deploy_check, kernels
from .export import export_onnx
from .fake_quant import fake_quantize, lsq_fake_quantize
from .fuse import fold_bn, fold_bn_
from .modules import ActQuant, QuantConv2d, QuantLinear, WeightQuant, is_quantized, set_state
from .observers import OBSERVERS, QParams
from .ptq import MODES, QuantReport
from .qat import qat_
from .sensitivity import layer_errors, mixed_precision, sensitivity, sqnr_db
from .spec import QuantizeSpec
from .target import TARGETS, cpu_info, cpu_target
from .trace import trace

__all__ = [
    "MODES",
    "OBSERVERS",
    "ActQuant",
    "DeployReport",
    "DeploymentWarning",
    "QParams",
    "QuantizeSpec",
    "QuantConv2d",
    "QuantLinear",
    "QuantReport",
    "TARGETS",
    "WeightQuant",
    "calibrate",
    "compare_latency",
    "cpu_info",
    "cpu_target",
    "deploy_check",
    "export_onnx",
    "fake_quantize",
    "fold_bn",
    "fold_bn_",
    "is_quantized",
    "kernels",
    "layer_errors",
    "lsq_fake_quantize",
    "mixed_precision",
    "qat_",
    "quantize",
    "sensitivity",
    "set_state",
    "sqnr_db",
    "trace",
]
