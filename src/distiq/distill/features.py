"""Feature distillation terms: match an intermediate student feature to teacher feature(s).

Each term is an ``nn.Module`` built from the features' shapes without the batch dimension
(``(C, H, W)`` for maps, ``(D,)`` for vectors), so the trainer can size the adapters from one probe
batch before training starts. Adapter parameters belong to the term; the trainer optimises and
checkpoints them with the student and drops them afterwards. ``forward`` returns a scalar; the
teacher's features are detached, as the teacher is fixed.

Shape rule shared by the terms: a map resized to a *smaller* size is average-pooled
(``adaptive_avg_pool2d``, no aliasing, keeps the mean), otherwise bilinearly interpolated
(``align_corners=False``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distiq.distill import functional as Fd
from distiq.registry import Registry

Shape = tuple[int, ...]


def _shape(what: str, shape: Sequence[int]) -> Shape:
    shape = tuple(int(d) for d in shape)
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise ValueError(f"{what} shape must be (C, H, W) or (D,) without the batch dimension, got {shape}")
    return shape


def _check_input(what: str, x: torch.Tensor, shape: Shape) -> None:
    if tuple(x.shape[1:]) != shape:
        raise ValueError(
            f"{what} feature has shape {tuple(x.shape)}, expected [batch, {', '.join(map(str, shape))}]"
        )


def resize_map(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize ``[N, C, H, W]`` to ``size``: average-pool when shrinking both sides, else bilinear."""
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


#: Feature terms by the ``kind`` a recipe names. A term is an ``nn.Module`` built as
#: ``cls(student_shape, teacher_shape)`` (shapes without the batch dimension) whose ``forward(student,
#: teacher)`` returns a scalar; with ``many_teachers = True`` it gets lists of teacher shapes and maps.
FEATURES: Registry = Registry("feature term")


@FEATURES.register("hint")
class HintTerm(nn.Module):
    """FitNets hint (Romero et al., 2015): a learned adapter regresses the student to the teacher.

    The adapter is deliberately small (a 1x1 convolution for maps, a linear layer for vectors), as in
    the paper: a powerful regressor could fit the teacher from almost any student feature and the
    hint would teach the student nothing. Cases:

    - map -> map: 1x1 conv ``C_s -> C_t``, then the adapted map is resized to the teacher's ``H×W``.
    - vector -> vector: linear ``D_s -> D_t``.
    - map -> vector: the student map is global-average-pooled, then linear ``C_s -> D_t`` (teacher
      vectors usually come after such a pooling; flattening would need a ``C·H·W × D`` regressor).
    - vector -> map: ``ValueError``; spatial structure cannot be regressed from a vector.

    Args:
        student_shape: Student feature shape without batch, ``(C, H, W)`` or ``(D,)``.
        teacher_shape: Teacher feature shape without batch.
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int]) -> None:
        super().__init__()
        self.student_shape = _shape("student", student_shape)
        self.teacher_shape = _shape("teacher", teacher_shape)
        if len(self.teacher_shape) == 3:
            if len(self.student_shape) != 3:
                raise ValueError(
                    f"hint: cannot regress a vector student feature {self.student_shape} to a "
                    f"spatial teacher map {self.teacher_shape}; pick a student layer with a "
                    "spatial output or a teacher layer after pooling"
                )
            self.adapter: nn.Module = nn.Conv2d(self.student_shape[0], self.teacher_shape[0], 1)
        else:
            self.adapter = nn.Linear(self.student_shape[0], self.teacher_shape[0])

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        """MSE between the adapted student feature and the teacher feature."""
        _check_input("student", student_feat, self.student_shape)
        _check_input("teacher", teacher_feat, self.teacher_shape)
        if len(self.student_shape) == 3 and len(self.teacher_shape) == 1:
            student_feat = student_feat.mean(dim=(2, 3))
        adapted = self.adapter(student_feat)
        if adapted.dim() == 4:
            adapted = resize_map(adapted, self.teacher_shape[1:])
        return Fd.hint_mse(adapted, teacher_feat.detach())


@FEATURES.register("attention")
class AttentionTerm(nn.Module):
    """Attention transfer (Zagoruyko & Komodakis, 2017); no parameters.

    Channel counts may differ (maps are channel means); a different spatial size is handled by
    resizing the student's map to the teacher's before normalisation. See
    :func:`distiq.distill.functional.attention_transfer` for the exact value (range ``[0, 2]``).

    Args:
        student_shape: ``(C, H, W)``.
        teacher_shape: ``(C, H, W)``.
        p: Exponent of the attention map.
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int], p: float = 2.0) -> None:
        super().__init__()
        self.student_shape = _shape("student", student_shape)
        self.teacher_shape = _shape("teacher", teacher_shape)
        if len(self.student_shape) != 3 or len(self.teacher_shape) != 3:
            raise ValueError(
                "attention transfer needs spatial (C, H, W) features on both sides, got "
                f"student {self.student_shape} and teacher {self.teacher_shape}"
            )
        if not p > 0:
            raise ValueError(f"p must be > 0, got {p}")
        self.p = float(p)

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        _check_input("student", student_feat, self.student_shape)
        _check_input("teacher", teacher_feat, self.teacher_shape)
        return Fd.attention_transfer(student_feat, teacher_feat.detach(), self.p)


