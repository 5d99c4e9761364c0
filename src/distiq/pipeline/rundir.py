"""The run directory: one folder per run, one sub-folder per stage, ``run.json`` describing it all.

A stage is skipped on a later call when its ``stage.json`` records the same input key (a hash of the
stage's recipe section, the data section, the *contents* of the files they name, and the previous
stage's key) and its artifacts still exist, so an interrupted run resumes at the stage it was in,
editing one stage's options reruns that stage and everything after it, and so does replacing a
teacher's weights file or the data at the same path.

The pipeline owns the files it writes here; a file of the user's own (``--out .`` beside their
``recipe.yaml``) is never overwritten: the run's recipe is ``run-recipe.yaml``.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from distiq.errors import DataError
from distiq.fingerprint import path_sha256
from distiq.io import write_bytes_atomic
from distiq.record import StageRecord, read_stage, write_stage

RECIPE_FILE = "run-recipe.yaml"
LEGACY_RECIPE_FILE = "recipe.yaml"  # what distiq wrote before; still written where it is distiq's
_WRITTEN_BY = "# written by distiq run: the validated recipe of this run (also in run-recipe.yaml)\n"


def stage_key(kind: str, spec: Any, previous: str, data: Any, files: dict[str, str] | None = None) -> str:
    """A short hash of everything a stage's output depends on.

    Args:
        files: Content hashes of the files the stage reads, by path (:func:`spec_files`); without
            them a weights file replaced at the same path would be taken for the old one.
    """
    inputs = {"kind": kind, "spec": spec, "previous": previous, "data": data}
    if files:  # absent, not empty, when there are none: keys of runs without files stay as they were
        inputs["files"] = files
    blob = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def spec_files(spec: BaseModel) -> dict[str, str]:
    """The sha256 of every file a stage's spec names (its ``Path`` fields, nested ones too)."""
    found: dict[str, str] = {}
    for name in type(spec).model_fields:
        value = getattr(spec, name)
        if isinstance(value, Path):
            found[str(value)] = path_sha256(value)
        elif isinstance(value, BaseModel):
            found |= spec_files(value)
    return found


def write_recipe(run_dir: Path, recipe: dict) -> None:
    """The run's validated recipe as ``run-recipe.yaml``, and as ``recipe.yaml`` where that name is
    free or holds distiq's own copy: a user's file of that name stays as it is."""
    text = yaml.safe_dump(recipe)
    write_bytes_atomic(run_dir / RECIPE_FILE, text.encode())
    legacy = run_dir / LEGACY_RECIPE_FILE
    if not legacy.exists() or _written_by_distiq(legacy):
        write_bytes_atomic(legacy, (_WRITTEN_BY + text).encode())


def _written_by_distiq(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(_WRITTEN_BY.encode())) == _WRITTEN_BY.encode()
    except OSError:
        return False


def load_stage(run_dir: Path, stage_dir: str, key: str) -> StageRecord | None:
    """The recorded stage if it was finished with the same key and its artifacts exist."""
    try:
        record = read_stage(run_dir / stage_dir)
    except DataError:
        return None  # no record, or not one distiq wrote, means "not done": the stage runs again
    if record.key != key or "onnx" not in record.artifacts:
        return None
    if not all((run_dir / a).exists() for a in record.artifacts.values()):
        return None
    return record


def claim_stage_dir(stage_dir: Path, key: str) -> None:
    """Prepare a stage's folder for a run with ``key``.

    A folder left by an interrupted run with the *same* key is kept, so its training checkpoint
    resumes; one left by different inputs is emptied, so a stale checkpoint (say, of a student
    pruned to other shapes) is never resumed.
    """
    marker = stage_dir / "key.txt"
    if stage_dir.exists() and (not marker.is_file() or marker.read_bytes().strip() != key.encode()):
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(marker, key.encode())


def save_stage(run_dir: Path, record: StageRecord) -> None:
    """Write the stage's record last, so its presence means the stage finished."""
    write_stage(run_dir, record)


def versions() -> dict[str, str]:
    """Versions of what produced the numbers."""
    import onnxruntime
    import torch

    import distiq

    return {
        "distiq": distiq.__version__,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
