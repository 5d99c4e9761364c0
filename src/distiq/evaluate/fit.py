"""Whether a model fits a dataset: it takes the data's images and predicts the data's classes.

Why one sample through the model rather than reading its config: a forward pass is the only check
that holds for every kind of model (a module from any factory, an ONNX file nobody here wrote), and it
catches both mismatches a user makes by passing the wrong file. Without it a 3-class model evaluated
on 10-class data scored 27.9% with exit 0, and a model made for 28x28 images ended in a shape
``RuntimeError`` deep inside the forward pass.
"""

from __future__ import annotations

import os

from torch import nn
from torch.utils.data import Dataset

from distiq.data.arrays import as_arrays
from distiq.errors import DataError, DistiqError

from .api import Model, logits_fn


def check_fits(model: Model, data: Dataset, source: str | os.PathLike[str] | None = None) -> None:
    """Refuse ``model`` (a module or an ``.onnx`` path) unless it runs on ``data``'s images and
    outputs one logit per class of ``data``.

    Args:
        model: The model the user named.
        data: The data it is about to be evaluated, distilled from or quantized on.
        source: What to call the model in the message (its file); default: the path, or "model".

    Raises:
        DataError: One line naming ``source``, what the model takes or outputs, and what the data has.
    """
    data = as_arrays(data)
    if not len(data):
        return
    name = str(source if source is not None else model if not isinstance(model, nn.Module) else "model")
    sample = data.subset([0])
    try:
        out = logits_fn(model, batch_size=1)(sample)
    except DistiqError:  # the ONNX runner's own one line, naming the file and its input shape
        raise
    except (RuntimeError, ValueError) as e:  # torch's shape errors
        raise DataError(
            f"{name}: the model{_takes(model)} cannot run on the data's images {list(data.input_shape)} "
            f"({' '.join(str(e).split())})"
        ) from None
    if out.ndim != 2 or out.shape[0] != 1:
        raise DataError(f"{name}: the model outputs shape {list(out.shape)} per image; expected [1, classes]")
    if out.shape[1] != data.num_classes:
        raise DataError(
            f"{name}: the model predicts {out.shape[1]} classes but the data ({data.name}) has "
            f"{data.num_classes}; use a model made for this data"
        )


def _takes(model: Model) -> str:
    """`` (made for [C, H, W])`` from a distiq module's config, or nothing when it has none."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or not {"in_channels", "image_size"} <= config.keys():
        return ""
    size = config["image_size"]
    hw = [size, size] if isinstance(size, int) else list(size) if isinstance(size, list | tuple) else []
    return f" (made for images {[config['in_channels'], *hw]})" if len(hw) == 2 else ""
