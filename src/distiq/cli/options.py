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

from distiq.errors import DistiqError, validation_message
from distiq.io import read_yaml_mapping

CLI_TYPES = (str, int, float, bool, Path)


def _cli_type(annotation: Any) -> Any | None:
    """The type typer should parse for a field, or None when the field is YAML-only."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if annotation in CLI_TYPES:
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1 and args[0] in CLI_TYPES:
        return args[0]
    if origin in (typing.Union, types.UnionType) and set(args) <= {int, float}:
        return float
    if origin is list and args and args[0] in CLI_TYPES:
        return list[args[0]]
    return None


def load_options(model: type[BaseModel], config: Path | None, given: dict[str, Any]) -> BaseModel:
    """Merge a YAML file and command-line values into a validated options model."""
    data: dict[str, Any] = {}
    source = "options"
    if config is not None:
        source = str(config)
        data.update(read_yaml_mapping(config, "config"))
    data.update({k: v for k, v in given.items() if v is not None})
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise DistiqError(validation_message(e, source)) from None


def command(app: typer.Typer, name: str, model: type[BaseModel], help: str):
    """Register ``fn(options)`` as command ``name`` whose options are ``model``'s fields."""

    def decorate(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        params = [
            inspect.Parameter(
                "config",
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(None, "--config", "-c", help="YAML file of these options."),
                annotation=Path | None,
            )
        ]
        yaml_only = []
        for field, info in model.model_fields.items():
            kind = _cli_type(info.annotation)
            if kind is None:
                yaml_only.append(field)
                continue
            default = info.default if info.default is not None else "none"
            flag = "--" + field.replace("_", "-")
            if kind is bool:
                flag = f"{flag}/--no-{field.replace('_', '-')}"
            opt = typer.Option(
                None, flag, help=f"{info.description} [default: {default}]", show_default=False
            )
            params.append(
                inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=kind | None)
            )

        def wrapper(**kwargs: Any) -> None:
            config = kwargs.pop("config")
            fn(load_options(model, config, kwargs))

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        doc = help
        if yaml_only:
            doc += "\n\nSet only in the --config file: " + ", ".join(yaml_only) + "."
        wrapper.__doc__ = doc
        app.command(name, help=doc)(wrapper)
        return fn

    return decorate
