"""A Keras model as an ONNX file that reproduces Keras, and as int8 through ``dq.quantize_onnx``.

Why the ONNX road to int8: distiq's torch quantizer rewrites ``nn.Conv2d``/``nn.Linear`` modules, and a
Keras model has none (its layers call Keras ops). Once exported, though, a Keras model is an ONNX
graph like any other, and :func:`distiq.quantize_onnx` (made for models nobody here wrote) calibrates,
quantizes and checks it where it will run. The export goes through the :class:`KerasModule` view, so
the file takes distiq's ``[N, C, H, W]`` batches (a channels-last model gets a ``Transpose`` first),
with a dynamic batch, and is checked against the Keras model's own outputs before it is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from distiq import runtime
from distiq.errors import DistiqError
from distiq.io import atomic_path
from distiq.onnx import quantize_onnx
from distiq.quant.export import to_onnx

from .module import KerasModule, as_module


def _batch(data: Any, n: int = 64) -> torch.Tensor:
    """The first ``n`` inputs of a dataset, ``(x, y)`` pair, array or tensor, as float32."""
    x = getattr(data, "x", data)
    if isinstance(x, tuple | list):
        x = x[0]
    return torch.as_tensor(np.asarray(x[:n]), dtype=torch.float32)


def example_batch(view: KerasModule, n: int = 16, seed: int = 0) -> torch.Tensor:
    """``n`` seeded normal inputs in distiq's layout for the model (channels first for images)."""
    shape = view.input_shape
    if shape is None or None in shape:
        raise DistiqError(
            f"Keras model {view.keras_model.name!r} has no fixed input shape; give example_input"
        )
    if len(shape) == 3:
        shape = (shape[2], shape[0], shape[1])
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


def max_output_error(view: KerasModule, path: str | os.PathLike[str], x: torch.Tensor) -> float:
    """Largest absolute difference between ONNX Runtime's outputs for the file and Keras's own
    (``keras_model(x, training=False)``) on the batch ``x`` (``[N, C, H, W]``)."""
    with torch.no_grad():
        want = view.keras_model(view.keras_input(x), training=False).detach().numpy()
    got = runtime.run_checked(runtime.session(path), x.numpy(), path)
    return float(np.abs(np.asarray(got) - want).max())


def export_onnx(
    model: Any,
    path: str | os.PathLike[str],
    example_input: Any = None,
    *,
    atol: float = 1e-4,
) -> Path:
    """Write a Keras model (or its view) as float ONNX taking ``[N, C, H, W]``, checked against Keras.

    Args:
        model: A ``keras.Model`` or :class:`KerasModule`.
        path: Destination ``.onnx`` file, replaced atomically.
        example_input: Inputs in distiq's layout (a batch tensor, array or dataset); the check runs the
            first 64 through both Keras and ONNX Runtime. ``None``: 16 seeded normal inputs.
        atol: Largest accepted absolute difference of any output.

    Raises:
        DistiqError: the file does not reproduce Keras's outputs within ``atol`` (nothing is written).
    """
    view = as_module(model)
    if not isinstance(view, KerasModule):
        raise DistiqError(f"export_onnx: expected a Keras model, got {type(model).__name__}")
    x = example_batch(view) if example_input is None else _batch(example_input)
    was_training = view.training
    try:
        proto = to_onnx(view.eval(), x[:2])
    finally:
        view.train(was_training)
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
        error = max_output_error(view, tmp, x)
        if not error <= atol:
            raise DistiqError(
                f"{path}: the ONNX export of {view.keras_model.name!r} differs from Keras by {error:.3g} "
                f"(> atol {atol:g}); not written"
            )
    return path


def quantize(
    model: Any,
    calib_data: Any,
    out_path: str | os.PathLike[str],
    *,
    float_path: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Path:
    """An int8 ONNX file of a Keras model: :func:`export_onnx`, then :func:`distiq.quantize_onnx`.

    Args:
        model: A ``keras.Model`` or :class:`KerasModule`.
        calib_data: Calibration inputs in distiq's ``[N, C, H, W]`` layout (a dataset, an array, or
            ``(x, y)`` pairs), as ``quantize_onnx`` takes them.
        out_path: The int8 file; its report goes next to it (``distiq.onnx.report_path``).
        float_path: Where the float file goes (default: ``<out>-float.onnx`` beside it): the float
            side of the deployability check, and what the int8 accuracy is compared with.
        **options: ``quantize_onnx``'s options (``mode``, ``method``, ``check_data``, ``budget`` ...).

    Returns:
        ``out_path``.
    """
    out_path = Path(out_path)
    float_path = Path(float_path) if float_path else out_path.with_name(out_path.stem + "-float.onnx")
    export_onnx(model, float_path, calib_data)
    return quantize_onnx(float_path, calib_data, out_path, **options)
