"""An ONNX file as a (fixed) PyTorch module: a teacher nobody here wrote.

Why: a recipe's teacher may be only an ``.onnx`` file (an export from another framework, a vendor's
model). Distillation needs nothing from a teacher but its logits, so ONNX Runtime computes them and the
student trains as with any teacher (offline: the logits are computed once and cached). The file's
SHA-256 is a buffer, so the offline cache, keyed by the teacher's tensors, changes with the file.

What it cannot do, said where it is asked for (recipe validation): feature terms (no layer outputs to
hook), initialising a student from its weights, pruning it, attribution maps (no gradients).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distiq import runtime


class OnnxModel(nn.Module):
    """``forward(x)`` = the first output of the ONNX file at ``path`` run by ONNX Runtime (no gradients).

    Args:
        path: The ONNX file (one input batch ``[N, ...]``, first output the logits).
        threads: ORT intra-op threads (0: ORT chooses).
    """

    def __init__(self, path: str | os.PathLike[str], threads: int = 0) -> None:
        super().__init__()
        self.path = Path(path)
        self._session = runtime.session(self.path, threads=threads)
        digest = hashlib.sha256(self.path.read_bytes()).digest()
        self.register_buffer("file_sha256", torch.tensor(list(digest), dtype=torch.uint8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = runtime.run_checked(self._session, x.detach().cpu().numpy().astype(np.float32), self.path)
        return torch.from_numpy(np.ascontiguousarray(out))

    def extra_repr(self) -> str:
        return str(self.path)


def is_onnx_file(path: str | os.PathLike[str] | None) -> bool:
    """Whether a model reference names an ONNX file (by its suffix, as the CLI does)."""
    return path is not None and Path(path).suffix.lower() == ".onnx"


__all__ = ["OnnxModel", "is_onnx_file"]
