"""Content hashes of the files a result was made from: a weights file, an ``.npz``, an image folder.

Why: a rerun may reuse a result only when its inputs are the same, and a file replaced at the same
path is not the same input. A key that hashed the path would hand back a model made from the old
file; hashing the contents cannot. Hashes are cached by ``(path, size, mtime, inode)``, so one
process hashes each unchanged file once however many stages ask.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from distiq.errors import DataError

_CHUNK = 1 << 20
_cache: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's contents (hex); ``DataError`` naming the file when it cannot be read."""
    path = Path(path)
    try:
        st = path.stat()
        stamp = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        if stamp not in _cache:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
            _cache[stamp] = digest.hexdigest()
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    return _cache[stamp]


def folder_sha256(path: str | os.PathLike[str]) -> str:
    """One sha256 over a folder's files: each file's path (relative, sorted) and contents' hash.

    A renamed, added, removed or edited file changes it; a touched but unchanged file does not.
    """
    root = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def path_sha256(path: str | os.PathLike[str]) -> str:
    """:func:`file_sha256` of a file, :func:`folder_sha256` of a folder."""
    return folder_sha256(path) if Path(path).is_dir() else file_sha256(path)


def data_fingerprint(spec: str, root: str | os.PathLike[str] | None = None) -> dict:
    """What identifies the data a user named (a ``--data`` value or a recipe's ``data.name``).

    A registered dataset is its name and root (its files are distiq's to keep unchanged); a user's
    ``.npz`` file or image folder is also the hash of its contents.
    """
    from distiq import data as dqdata  # data builds on the layers below this module

    found = {"name": spec, "root": None if root is None else str(root)}
    if spec not in dqdata.names() and Path(spec).exists():
        found["sha256"] = path_sha256(spec)
    return found
