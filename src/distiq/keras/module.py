"""A Keras model as a plain torch module in distiq's conventions, and ``.keras`` files loaded safely.

Why a view and not the Keras model itself: on the torch backend a ``keras.Model`` already is an
``nn.Module``, but not one distiq's paths can use as is. Its ``state_dict`` holds every variable twice
(under the model and under its functional graph), its layers are not submodules (so no layer has a
module path for feature terms or ``freeze``), it reads ``training`` from an argument rather than from
``module.training``, and Keras image models are channels-last while distiq's data are ``[N, C, H, W]``.
:class:`KerasModule` fixes those four things and nothing else: it holds the Keras model's own
``Parameter`` objects (one entry per variable), so training the view trains the Keras model in place,
and ``view.keras_model`` is the trained Keras model.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import torch
from torch import nn

from distiq.errors import DataError, DistiqError
from distiq.io import atomic_path
from distiq.models.zoo import is_keras_file

from .losses import channels_first


class _Tap(nn.Module):
    """Where a Keras layer's output (channels first) passes when a forward hook asks for it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def named_variables(model: keras.Model) -> dict[str, keras.Variable]:
    """Every variable of ``model`` keyed ``"layer/variable"`` ("conv2d/kernel").

    Why not Keras's ``variable.path``: it carries the name scopes of the build ("sequential/conv2d/kernel"
    when built, "conv2d/kernel" once reloaded from a file), so weights saved from one would not load
    into the other. Layer names are what a ``.keras`` file keeps.
    """
    named: dict[str, keras.Variable] = {}
    owners = [(layer.name, layer.weights) for layer in model.layers] + [("model", model.weights)]
    for owner, variables in owners:
        for variable in variables:
            if any(v is variable for v in named.values()):
                continue
            key = f"{owner}/{variable.name}".replace(".", "_")
            while key in named:
                key += "_"
            named[key] = variable
    return named


class KerasModule(nn.Module):
    """``forward(x [N, C, H, W])`` = the Keras model's output, with ``training=self.training``.

    Args:
        model: A built ``keras.Model`` (Sequential, Functional or subclassed).
        source: The ``.keras`` file it came from, recorded as ``config["name"]`` so distiq can rebuild
            the view from a weights file (see :func:`load_model`; the absolute path, so a weights file
            reloads from any working directory).

    Layers of a Functional or Sequential model are submodules named as the Keras layers, each an
    identity through which that layer's output passes (channels first) when a hook is registered on
    it: ``features=[{"kind": "hint", "student": "conv2d_1", ...}]`` works as for torch models.
    """

    def __init__(self, model: keras.Model, source: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        if not isinstance(model, keras.Model):
            raise DistiqError(f"expected a keras.Model, got {type(model).__name__}")
        if not model.built:
            raise DistiqError(f"Keras model {model.name!r} is not built; call it once or give it an Input")
        object.__setattr__(self, "keras_model", model)  # outside torch's tree: no doubled state dict
        self.variables = nn.ParameterDict({k: v.value for k, v in named_variables(model).items()})
        self._extractors: dict[tuple[str, ...], keras.Model] = {}
        graph = getattr(model, "inputs", None) is not None
        self.input_shape = tuple(model.inputs[0].shape[1:]) if graph else None
        if source is not None:
            self.config = {"name": str(source)}
        for layer in model.layers if graph else ():
            if "." not in layer.name and not hasattr(self, layer.name):
                self.add_module(layer.name, _Tap())

    def keras_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the layout the Keras model takes: as is, channels last, or flattened.

        Raises:
            DistiqError: a shape the model takes in none of these layouts.
        """
        want = self.input_shape
        if want is None or None in want or tuple(x.shape[1:]) == want:
            return x
        if x.dim() == 4 and tuple(x.shape[2:]) + (x.shape[1],) == want:
            return x.permute(0, 2, 3, 1)
        if len(want) == 1 and x[0].numel() == want[0]:
            return x.reshape(len(x), -1)
        raise DistiqError(
            f"Keras model {self.keras_model.name!r} takes inputs {list(want)}, got {list(x.shape[1:])} "
            "(tried as is, channels last and flattened)"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.keras_input(x)
        watched = tuple(
            name for name, tap in self.named_children() if isinstance(tap, _Tap) and tap._forward_hooks
        )
        if not watched:
            return self.keras_model(x, training=self.training)
        outputs = self._extractor(watched)(x, training=self.training)
        for name in watched:
            getattr(self, name)(channels_first(outputs[name]))
        return outputs["__output__"]

    def _extractor(self, names: tuple[str, ...]) -> keras.Model:
        """A Keras model giving the final output and the outputs of layers ``names`` in one pass."""
        if names not in self._extractors:
            model = self.keras_model
            outputs = {name: model.get_layer(name).output for name in names}
            outputs["__output__"] = model.outputs[0]
            self._extractors[names] = keras.Model(model.inputs, outputs)
        return self._extractors[names]

    def extra_repr(self) -> str:
        return f"keras_model={self.keras_model.name!r}, input_shape={self.input_shape}"


def load_keras(path: str | os.PathLike[str], compile: bool = False) -> keras.Model:
    """Load a ``.keras`` file with Keras's ``safe_mode=True``: nothing in it is unpickled or run.

    Raises:
        DataError: a missing or unreadable file, naming it (and what Keras refused, e.g. a ``Lambda``
            layer, whose code safe mode does not run).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: Keras model file not found")
    if not is_keras_file(path):
        raise DataError(f"{path}: expected a Keras 3 .keras file")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as e:  # Keras raises ValueError, OSError, zipfile errors, TypeError ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"{path}: not a loadable Keras model ({first})") from None


def save_keras(model: keras.Model | KerasModule, path: str | os.PathLike[str]) -> Path:
    """Write a Keras model (or its view) as a ``.keras`` file, atomically (:func:`~distiq.io.atomic_path`).

    Why a staged name: Keras writes only to a path ending in ``.keras``, and the atomic writer's temporary
    file does not, so Keras saves beside it under such a name and the result is renamed into place.
    """
    keras_model = model.keras_model if isinstance(model, KerasModule) else model
    path = Path(path)
    with atomic_path(path) as tmp:
        staged = tmp.with_suffix(".keras")
        try:
            keras_model.save(staged)
            os.replace(staged, tmp)
        finally:
            staged.unlink(missing_ok=True)
    return path


def clone(view: KerasModule) -> KerasModule:
    """A view of a copy of ``view``'s Keras model, same architecture and weights (``copy.deepcopy`` of a
    Keras model is not supported), for a stage that changes a model its caller still holds."""
    copied = keras.models.clone_model(view.keras_model)
    copied.set_weights(view.keras_model.get_weights())
    twin = KerasModule(copied)
    if hasattr(view, "config"):
        twin.config = dict(view.config)
    return twin.train(view.training)


def load_model(path: str | os.PathLike[str]) -> KerasModule:
    """A ``.keras`` file as a :class:`KerasModule` (what recipes and ``dq.models.create`` build)."""
    return KerasModule(load_keras(path), source=Path(path).resolve())


def as_module(model: nn.Module) -> nn.Module:
    """``model`` as distiq trains it: a Keras model as its :class:`KerasModule` view, else itself."""
    return KerasModule(model) if isinstance(model, keras.Model) else model
