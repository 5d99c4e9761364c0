"""Concept mappings: from a teacher's fine label vocabulary to a smaller vocabulary of concepts.

Concept distillation (:mod:`distiq.distill.concept`) trains a student that predicts concepts
("footwear") from a teacher that predicts fine labels ("Sandal", "Sneaker", "Ankle boot"). The
mapping between the two is a YAML or JSON file::

    # optional: the teacher's label names in index order (else pass teacher_labels=...)
    teacher_labels: [T-shirt/top, Trouser, Pullover, ...]
    concepts:
      upper-body garment: [T-shirt/top, Pullover, Coat, Shirt]
      footwear: [Sandal, Sneaker, 9]        # names or indices
      ...
    unmapped: []                            # teacher labels deliberately left out

A bare ``{concept: [labels]}`` mapping is accepted too. Validation is strict because a silently
dropped or doubly counted label corrupts every concept probability: each teacher label must belong
to exactly one concept or be listed under ``unmapped``; every error is a :class:`DistiqError` naming
the file and the bad entry.

Built-in mappings ship in ``distiq/data/mappings`` and load by name: ``load_mapping("fashion-mnist-4")``.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import Dataset

from distiq.data.arrays import ArrayDataset, as_arrays
from distiq.errors import DataError, DistiqError

BUILTIN = {"fashion-mnist-4": "fashion_mnist_4.yaml"}
_KEYS = {"concepts", "teacher_labels", "unmapped", "description"}


@dataclass(frozen=True)
class ConceptMapping:
    """A validated teacher-label -> concept mapping.

    Attributes:
        concepts: Concept names; a concept's index is its position here (file order).
        teacher_labels: The teacher's label names, index order.
        concept_of: For each teacher label, its concept index, or -1 if unmapped.
        source: Where the mapping came from (a path or ``"<dict>"``), for messages.
    """

    concepts: tuple[str, ...]
    teacher_labels: tuple[str, ...]
    concept_of: tuple[int, ...]
    source: str = "<dict>"

    @property
    def num_concepts(self) -> int:
        return len(self.concepts)

    @property
    def num_teacher_labels(self) -> int:
        return len(self.teacher_labels)

    @property
    def unmapped(self) -> list[str]:
        """Teacher labels that belong to no concept."""
        return [n for n, c in zip(self.teacher_labels, self.concept_of, strict=True) if c < 0]

    def index(self) -> torch.Tensor:
        """``[K_teacher]`` int64: concept index of each teacher label (-1 when unmapped)."""
        return torch.tensor(self.concept_of, dtype=torch.long)

    def membership(self) -> torch.Tensor:
        """``[K_teacher, C]`` float 0/1 matrix: entry ``(k, c)`` is 1 when label ``k`` is in concept ``c``."""
        m = torch.zeros(self.num_teacher_labels, self.num_concepts)
        for k, c in enumerate(self.concept_of):
            if c >= 0:
                m[k, c] = 1.0
        return m

    def members(self) -> dict[str, list[str]]:
        """Concept name -> its teacher label names."""
        out: dict[str, list[str]] = {c: [] for c in self.concepts}
        for name, c in zip(self.teacher_labels, self.concept_of, strict=True):
            if c >= 0:
                out[self.concepts[c]].append(name)
        return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader refusing duplicate keys (PyYAML otherwise keeps the last one silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise DistiqError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise DistiqError(f"duplicate key {dup!r}")
    return dict(pairs)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: concept mapping file not found")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text, object_pairs_hook=_json_pairs)
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except DistiqError as e:
        raise DistiqError(f"{path}: {e}") from None
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({e})") from None


def builtin_mappings() -> list[str]:
    """Names of the mappings shipped with distiq."""
    return sorted(BUILTIN)


def load_mapping(
    path_or_name: str | os.PathLike[str] | Mapping[str, Any],
    teacher_labels: Sequence[str] | int | None = None,
) -> ConceptMapping:
    """Read and validate a concept mapping.

    Args:
        path_or_name: A ``.yaml``/``.yml``/``.json`` file, a built-in name (:func:`builtin_mappings`),
            or an already parsed dict in the file's format.
        teacher_labels: The teacher's label names (index order), or their number when the file
            uses indices only. Needed unless the file lists ``teacher_labels``; when both are given
            they must agree.

    Raises:
        DataError: The file is missing or unparsable (message has its path).
        DistiqError: A bad entry: unknown label, label in two concepts, label in no concept and
            not listed as ``unmapped``, index out of range, empty concept... (message has the file
            and the entry).
    """
    if isinstance(path_or_name, Mapping):
        raw, source = dict(path_or_name), "<dict>"
    else:
        name = str(path_or_name)
        if name in BUILTIN and not Path(name).exists():
            path = Path(str(resources.files("distiq.data") / "mappings" / BUILTIN[name]))
        else:
            path = Path(name)
        raw, source = _read(path), str(path)
    return _validate(raw, teacher_labels, source)


def _validate(raw: Any, teacher_labels: Sequence[str] | int | None, source: str) -> ConceptMapping:
    def bad(msg: str) -> DistiqError:
        return DistiqError(f"{source}: {msg}")

    if not isinstance(raw, dict):
        raise bad(f"expected a mapping of concept names to label lists, got {type(raw).__name__}")
    structured = isinstance(raw.get("concepts"), dict)
    if structured and set(raw) - _KEYS:
        unknown = ", ".join(map(repr, sorted(set(raw) - _KEYS, key=str)))
        raise bad(f"unknown top-level key(s) {unknown}; expected {', '.join(sorted(_KEYS))}")
    concepts_raw = raw["concepts"] if structured else raw
    unmapped_raw = (raw.get("unmapped") or []) if structured else []
    file_labels = raw.get("teacher_labels") if structured else None
    labels = _vocabulary(file_labels, teacher_labels, concepts_raw, unmapped_raw, bad)
    lookup = {n: i for i, n in enumerate(labels)}

    def resolve(entry: Any, where: str) -> int:
        if isinstance(entry, bool) or not isinstance(entry, (int, str)):
            raise bad(f"{where}: expected a teacher label name or index, got {entry!r}")
        if isinstance(entry, int):
            if not 0 <= entry < len(labels):
                raise bad(f"{where}: teacher label index {entry} outside 0..{len(labels) - 1}")
            return entry
        if entry not in lookup:
            close = difflib.get_close_matches(entry, labels, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise bad(f"{where}: unknown teacher label {entry!r}{hint}")
        return lookup[entry]

    if len(concepts_raw) < 2:
        raise bad(f"need at least 2 concepts, got {len(concepts_raw)}")
    concept_of = [-1] * len(labels)
    owner: dict[int, str] = {}
    for c, (concept, members) in enumerate(concepts_raw.items()):
        where = f"concepts.{concept}"
        if not isinstance(concept, str) or not concept:
            raise bad(f"concept names must be non-empty strings, got {concept!r}")
        if not isinstance(members, list) or not members:
            raise bad(f"{where}: expected a non-empty list of teacher labels, got {members!r}")
        for entry in members:
            k = resolve(entry, where)
            if k in owner:
                raise bad(
                    f"{where}: teacher label {labels[k]!r} ({k}) is already mapped to "
                    f"{owner[k]!r}; each label belongs to exactly one concept"
                )
            owner[k] = concept
            concept_of[k] = c
    if not isinstance(unmapped_raw, list):
        raise bad(f"unmapped: expected a list of teacher labels, got {unmapped_raw!r}")
    allowed = set()
    for entry in unmapped_raw:
        k = resolve(entry, "unmapped")
        if k in owner:
            raise bad(f"unmapped: teacher label {labels[k]!r} ({k}) is also mapped to {owner[k]!r}")
        allowed.add(k)
    missing = [f"{labels[k]!r} ({k})" for k in range(len(labels)) if k not in owner and k not in allowed]
    if missing:
        raise bad(
            f"teacher label(s) {', '.join(missing)} mapped to no concept; map them or list them "
            "under 'unmapped'"
        )
    return ConceptMapping(tuple(concepts_raw), tuple(labels), tuple(concept_of), source)


def _vocabulary(
    file_labels: Any, given: Sequence[str] | int | None, concepts_raw: dict, unmapped_raw: Any, bad
) -> list[str]:
    """The teacher's label names: given, else from the file, else ``0..max index`` if only indices."""
    if file_labels is not None:
        if not isinstance(file_labels, list) or not all(isinstance(n, str) for n in file_labels):
            raise bad(f"teacher_labels: expected a list of names, got {file_labels!r}")
        if len(set(file_labels)) != len(file_labels):
            dup = next(n for n in file_labels if file_labels.count(n) > 1)
            raise bad(f"teacher_labels: {dup!r} appears twice")
    if isinstance(given, int) and not isinstance(given, bool):
        given = [str(i) for i in range(given)]
    if given is not None:
        given = [str(n) for n in given]
        if file_labels is not None and list(file_labels) != given:
            raise bad(f"teacher_labels in the file {file_labels} differ from the teacher's {given}")
        return given
    if file_labels is not None:
        return list(file_labels)
    entries = [e for members in concepts_raw.values() if isinstance(members, list) for e in members]
    entries += unmapped_raw if isinstance(unmapped_raw, list) else []
    if entries and all(isinstance(e, int) and not isinstance(e, bool) for e in entries):
        return [str(i) for i in range(max(entries) + 1)]
    raise bad("label names need the teacher's vocabulary: add teacher_labels to the file or pass it")


def to_concepts(dataset: Dataset, mapping: ConceptMapping) -> ArrayDataset:
    """Relabel ``dataset`` (teacher labels) to concept labels; samples of unmapped labels are dropped.

    The result's ``classes`` are the concept names, so it trains and evaluates a concept student.
    """
    ds = as_arrays(dataset)
    if len(ds) and int(ds.y.max()) >= mapping.num_teacher_labels:
        raise DistiqError(
            f"{ds.name}: label {int(ds.y.max())} but the mapping {mapping.source} knows "
            f"{mapping.num_teacher_labels} teacher labels"
        )
    concept = mapping.index()[ds.y]
    keep = torch.nonzero(concept >= 0).flatten()
    return ArrayDataset(ds.x[keep], concept[keep], mapping.concepts, f"{ds.name}->concepts")
