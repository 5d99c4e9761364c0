"""Training schemes around distillation: freeze chosen layers, initialise a student from its teacher.

Both change a model in place (trailing underscore) and return what they touched, so a run can log
exactly which layers were frozen or copied.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import torch
from torch import nn

from distiq.errors import DistiqError

#: Shorthands a user may write instead of listing layers.
LAYER_GROUPS: dict[str, tuple[type[nn.Module], ...]] = {
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
    "pool": (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d),
    "bn": (nn.BatchNorm1d, nn.BatchNorm2d),
    "linear": (nn.Linear,),
}


def _matches(path: str, module: nn.Module, pattern: str) -> bool:
    if pattern in LAYER_GROUPS:
        return isinstance(module, LAYER_GROUPS[pattern])
    if pattern == type(module).__name__:
        return True
    return fnmatch.fnmatchcase(path, pattern) or path.startswith(pattern + ".")


def freeze_(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Stop training the layers matching ``patterns``; return the frozen module paths.

    A pattern is a module path glob (``features.*``, ``classifier.0``), a class name
    (``Conv2d``) or a group (``conv``, ``pool``, ``bn``, ``linear``); ``["conv", "pool"]`` freezes
    the feature extractor of a CNN and fine-tunes its classifier. Frozen BatchNorm layers get
    ``momentum=0`` so their running statistics stay those of the pre-trained model.

    Raises:
        DistiqError: A pattern matched no layer.
    """
    patterns = list(patterns)
    frozen: list[str] = []
    used = dict.fromkeys(patterns, False)
    for path, module in model.named_modules():
        if not path:
            continue
        hits = [p for p in patterns if _matches(path, module, p)]
        if not hits:
            continue
        for p in hits:
            used[p] = True
        for param in module.parameters(recurse=True):
            param.requires_grad_(False)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.0
        frozen.append(path)
    unused = [p for p, u in used.items() if not u]
    if unused:
        raise DistiqError(f"freeze: no layer of {type(model).__name__} matches {', '.join(unused)}")
    return frozen


@torch.no_grad()
def init_from_teacher_(student: nn.Module, teacher: nn.Module) -> list[str]:
    """Copy every teacher tensor whose name and shape match one of the student's.

    Why: a student that is a shallower or narrower copy of its teacher (ResNet-8 from ResNet-20, a
    VGG with fewer blocks) starts from the teacher's stem and early blocks instead of from noise,
    which speeds up distillation. Returns the copied state-dict keys.
    """
    theirs = teacher.state_dict()
    copied = []
    for name, tensor in student.state_dict().items():
        src = theirs.get(name)
        if src is not None and src.shape == tensor.shape and src.dtype == tensor.dtype:
            tensor.copy_(src)
            copied.append(name)
    return copied
