"""The run record: what a run directory's ``run.json`` and each stage's ``stage.json`` hold.

Why one low-level module: the pipeline writes these files and the report (and ``distiq rerun``, and
a user's own scripts) read them. With the schema declared here once, the writer cannot add a field the
reader guesses at, and a record that is not what distiq wrote (edited by hand, truncated, from another
tool) is one clear line naming the file and the field instead of a report with silent gaps.

Every metric inside a stage's ``metrics`` stays an open mapping (a stage records what its kind
measures: an int8 stage has ``accuracy_simulated``, a float one does not); the keys around it are fixed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from distiq.errors import DataError, validation_message
from distiq.io import write_json_atomic

RUN_FILE = "run.json"
STAGE_FILE = "stage.json"

_STRICT = ConfigDict(extra="forbid")


@dataclass(config=_STRICT)
class StageRecord:
    """What one stage did and measured (``stages/NN-kind/stage.json``, and an entry of ``run.json``).

    Attributes:
        name: Shown in reports (the stage kind, or a search trial's label).
        kind: teacher, distill, prune, quantize, search, ...
        dir: The stage's folder, relative to the run directory.
        key: Hash of everything the stage's output depends on (a rerun with the same key reuses it).
        seconds: Wall-clock time the stage took when it ran.
        skipped: Reused from an earlier run of the same inputs.
        metrics: Measurements on the test split (accuracy, f1_macro, size_bytes, latency_ms_p50, ...).
        history: One record per training epoch.
        quant: The quantization report of an int8 stage.
        artifacts: Name -> file relative to the run directory (always an ``onnx`` one).
        extra: Stage-specific records (the search's trials, the evaluation key, deploy checks).
    """

    name: str
    kind: str
    dir: str
    key: str
    seconds: float = 0.0
    skipped: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    quant: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(config=_STRICT)
class RunRecord:
    """A whole run (``run.json``), rewritten after every stage so a killed run leaves a readable one.

    Attributes:
        name: The recipe's name.
        recipe: The validated recipe, as JSON.
        versions: Package versions (python, distiq, torch, onnxruntime, ...).
        cpu: The CPU every latency and int8 accuracy figure was measured on (model, target).
        dataset: The dataset's name.
        started / finished: ISO timestamps; ``finished`` is None while the run is unfinished.
        notes: What the run decided for the user (e.g. a validation split carved from train).
        stages: The stage records, in order.
        search: The budget search's trials and choice, when the recipe had a search.
        latency: How the stages' latencies were measured (:func:`distiq.pipeline.measure.retime`).
        splits: ``evaluate.splits`` results (subsample, kfold, ratios), when asked.
        attribution: ``evaluate.attribution`` results, when asked.
        tracking: Where the run was logged (``{"mlflow": {"uri", "experiment", "run_id"}}``).
    """

    name: str
    recipe: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    started: str | None = None
    finished: str | None = None
    notes: list[str] = field(default_factory=list)
    stages: list[StageRecord] = field(default_factory=list)
    search: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    splits: dict[str, Any] | None = None
    attribution: dict[str, Any] | None = None
    tracking: dict[str, Any] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _read(path: Path, schema: type) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: not found (is {path.parent} a run directory written by 'distiq run'?)")
    try:
        raw = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not readable as a run record ({e})") from None
    try:
        return TypeAdapter(schema).validate_python(raw)
    except ValidationError as e:
        raise DataError(validation_message(e, str(path))) from None


def read_run(run_dir: str | Path) -> RunRecord:
    """The run record of ``run_dir``.

    Raises:
        DataError: ``run.json`` is missing, not JSON, or not a run record (one line naming the field).
    """
    return _read(Path(run_dir) / RUN_FILE, RunRecord)


def read_stage(stage_dir: str | Path) -> StageRecord:
    """The record of one stage folder (same errors as :func:`read_run`)."""
    return _read(Path(stage_dir) / STAGE_FILE, StageRecord)


def write_run(run_dir: str | Path, record: RunRecord) -> None:
    """Replace ``run.json`` atomically."""
    write_json_atomic(Path(run_dir) / RUN_FILE, record.to_dict())


def write_stage(run_dir: str | Path, record: StageRecord) -> None:
    """Write a stage's record (last, so its presence means the stage finished)."""
    write_json_atomic(Path(run_dir) / record.dir / STAGE_FILE, record.to_dict())


__all__ = [
    "RUN_FILE",
    "STAGE_FILE",
    "RunRecord",
    "StageRecord",
    "read_run",
    "read_stage",
    "write_run",
    "write_stage",
]