@FEATURES.register("merge")
class MergeTerm(nn.Module):
    """Layer merging: one student feature learns to predict several teacher layers at once.

    The fused target is built without gradient: each teacher feature is resized to the student's
    ``H×W`` (:func:`resize_map`), standardised per channel over batch and positions
    (``(t - mean) / sqrt(var + eps)``, so no layer dominates by its activation scale), and the results
    are concatenated on channels. The student feature is projected by a learned 1x1 convolution into
    that ``ΣC_k``-channel space and matched by MSE. The loss is the mean over teacher layers of each
    layer's MSE, so every layer counts equally whatever its width.

    Why the projection is on the student side: a learned projection of the *target* would be
    optimised by the same loss, and the cheapest way to lower it is to shrink the projected target
    towards zero (or any constant the student already outputs), a collapse that teaches nothing.
    Keeping the target fixed and standardised leaves improving the student as the only way down.

    Vectors are treated as ``1×1`` maps: a ``(D,)`` teacher feature is broadcast over the student's
    ``H×W`` (every position must carry the global descriptor), and a ``(D,)`` student feature makes
    every teacher map global-average-pooled to ``1×1``. The statistics are per batch, so use
    batches of more than a few samples (with one sample and ``1×1`` maps the target is all zeros).

    Args:
        student_shape: Student feature shape without batch, ``(C, H, W)`` or ``(D,)``.
        teacher_shapes: One shape per teacher layer, in the order ``forward`` receives them.
        eps: Added to the variance in the standardisation.
    """

    many_teachers = True

    def __init__(
        self,
        student_shape: Sequence[int],
        teacher_shapes: Sequence[Sequence[int]],
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.student_shape = _shape("student", student_shape)
        self.teacher_shapes = [_shape(f"teacher[{i}]", s) for i, s in enumerate(teacher_shapes)]
        if not self.teacher_shapes:
            raise ValueError("merge needs at least one teacher layer")
        self.size = self.student_shape[1:] if len(self.student_shape) == 3 else (1, 1)
        self.channels = [shape[0] for shape in self.teacher_shapes]
        self.eps = float(eps)
        self.adapter = nn.Conv2d(self.student_shape[0], sum(self.channels), 1)

    def fused_target(self, teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """The detached fused target ``[N, ΣC_k, H, W]`` (standardised, resized, concatenated)."""
        if len(teacher_feats) != len(self.teacher_shapes):
            raise ValueError(
                f"merge was built for {len(self.teacher_shapes)} teacher layers, "
                f"got {len(teacher_feats)} features"
            )
        parts = []
        with torch.no_grad():
            for i, (t, shape) in enumerate(zip(teacher_feats, self.teacher_shapes, strict=True)):
                _check_input(f"teacher[{i}]", t, shape)
                t = t.detach()
                if t.dim() == 2:
                    t = t[:, :, None, None].expand(-1, -1, *self.size)
                t = resize_map(t, self.size)
                mean = t.mean(dim=(0, 2, 3), keepdim=True)
                var = t.var(dim=(0, 2, 3), keepdim=True, unbiased=False)
                parts.append((t - mean) / torch.sqrt(var + self.eps))
        return torch.cat(parts, dim=1)

    def forward(self, student_feat: torch.Tensor, teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean over teacher layers of the MSE between the projected student and the fused target."""
        _check_input("student", student_feat, self.student_shape)
        if student_feat.dim() == 2:
            student_feat = student_feat[:, :, None, None]
        target = self.fused_target(teacher_feats)
        projected = self.adapter(student_feat)
        losses = [
            F.mse_loss(p, t)
            for p, t in zip(
                projected.split(self.channels, dim=1),
                target.split(self.channels, dim=1),
                strict=True,
            )
        ]
        return torch.stack(losses).mean()
