"""distiq: distill, prune and quantize neural networks, export real int8 ONNX, measure what was kept.

``import distiq as dq``; the public names are listed in ``__all__`` (and in the shared API.md).
"""

from . import data, models, plugins, quant
from .distill import functional as losses
from .distill.api import distill
from .distill.concept import distill_concepts
from .engine.config import TrainSpec
from .engine.train import TrainResult, train
from .engine.weights import load_model, load_weights, save_weights
from .errors import DataError, DistiqError
from .evaluate.api import evaluate
from .onnx import quantize_onnx
from .plugins import register
from .prune import prune, sparse
from .quant import QuantizeSpec, calibrate, export_onnx, quantize
from .registry import Registry
from .workflow import run

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "DistiqError",
    "QuantizeSpec",
    "Registry",
    "TrainSpec",
    "calibrate",
    "export_onnx",
    "plugins",
    "prune",
    "quant",
    "quantize",
    "quantize_onnx",
    "TrainResult",
    "data",
    "distill",
    "distill_concepts",
    "evaluate",
    "load_model",
    "load_weights",
    "losses",
    "models",
    "register",
    "run",
    "save_weights",
    "sparse",
    "train",
]
