"""distiq for Keras 3 models (the ``distiq[keras]`` extra), on Keras's torch backend.

- :class:`Distiller`: Keras's ``keras.distillation.Distiller`` with distiq's losses (kd, mse, hard-kd,
  dkd, feature terms by layer name); a Keras script moves over by changing its import.
- :class:`KerasModule` / :func:`load_model`: a Keras model (or a ``.keras`` file, loaded in safe mode)
  as a torch module in distiq's conventions, for ``dq.distill``, recipes and the command line;
  :func:`save_keras` writes one back, atomically.
- :func:`prune_`: magnitude pruning of a Keras model's kernels, kept through further training.
- :func:`export_onnx` and :func:`quantize`: the model as an ONNX file checked against Keras's own
  outputs, then int8 through :func:`distiq.quantize_onnx`.

Importing this package selects Keras's torch backend (:mod:`.backend`), so import it before ``keras``.
"""

from .backend import use_torch_backend

use_torch_backend()

try:
    import keras  # noqa: F401  (imported here so a missing extra fails in one place)
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("distiq.keras needs Keras 3: pip install 'distiq[keras]'") from e

from .distiller import Distiller  # noqa: E402
from .export import export_onnx, quantize  # noqa: E402
from .losses import DistiqFeature, DistiqLogits  # noqa: E402
from .module import KerasModule, as_module, is_keras_file, load_keras, load_model, save_keras  # noqa: E402
from .prune import prune_  # noqa: E402

__all__ = [
    "Distiller",
    "DistiqFeature",
    "DistiqLogits",
    "KerasModule",
    "as_module",
    "export_onnx",
    "is_keras_file",
    "load_keras",
    "load_model",
    "prune_",
    "quantize",
    "save_keras",
]
