"""Quantization-aware training: fine-tune a calibrated model through its fake quantizers.

Post-training quantization leaves the weights where float training put them; at 4 bits the rounding
error of a few sensitive channels can cost many points. QAT keeps training with the quantizers in the
forward pass, so the weights move to where their rounded values work, while LSQ (Esser et al., 2020)
learns each grid's step size by gradient descent (:func:`distiq.quant.fake_quant.lsq_fake_quantize`),
starting from the calibrated one. It runs through the one training loop (:func:`distiq.engine.train`)
and, given a teacher (by default the float model itself), minimises the distillation objective of
:mod:`distiq.distill` — the float network's soft outputs carry more signal per sample than the labels,
which matters because QAT usually fine-tunes briefly on a subset.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from distiq.data.arrays import as_arrays
from distiq.distill.logits import make_logit_loss
from distiq.distill.objective import DistillObjective
from distiq.engine.train import TrainResult, train

from .modules import ActQuant, quantizers, set_state


def qat_(
    qmodel: nn.Module,
    train_data: Dataset,
    val_data: Dataset | None = None,
    *,
    teacher: nn.Module | None = None,
    loss: str = "kd",
    temperature: float = 4.0,
    alpha: float = 0.5,
    learn_scales: bool = True,
    **train_options: Any,
) -> TrainResult:
    """Fine-tune a calibrated simulated-quantized model in place.

    Args:
        qmodel: Output of static (or weight-only) preparation and calibration.
        train_data: Labelled samples ``(x, y)``.
        val_data: Validation samples (best-epoch restore, early stopping).
        teacher: Float model to distil from (copied, never trained); ``None`` trains on labels only.
        loss: Registered logit distillation loss.
        temperature: Softening temperature of the loss.
        alpha: Weight of the distillation term; ``1 - alpha`` weights cross-entropy.
        learn_scales: Learn each grid's scale with LSQ; otherwise scales stay as calibrated.
        **train_options: :class:`distiq.engine.TrainConfig` fields (``QuantizeSpec.qat`` gives them).

    Returns:
        The training result; learned scales are written back into the quantizers' buffers.
    """
    train_set = as_arrays(train_data)
    for _, q in quantizers(qmodel):
        tied_or_dynamic = isinstance(q, ActQuant) and (q._source or q.dynamic)
        if learn_scales and not tied_or_dynamic and q.enabled:
            q.make_learnable()
    set_state(qmodel, "quant")
    objective = None
    if teacher is not None:
        teacher = copy.deepcopy(teacher).eval()
        logit_loss = make_logit_loss(loss, temperature=temperature)
        objective = DistillObjective(qmodel, teacher, logit_loss, alpha, [], train_set.x[:2])
    try:
        result = train(qmodel, train_set, val_data, objective=objective, **train_options)
    finally:
        with torch.no_grad():
            for _, q in quantizers(qmodel):
                q.freeze()
        qmodel.eval()
    return result
