"""Atomic file writing: an artifact on disk is either the old complete file or the new one.

Why: a run killed mid-write (Ctrl-C, OOM, a pre-empted job) must never leave a half checkpoint that a
resume would then trust.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from distiq.errors import DistiqError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        # after the writer, not before: mkstemp makes 0600, and so do writers that replace the file
        # (safetensors' save_file); every artifact gets the permissions the user's umask gives
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask (read by setting it, then restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_yaml_mapping(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """A YAML file holding a mapping; ``DistiqError`` naming the file when missing or malformed.

    Args:
        path: The file.
        what: What the file is ("config", "recipe"), for the messages.
    """
    path = Path(path)
    if not path.is_file():
        raise DistiqError(f"{path}: {what} file not found")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:  # YAML is text: bytes that are not UTF-8 too
        raise DistiqError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise DistiqError(f"{path}: expected a mapping at the top level")
    return loaded
