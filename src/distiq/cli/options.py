"""The bridge from typed option models to the command line and to YAML files.

Why: each command's options are declared once, as a pydantic model with a description per field.
That one declaration validates a ``--config`` YAML file (unknown key, wrong type -> one message
naming the key), generates the typer options with their help text, and fills the defaults. A
value given on the command line overrides the file.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, ValidationError
from rich.markup import escape

from distiq.errors import DistiqError, validation_message
from distiq.io import read_yaml_mapping

CLI_TYPES = (str, int, float, bool, Path)


def _cli_type(annotation: Any) -> Any | None:
    """The type typer should parse for a field, or None when the field is YAML-only."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if annotation in CLI_TYPES:
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Literal and all(isinstance(a, str) for a in args):
        return str  # pydantic checks the choice and names the ones it accepts
    if origin in (typing.Union, types.UnionType) and len(args) == 1 and args[0] in CLI_TYPES:
        return args[0]
    if origin in (typing.Union, types.UnionType) and set(args) <= {int, float}:
        return float
    if origin is list and args and args[0] in CLI_TYPES:
        return list[args[0]]
    return None


def load_options(model: type[BaseModel], config: Path | None, given: dict[str, Any]) -> BaseModel:
    """Merge a YAML file and command-line values into a validated options model (a nested section's
    command-line values, ``--qat-epochs``, merge into that section of the file)."""
    data: dict[str, Any] = {}
    source = "options"
    if config is not None:
        source = str(config)
        data.update(read_yaml_mapping(config, "config"))
    for key, value in given.items():
        if isinstance(value, dict):
            section = data.get(key) if isinstance(data.get(key), dict) else {}
            value = {**section, **{k: v for k, v in value.items() if v is not None}}
            if not value:
                continue
        if value is not None:
            data[key] = value
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise DistiqError(validation_message(e, source)) from None


def _section(annotation: Any) -> type[BaseModel] | None:
    """The options model of a nested section field (``qat: TrainSpec``), or None."""
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _options(
    model: type[BaseModel], prefix: str = "", defaults: BaseModel | None = None
) -> tuple[list[inspect.Parameter], list[str]]:
    """One typer option per field whose type the command line can parse (a nested section's fields
    as ``--section-field``, with the section's own defaults), and the fields only a file can set."""
    params, yaml_only = [], []
    for field, info in model.model_fields.items():
        name = prefix + field
        if defaults is not None:
            default = getattr(defaults, field)
        else:
            default = "required" if info.is_required() else info.get_default(call_default_factory=True)
        section = _section(info.annotation)
        if section is not None:
            inner, rest = _options(section, f"{name}__", default)
            params += inner
            yaml_only += rest
            continue
        kind = _cli_type(info.annotation)
        if kind is None:
            yaml_only.append(name.replace("__", "."))
            continue
        flag = "--" + name.replace("__", "-").replace("_", "-")
        if kind is bool:
            flag = f"{flag}/--no-{flag[2:]}"
        shown = "none" if default is None else default
        text = escape(f"{info.description} [default: {shown}]")  # rich would take [...] for markup
        opt = typer.Option(None, flag, help=text, show_default=False)
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=kind | None)
        )
    return params, yaml_only


def _nest(values: dict[str, Any]) -> dict[str, Any]:
    """``{"qat__epochs": 3}`` -> ``{"qat": {"epochs": 3}}``."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        *sections, last = key.split("__")
        node = nested
        for section in sections:
            node = node.setdefault(section, {})
        node[last] = value
    return nested


def command(app: typer.Typer, name: str, model: type[BaseModel], help: str):
    """Register ``fn(options)`` as command ``name`` whose options are ``model``'s fields."""

    def decorate(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        config = inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, "--config", "-c", help="YAML file of these options."),
            annotation=Path | None,
        )
        params, yaml_only = _options(model)

        def wrapper(**kwargs: Any) -> None:
            path = kwargs.pop("config")
            fn(load_options(model, path, _nest(kwargs)))

        wrapper.__signature__ = inspect.Signature([config, *params])  # type: ignore[attr-defined]
        doc = help
        if yaml_only:
            doc += "\n\nSet only in the --config file: " + ", ".join(yaml_only) + "."
        wrapper.__doc__ = doc
        app.command(name, help=doc)(wrapper)
        return fn

    return decorate
