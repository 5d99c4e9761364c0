"""Keras on its torch backend, chosen before Keras is imported.

Why torch: on that backend a ``keras.Model`` is a ``torch.nn.Module`` whose variables are
``torch.nn.Parameter`` objects, so distiq's losses, training engine, ONNX exporter and int8 path work on
it without converting weights. Keras reads ``KERAS_BACKEND`` once, on its first import, so the choice
has to be made here, before ``import keras``; a Keras already imported with another backend cannot be
switched and is refused in one line.
"""

from __future__ import annotations

import os
import sys

from distiq.errors import DistiqError

BACKEND = "torch"


def use_torch_backend() -> None:
    """Make Keras run on torch, or raise :class:`DistiqError` saying why it cannot.

    Raises:
        DistiqError: Keras was already imported with another backend, or ``KERAS_BACKEND`` names
            another one (silently overriding the user's setting would run their other code on torch).
    """
    if "keras" in sys.modules:
        import keras

        backend = keras.backend.backend()
        if backend != BACKEND:
            raise DistiqError(
                f"distiq.keras needs Keras's torch backend, but keras was already imported with the "
                f"{backend!r} backend; set KERAS_BACKEND=torch or import distiq.keras before keras"
            )
        return
    chosen = os.environ.get("KERAS_BACKEND", BACKEND)
    if chosen != BACKEND:
        raise DistiqError(
            f"KERAS_BACKEND={chosen}: distiq.keras runs Keras on its torch backend; "
            "set KERAS_BACKEND=torch (or unset it)"
        )
    os.environ["KERAS_BACKEND"] = BACKEND
