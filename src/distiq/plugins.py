"""The user's extensions: one decorator to register them, one loader to import them.

Why: a loss, calibrator or model the user writes must be usable by name wherever distiq takes a name —
in a recipe, on the command line, in Python. ``@dq.register("loss")`` puts it in the registry of that
kind; ``plugins: [my_losses.py]`` in a recipe (or ``distiq --plugin my_losses.py ...``) imports the file
before the recipe is validated, so its names are known when they are checked. A plugin is code the user
chose to run, like the recipe itself; nothing a weights or data file says is ever imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from distiq.errors import DistiqError
from distiq.registry import Registry


def registries() -> dict[str, Registry]:
    """Every extension point by the ``kind`` :func:`register` takes (imported here, on use, because the
    registries live in the packages that use them)."""
    from distiq.data import DATASETS
    from distiq.distill.features import FEATURES
    from distiq.distill.logits import LOGIT_LOSSES
    from distiq.evaluate.metrics import METRICS
    from distiq.evaluate.robustness import CORRUPTIONS
    from distiq.models.zoo import MODELS
    from distiq.prune.structured import IMPORTANCES
    from distiq.quant.observers import OBSERVERS

    return {
        "model": MODELS,
        "loss": LOGIT_LOSSES,
        "feature": FEATURES,
        "calibrator": OBSERVERS,
        "importance": IMPORTANCES,
        "metric": METRICS,
        "corruption": CORRUPTIONS,
        "dataset": DATASETS,
    }


def register(kind: str, name: str | None = None) -> Callable[[Any], Any]:
    """Decorator registering an extension of ``kind`` under ``name`` (default: its ``__name__``).

    What each kind must be is what its registry's built-ins are: a ``"loss"`` a
    :class:`distiq.distill.logits.LogitLoss` subclass (built with the recipe's ``temperature`` and
    ``loss_options``, ``forward(student_logits, teacher_logits, target)`` -> scalar); a ``"model"`` a
    factory taking ``num_classes``, ``in_channels``, ``image_size`` and its own options; a
    ``"calibrator"`` a :class:`distiq.quant.observers.Calibrator` subclass; a ``"feature"`` an
    ``nn.Module`` built as ``cls(student_shape, teacher_shape)``; ``"importance"`` a Torch-Pruning
    importance factory; ``"metric"`` ``fn(y_true, y_pred)`` -> float; ``"corruption"``
    ``fn(x, severity, generator, lo, hi)`` -> x; ``"dataset"`` a loader ``fn(split, root)``.
    """
    found = registries()
    if kind not in found:
        raise DistiqError(f"register: unknown kind {kind!r}; known: {', '.join(found)}")
    return found[kind].register(name)


def load_plugins(refs: Iterable[str], base_dir: str | Path = ".") -> list[str]:
    """Import each plugin once: a ``path/to/file.py`` (relative to ``base_dir``, the recipe's folder)
    or a ``package.module``. Returns the module names imported.

    Raises:
        DistiqError: A file is missing, or importing it fails (named, with the error's first line).
    """
    return [_load(str(ref), Path(base_dir)) for ref in refs]


def _load(ref: str, base_dir: Path) -> str:
    if not ref.endswith(".py"):
        return _run(ref, lambda: importlib.import_module(ref)).__name__
    path = (base_dir / ref).resolve()
    if not path.is_file():
        raise DistiqError(f"plugins: {ref}: no such file (looked in {base_dir.resolve()})")
    name = f"distiq_plugin_{abs(hash(str(path))):x}"
    if name in sys.modules:  # imported once: a second import would register its names twice
        return name
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    try:
        _run(ref, lambda: spec.loader.exec_module(module))  # type: ignore[union-attr]
    except DistiqError:
        del sys.modules[name]
        raise
    return name


def _run(ref: str, action: Callable[[], Any]) -> Any:
    try:
        return action()
    except DistiqError:
        raise
    except Exception as e:  # the user's code: any error it raises is their input's problem
        first = (str(e).splitlines() or [""])[0]
        raise DistiqError(f"plugins: {ref}: {type(e).__name__}: {first}") from None
