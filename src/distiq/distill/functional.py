"""Distillation losses as plain functions: the formula and the paper next to the code.

Why functions: the math is tested here against hand-worked numbers and peer implementations, and the
thin ``nn.Module`` wrappers (:mod:`distiq.distill.logits`, :mod:`distiq.distill.features`) only add
options, validation and the teacher's ``detach``. The functions themselves never detach the teacher,
so they also serve online/mutual distillation where both networks learn.

Conventions: logits are ``[N, K]`` (batch, classes); feature maps are ``[N, C, H, W]``; every loss
returns a scalar averaged over the batch unless its name says ``per_sample``. All KL terms are computed
from ``log_softmax``/``logsumexp`` so large logits neither overflow nor produce ``0 * log 0`` NaNs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _check_logits(student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "expected student and teacher logits of the same shape [batch, classes], got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )


def _check_target(logits: Tensor, target: Tensor) -> None:
    if target.shape != logits.shape[:1] or target.dtype != torch.long:
        raise ValueError(
            f"expected int64 targets of shape [{logits.shape[0]}], got {target.dtype} {tuple(target.shape)}"
        )


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def per_sample_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Per-sample KD: ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` summed over classes, shape ``[N]``.

    The ``T²`` factor (Hinton et al., 2015, "Distilling the Knowledge in a Neural Network") keeps
    the gradient magnitude, which scales as ``1/T²``, comparable across temperatures and to the
    cross-entropy term it is mixed with.
    """
    _check_logits(student_logits, teacher_logits)
    _check_temperature(temperature)
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return temperature**2 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)


def kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Knowledge distillation loss (Hinton et al., 2015).

    ``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, summed over classes, averaged over the
    batch. Zero when the logits agree up to a per-row constant. The gradient w.r.t. the student's
    logits is ``T · (softmax(s/T) - softmax(t/T)) / N``.

    Args:
        student_logits: ``[N, K]``.
        teacher_logits: ``[N, K]``; not detached here (callers distilling from a fixed teacher
            compute it under ``torch.no_grad``).
        temperature: ``T > 0``; higher values expose more of the teacher's "dark knowledge".

    Returns:
        Scalar tensor.
    """
    return per_sample_kd(student_logits, teacher_logits, temperature).mean()


def logit_mse(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean squared error between logits over all elements (Ba & Caruana, 2014, "Do Deep Nets
    Really Need to be Deep?").

    Matching logits directly is the high-temperature limit of KD (for zero-mean logits) and keeps
    information that the softmax discards.
    """
    _check_logits(student_logits, teacher_logits)
    return F.mse_loss(student_logits, teacher_logits)


def hard_sample_weights(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    gamma: float = 2.0,
    disagreement: float = 1.0,
    eps: float = 1e-8,
) -> Tensor:
    """Per-sample weights for :func:`hard_kd`, detached, with mean exactly 1 over the batch.

    ``r_i = (1 - p_s(y_i))^gamma + disagreement · [argmax s_i ≠ argmax t_i]`` and
    ``w_i = (r_i + eps) / (mean_j r_j + eps)``, where ``p_s(y_i)`` is the student's softmax
    probability of the true class at ``T = 1``.

    Why this form: the focal factor (Lin et al., 2017, "Focal Loss for Dense Object Detection")
    is near 0 for samples the student already gets confidently right and near 1 for the ones it
    gets wrong; the disagreement indicator adds weight where the student's decision still differs
    from the teacher's, which is what distillation is meant to fix, even when the label is
    ambiguous. The weights are detached so they select samples without creating a gradient that
    would push the student to change its confidence just to lower its own weight. Dividing by the
    batch mean keeps the loss on the scale of :func:`kd` (so the same ``alpha`` and learning rate
    work); ``eps`` only matters when every sample is easy, where it makes all weights 1.
    ``gamma = 0`` with ``disagreement = 0`` gives all weights 1, i.e. plain KD.
    """
    _check_logits(student_logits, teacher_logits)
    _check_target(student_logits, target)
    if gamma < 0 or disagreement < 0:
        raise ValueError(f"gamma and disagreement must be >= 0, got {gamma} and {disagreement}")
    with torch.no_grad():
        logits = student_logits.to(torch.promote_types(student_logits.dtype, torch.float32))
        p_true = F.softmax(logits, dim=1).gather(1, target.reshape(-1, 1)).squeeze(1)
        raw = (1.0 - p_true).clamp_min(0.0).pow(gamma)
        differs = student_logits.argmax(dim=1) != teacher_logits.argmax(dim=1)
        raw = raw + disagreement * differs.to(raw.dtype)
        return ((raw + eps) / (raw.mean() + eps)).to(student_logits.dtype)


