"""int8 for models given only as ONNX files: static (QDQ) and dynamic quantization through ONNX Runtime.

``dq.quantize_onnx(path, calib_data, out_path)`` writes the same kind of int8 file as
``dq.export_onnx`` of a quantized distiq model, with a JSON report beside it (:func:`report_path`).
"""

from .api import OnnxQuantReport, layer_errors, quantize_onnx, report_path

__all__ = ["OnnxQuantReport", "layer_errors", "quantize_onnx", "report_path"]
