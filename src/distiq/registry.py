"""One generic name -> factory registry, shared by models, losses, calibrators and importances.

Why one class: every extension point (a model family, a distillation loss, a calibrator) is looked up
by the name a user writes in a recipe, so they all need the same behaviour: a duplicate name is a bug
and raises, an unknown name is bad input and raises :class:`~distiq.errors.DistiqError` naming the
kind, the bad name, the closest known one and all the known ones (one line, exit code 2 on the
command line).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from distiq.errors import DistiqError

T = TypeVar("T", bound=Callable[..., Any])


def unknown_name(kind: str, name: object, known: Iterable[str]) -> DistiqError:
    """The error for a name that is not one of ``known``: kind, name, closest match, known names.

    Shared by :meth:`Registry.get` and lookups spanning several registries (metrics), so a misspelt
    name reads the same wherever it is caught.
    """
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1) if isinstance(name, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return DistiqError(f"unknown {kind} {name!r}{hint}; known: {', '.join(known) or '(none)'}")


class Registry(Generic[T]):
    """Maps names to factories (classes or functions).

    Args:
        kind: What the registry holds ("model", "loss", ...), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator registering a factory under ``name`` (default: its ``__name__``)."""

        def add(obj: T) -> T:
            key = name or obj.__name__
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The factory registered as ``name``.

        Raises:
            DistiqError: ``name`` is not registered (a ``ValueError``, so ``except ValueError`` still
                catches it); the message names the kind, ``name``, the closest match and the known names.
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):  # TypeError: an unhashable "name" from a recipe
            raise unknown_name(self.kind, name, self._items) from None

    def unknown(self, name: object) -> DistiqError:
        """The error :meth:`get` raises for ``name`` (for callers that prefix it with a field)."""
        return unknown_name(self.kind, name, self._items)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
