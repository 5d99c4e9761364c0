"""distiq: distill, prune and quantize neural networks, export real int8 ONNX, measure what was kept."""

__version__ = "0.1.0"