def hard_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    temperature: float = 4.0,
    gamma: float = 2.0,
    disagreement: float = 1.0,
) -> Tensor:
    """Hard-sample-weighted KD: ``mean_i w_i · KD_i``.

    ``KD_i`` is :func:`per_sample_kd` (``T²``-scaled KL at temperature ``T``) and ``w_i`` the
    detached, mean-one weights of :func:`hard_sample_weights`: focal weight on the student's
    true-class probability at ``T = 1`` plus ``disagreement`` where student and teacher predict
    different classes. Spends the distillation budget on samples the student has not learned yet.

    Args:
        student_logits: ``[N, K]``.
        teacher_logits: ``[N, K]``.
        target: ``[N]`` int64 true labels.
        temperature: ``T > 0`` of the KL term.
        gamma: Focal exponent; larger concentrates weight on the hardest samples.
        disagreement: Extra weight where ``argmax`` of student and teacher differ.

    Returns:
        Scalar tensor, equal to :func:`kd` when all weights are equal.
    """
    weights = hard_sample_weights(student_logits, teacher_logits, target, gamma, disagreement)
    return (weights * per_sample_kd(student_logits, teacher_logits, temperature)).mean()


def dkd_parts(
    student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float = 4.0
) -> tuple[Tensor, Tensor]:
    """Per-sample ``(TCKD, NCKD)`` of Decoupled KD, each ``T²``-scaled, shapes ``[N]``.

    With ``b = (p_y, 1 - p_y)`` the binary target/non-target probabilities and ``p̂`` the
    distribution over non-target classes renormalised to sum to one (all at temperature ``T``):
    ``TCKD = T² · KL(b_teacher ‖ b_student)`` and ``NCKD = T² · KL(p̂_teacher ‖ p̂_student)``.
    They satisfy ``KD = TCKD + (1 - p_y,teacher) · NCKD`` (Zhao et al., 2022, eq. 3).

    Computed in log space: ``log(1 - p_y) = logsumexp(non-target) - logsumexp(all)``, and the
    non-target distribution is a softmax over the other classes only, which is what the reference
    code approximates by subtracting 1000 from the target logit, without relying on that constant
    exceeding the logits' range.
    """
    _check_logits(student_logits, teacher_logits)
    _check_target(student_logits, target)
    _check_temperature(temperature)
    if student_logits.shape[1] < 2:
        raise ValueError("DKD needs at least 2 classes")
    gt = F.one_hot(target, student_logits.shape[1]).bool()

    def log_parts(logits: Tensor) -> tuple[Tensor, Tensor]:
        z = logits / temperature
        lse_all = torch.logsumexp(z, dim=1)
        lse_other = torch.logsumexp(z.masked_fill(gt, float("-inf")), dim=1)
        z_y = z.gather(1, target.reshape(-1, 1)).squeeze(1)
        log_b = torch.stack([z_y - lse_all, lse_other - lse_all], dim=1)  # [N, 2]
        log_other = z - lse_other.unsqueeze(1)  # finite everywhere; target column masked below
        return log_b, log_other

    log_b_s, log_o_s = log_parts(student_logits)
    log_b_t, log_o_t = log_parts(teacher_logits)
    tckd = (log_b_t.exp() * (log_b_t - log_b_s)).sum(dim=1)
    q_t = log_o_t.exp().masked_fill(gt, 0.0)
    nckd = (q_t * (log_o_t - log_o_s)).sum(dim=1)
    return temperature**2 * tckd, temperature**2 * nckd


def dkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    """Decoupled Knowledge Distillation: ``alpha·TCKD + beta·NCKD`` (Zhao et al., CVPR 2022).

    Classical KD weights the non-target term by ``1 - p_y,teacher``, which is small exactly when
    the teacher is confident, suppressing the dark knowledge; DKD gives each part its own weight.
    See :func:`dkd_parts` for the two terms. Each is ``T²``-scaled, summed over classes and averaged
    over the batch. The paper's defaults are ``alpha = 1``, ``beta = 8`` (CIFAR-100).

    Args:
        student_logits: ``[N, K]`` with ``K >= 2``.
        teacher_logits: ``[N, K]``.
        target: ``[N]`` int64 true labels.
        alpha: Weight of the target-class term.
        beta: Weight of the non-target term.
        temperature: ``T > 0``.

    Returns:
        Scalar tensor.
    """
    tckd, nckd = dkd_parts(student_logits, teacher_logits, target, temperature)
    return alpha * tckd.mean() + beta * nckd.mean()


def hint_mse(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """FitNets hint loss (Romero et al., 2015): mean squared error over all elements.

    Shapes must already agree; :class:`distiq.distill.features.HintTerm` adds the learned adapter
    that makes them agree.
    """
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(
            f"hint_mse needs equal shapes, got {tuple(student_feat.shape)} and {tuple(teacher_feat.shape)}"
        )
    return F.mse_loss(student_feat, teacher_feat)


def attention_map(
    feat: Tensor, p: float = 2.0, size: tuple[int, int] | None = None, eps: float = 1e-12
) -> Tensor:
    """Spatial attention map ``Q = mean_c |f_c|^p``, flattened and L2-normalised, shape ``[N, H·W]``.

    Zagoruyko & Komodakis, 2017, "Paying More Attention to Attention". Channel-averaging makes maps
    of layers with different widths comparable; normalising removes their scale, so only *where*
    the network responds is transferred.

    Args:
        feat: ``[N, C, H, W]``.
        p: Exponent; 2 is the paper's choice.
        size: If given, the raw map is resized to ``(H', W')`` (bilinear, ``align_corners=False``)
            *before* normalisation, so the result has unit norm at the new size.
        eps: Guards the division for an all-zero map.
    """
    if feat.dim() != 4:
        raise ValueError(f"attention_map needs [N, C, H, W] features, got {tuple(feat.shape)}")
    q = feat.abs().pow(p).mean(dim=1, keepdim=True)
    if size is not None and tuple(q.shape[-2:]) != tuple(size):
        q = F.interpolate(q, size=tuple(size), mode="bilinear", align_corners=False)
    return F.normalize(q.flatten(1), p=2.0, dim=1, eps=eps)


def attention_transfer(student_feat: Tensor, teacher_feat: Tensor, p: float = 2.0) -> Tensor:
    """Attention transfer loss: ``mean_n ‖Q_s/‖Q_s‖ - Q_t/‖Q_t‖‖²``.

    The squared distance is *summed* over spatial positions and averaged over the batch, so the value
    lies in ``[0, 2]`` whatever the map size. (The authors' code averages over positions instead and
    compensates with a weight of ~1000; here a weight near 1 is the right order.) If the spatial
    sizes differ, the student's raw map is resized to the teacher's before normalisation.
    Channel counts may differ.
    """
    if student_feat.dim() != 4 or teacher_feat.dim() != 4:
        raise ValueError(
            "attention transfer needs [N, C, H, W] features, got "
            f"{tuple(student_feat.shape)} and {tuple(teacher_feat.shape)}"
        )
    q_t = attention_map(teacher_feat, p)
    q_s = attention_map(student_feat, p, size=tuple(teacher_feat.shape[-2:]))
    return (q_s - q_t).pow(2).sum(dim=1).mean()
