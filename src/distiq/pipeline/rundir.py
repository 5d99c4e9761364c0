"""The run directory: one folder per run, one sub-folder per stage, ``run.json`` describing it all.

A stage is skipped on a later call when its ``stage.json`` records the same input key (a hash of the
stage's recipe section, the data section and the previous stage's key) and its artifacts still
exist, so an interrupted run resumes at the stage it was in, and editing one stage's options reruns
that stage and everything after it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distiq.io import write_bytes_atomic, write_json_atomic


@dataclass
class StageRecord:
    """What one stage did and measured (the report reads these)."""

    name: str
    kind: str
    dir: str
    key: str
    seconds: float = 0.0
    skipped: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    quant: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def stage_key(kind: str, spec: Any, previous: str, data: Any) -> str:
    """A short hash of everything a stage's output depends on."""
    blob = json.dumps(
        {"kind": kind, "spec": spec, "previous": previous, "data": data}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_stage(run_dir: Path, stage_dir: str, key: str) -> StageRecord | None:
    """The recorded stage if it was finished with the same key and its artifacts exist."""
    path = run_dir / stage_dir / "stage.json"
    if not path.is_file():
        return None
    try:
        record = StageRecord(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None  # an unreadable record means "not done": the stage runs again
    if record.key != key or not all((run_dir / a).exists() for a in record.artifacts.values()):
        return None
    return record


def claim_stage_dir(stage_dir: Path, key: str) -> None:
    """Prepare a stage's folder for a run with ``key``.

    A folder left by an interrupted run with the *same* key is kept, so its training checkpoint
    resumes; one left by different inputs is emptied, so a stale checkpoint (say, of a student
    pruned to other shapes) is never resumed.
    """
    marker = stage_dir / "key.txt"
    if stage_dir.exists() and (not marker.is_file() or marker.read_text().strip() != key):
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(marker, key.encode())


def save_stage(run_dir: Path, record: StageRecord) -> None:
    """Write the stage's record last, so its presence means the stage finished."""
    write_json_atomic(run_dir / record.dir / "stage.json", record.to_dict())


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
