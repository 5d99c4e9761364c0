"""``distiq.prune``: magnitude and channel pruning, gradual schedules, recovery, compressed storage.

``dq.prune(model, amount, ...)`` is the one-call entry point; ``dq.sparse.save`` / ``dq.sparse.load``
the compressed format. The pieces are public for finer control: masks (:mod:`.magnitude`), the
cubic schedule (:mod:`.schedule`), Torch-Pruning channel removal and pruned-model files
(:mod:`.structured`).
"""

from . import sparse_format as sparse
from .api import fine_tune, prune
from .magnitude import (
    attach_masks_,
    fold_masks_,
    magnitude_masks,
    prunable_layers,
    prune_magnitude_,
    sparsity_rich_table,
    sparsity_table,
)
from .schedule import CubicSchedule, cubic_sparsity, keep_masks
from .sharing import share_weights
from .structured import (
    IMPORTANCES,
    layer_shapes,
    load_pruned,
    prune_channels_,
    resize_to_shapes_,
    save_pruned,
)

__all__ = [
    "IMPORTANCES",
    "CubicSchedule",
    "attach_masks_",
    "cubic_sparsity",
    "fine_tune",
    "fold_masks_",
    "keep_masks",
    "layer_shapes",
    "load_pruned",
    "magnitude_masks",
    "prunable_layers",
    "prune",
    "prune_channels_",
    "prune_magnitude_",
    "resize_to_shapes_",
    "save_pruned",
    "share_weights",
    "sparse",
    "sparsity_rich_table",
    "sparsity_table",
]
