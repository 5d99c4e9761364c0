"""The training engine: one loop, its config, checkpoints, weights files and progress."""

from .batches import iterate_batches, predict_logits
from .config import TrainConfig
from .objective import Objective
from .train import TrainResult, train
from .weights import load_model, load_weights, read_config, save_weights

__all__ = [
    "Objective",
    "TrainConfig",
    "TrainResult",
    "iterate_batches",
    "load_model",
    "load_weights",
    "predict_logits",
    "read_config",
    "save_weights",
    "train",
]
