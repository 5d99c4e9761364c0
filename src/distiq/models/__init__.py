"""Model families by name, user models by import path, and forward hooks by module path.

Importing this package registers every built-in family (``mlp``, ``lenet5``, ``alexnet-small``,
``vgg-small``, ``resnet*``), so ``create`` never depends on which module happened to be imported.

Conventions later stages rely on: conv nets have ``features`` (convs, BN, ReLU, pools) and
``classifier`` (an ``nn.Sequential`` ending with the final ``nn.Linear``); MLPs have only
``classifier``, starting with ``nn.Flatten``. Every ReLU is its own non-inplace module, and every
model records ``config`` for :func:`create_from_config`.
"""

from distiq.models import alexnet, lenet, mlp, resnet, vgg  # noqa: F401  (registers the families)
from distiq.models.hooks import capture, feature_shapes, get_module, module_names
from distiq.models.zoo import (
    MODELS,
    count_parameters,
    create,
    create_from_config,
    names,
)

__all__ = [
    "MODELS",
    "capture",
    "count_parameters",
    "create",
    "create_from_config",
    "feature_shapes",
    "get_module",
    "module_names",
    "names",
]
