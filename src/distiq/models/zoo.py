"""The model zoo: one registry of model families, ``create`` by name, and user models by import path.

Why a registry and not a dict of classes: a recipe names its teacher and student ("resnet20",
"vgg-small" with ``width=0.5``), and a user adds a family of their own in one file of theirs, either
by decorating a factory with ``@MODELS.register("name")`` or by naming it as
``"package.module:factory"``; nothing in distiq has to be edited for either.

Every factory takes ``num_classes``, ``in_channels`` and ``image_size`` plus options of its own, and
every built-in model records ``config`` (its name and every option, resolved to a value) so that a
checkpoint can rebuild the exact architecture with :func:`create_from_config`.

A config read from a file is data, and loading data never runs code: :func:`create_from_config` builds
only registered names with plain JSON options, and imports a ``"package.module:factory"`` only when the
caller lists that exact reference in ``allow_code`` (the user named it: a CLI flag, a recipe).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from distiq.errors import DistiqError
from distiq.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
"""Model factories by name; the families in this package register themselves on import."""


def names() -> list[str]:
    """Registered model names, sorted (user models named by import path are not listed)."""
    return MODELS.names()


def create(
    name: str,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    **options: Any,
) -> nn.Module:
    """Build a model by registered name or by ``"package.module:factory"`` import path.

    Args:
        name: A name from :func:`names` or ``"package.module:factory"``; the factory is called with
            ``num_classes``, ``in_channels``, ``image_size`` and ``options`` as keywords. A path to a
            ``.keras`` file gives that Keras model as a :class:`distiq.keras.KerasModule` (the sizes
            are the file's; the ``keras`` extra).
        num_classes: Size of the output logits.
        in_channels: Channels of the input images (1 for grey, 3 for colour).
        image_size: Side of the square input images; every built-in model works from 8 pixels up.
        **options: Family options (``hidden``, ``width``, ``dropout``, ...).

    Returns:
        The model, in training mode, with ``config`` recording how to rebuild it.

    Raises:
        DistiqError: (a ``ValueError``) for an unknown name, an option the family does not take, a
            bad size, or a user factory that cannot be imported, is not callable or returns no module.
    """
    if is_keras_file(name):
        return _keras_file(name, options)
    for key, value in (
        ("num_classes", num_classes),
        ("in_channels", in_channels),
        ("image_size", image_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DistiqError(f"model {name!r}: {key} must be a positive integer, got {value!r}")
    factory = _load_user_factory(name) if ":" in name else _registered(name)
    sizes = dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    _check_options(name, factory, sizes, options)
    model = factory(**sizes, **options)
    if not isinstance(model, nn.Module):
        raise DistiqError(f"model factory {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    if not hasattr(model, "config"):
        # A user model without its own config still gets one, so checkpoints can rebuild it.
        model.config = dict(name=name, **sizes, **options)
    return model


def create_from_config(
    config: Mapping[str, Any], *, allow_code: str | Iterable[str] = (), source: str = "model config"
) -> nn.Module:
    """Rebuild a model from the ``config`` dict a model records (e.g. read back from a checkpoint).

    Why ``allow_code``: the config usually comes from a file, and a file must not choose code to run
    (safetensors exists so that loading weights cannot). A registered name is built as usual; a
    ``"package.module:factory"`` is imported only when it is one of the references the user asked for,
    and otherwise refused before anything is imported.

    Args:
        config: ``{"name": ..., "num_classes": ..., "in_channels": ..., "image_size": ..., **options}``;
            option values must be plain JSON (numbers, strings, booleans, null, lists, dicts).
        allow_code: The exact ``"package.module:factory"`` references the caller trusts (one or many).
        source: What the config came from (a file's path), named first in every error.

    Raises:
        DistiqError: a malformed config, a name neither registered nor allowed, or a bad option.
    """
    name = config.get("name") if isinstance(config, Mapping) else None
    if not isinstance(name, str) or not name.isprintable() or len(name) > 200:  # it is echoed in one line
        got = f"{config!r:.200}"
        raise DistiqError(f"{source}: model config must be an object with a short string 'name', got {got}")
    rest = {k: v for k, v in config.items() if k != "name"}
    for key, value in rest.items():
        if not _plain(value):
            raise DistiqError(f"{source}: model {name!r} option {key!r} is not plain JSON: {value!r:.100}")
    allowed = {allow_code} if isinstance(allow_code, str) else set(allow_code)
    if ":" in name and name not in allowed:
        raise DistiqError(
            f"{source}: names model code {name!r}, which loading a file never imports; "
            f"if you trust it, allow it with --model-code {name} (Python: allow_code=[{name!r}])"
        )
    if ":" not in name and name not in MODELS and not is_keras_file(name):
        raise DistiqError(f"{source}: unknown model {name!r}; known: {', '.join(MODELS.names())}")
    try:
        return create(name, **rest)
    except DistiqError as exc:
        raise DistiqError(f"{source}: {exc}") from None
    except (TypeError, ValueError) as exc:  # options of the right names but the wrong type or value
        shown = f"{rest!r:.200}"
        raise DistiqError(f"{source}: model {name!r} cannot be built from options {shown}: {exc}") from None


def _plain(value: Any) -> bool:
    """Whether ``value`` is what JSON can hold (tuples too: in-memory configs keep ``hidden=(16,)``)."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements, each shared tensor counted once.

    Args:
        model: Any module.
        trainable_only: Count only parameters with ``requires_grad`` (e.g. a student beside a frozen
            teacher).
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def pool_or_skip(size: int, kernel: int = 2) -> tuple[nn.Module, int]:
    """A max pool and the image side after it, or ``nn.Identity`` when pooling would empty the image.

    Shared by the conv families so that every model builds for any image size and keeps the same
    module paths (a skipped pool is still there, as an identity) whatever the size.
    """
    if size < kernel:
        return nn.Identity(), size
    return nn.MaxPool2d(kernel), size // kernel


def scaled(channels: int, width: float) -> int:
    """``channels`` times a width multiplier, rounded, at least 1: how students are made thinner."""
    if isinstance(width, bool) or not isinstance(width, int | float) or width <= 0:
        raise DistiqError(f"width multiplier must be a positive number, got {width!r}")
    return max(1, round(channels * width))


def is_keras_file(name: object) -> bool:
    """Whether a model reference names a Keras 3 file (by its suffix, as for ONNX files)."""
    return name is not None and str(name).lower().endswith(".keras")


def _keras_file(path: str, options: dict[str, Any]) -> nn.Module:
    """A Keras 3 file as a torch module (:func:`distiq.keras.load_model`, safe mode: loading it runs no
    code, so a weights file may name one). Its architecture and sizes are the file's own."""
    if options:
        raise DistiqError(f"model {path!r}: a .keras file takes no options, got {', '.join(options)}")
    try:
        from distiq.keras import load_model  # the optional extra, needed only for .keras files
    except ImportError:
        raise DistiqError(
            f"model {path!r}: Keras models need the keras extra (pip install 'distiq[keras]')"
        ) from None
    return load_model(path)


def _registered(name: str) -> Callable[..., nn.Module]:
    if name not in MODELS:
        raise DistiqError(f"unknown model {name!r}; known: {', '.join(MODELS.names())}")
    return MODELS.get(name)


def _load_user_factory(spec: str) -> Callable[..., nn.Module]:
    """Import ``"package.module:factory"``; any failure names the spec, as recipes are user input."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise DistiqError(f"model {spec!r}: expected 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import runs user code, which may raise anything
        raise DistiqError(f"model {spec!r}: cannot import {module_name!r}: {exc}") from exc
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise DistiqError(f"model {spec!r}: module {module_name!r} has no {attr!r}")
    if not callable(factory):
        raise DistiqError(f"model {spec!r}: {attr!r} is not callable")
    return factory


def _check_options(
    name: str, factory: Callable[..., Any], sizes: dict[str, int], options: dict[str, Any]
) -> None:
    """Turn a wrong keyword into one clear line instead of a ``TypeError`` deep in a constructor."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins have no signature; let the call decide
        return
    try:
        signature.bind(**sizes, **options)
    except TypeError as exc:
        known = [p for p in signature.parameters if p not in sizes]
        raise DistiqError(f"model {name!r}: {exc}; its options: {', '.join(known) or 'none'}") from None
