"""Which layer feeds which: a dataflow graph of a model, recorded from one forward pass.

Fusion (Conv -> BN -> ReLU), activation-quantizer placement and the deployability report all need to
know, for each layer, where its input came from and who reads its output. ``torch.fx`` answers that
only for models it can trace symbolically; this recorder works on any model that runs: forward hooks
on every module (keyed by module path, as everywhere in distiq) plus a ``TorchFunctionMode`` that
sees the functional ops written in a container's ``forward`` (``out + identity``, ``torch.flatten``).
Ops inside a leaf module (``F.conv2d`` inside ``nn.Conv2d``) are the leaf's own business and are not
recorded. Every tensor is kept alive during the pass, so Python ids identify values unambiguously.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

INPUT = -1  # producer index of the model's inputs
CONST = -2  # producer index of parameters, buffers and constants used by functional ops


@dataclass
class Node:
    """One recorded call.

    Attributes:
        kind: ``"module"`` (a leaf module's call) or ``"function"`` (a torch op in a container).
        target: The module path, or the op's name (``"add"``, ``"flatten"``, ``"__getitem__"``).
        owner: For functions, the path of the module whose ``forward`` called it.
        inputs: Value indices of the tensor arguments, in order.
        outputs: Value indices of the tensor results.
    """

    kind: str
    target: str
    owner: str = ""
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)


@dataclass
class Dataflow:
    """The recorded graph: nodes in execution order, and who produced and consumed each value.

    Attributes:
        nodes: Calls in execution order.
        producer: Value index -> node index (or :data:`INPUT` / :data:`CONST`).
        consumers: Value index -> indices of the nodes reading it.
        outputs: Value indices returned by the model.
        modules: Module path -> indices of its calls (a module called twice has two nodes).
    """

    nodes: list[Node]
    producer: dict[int, int]
    consumers: dict[int, list[int]]
    outputs: list[int]
    modules: dict[str, list[int]]

    def source(self, value: int) -> Node | None:
        """The node that produced ``value``, or ``None`` for model inputs and constants."""
        index = self.producer.get(value, CONST)
        return self.nodes[index] if index >= 0 else None

    def is_input(self, value: int) -> bool:
        """Whether ``value`` is one of the model's inputs."""
        return self.producer.get(value) == INPUT

    def readers(self, value: int) -> list[Node]:
        """Nodes that read ``value``."""
        return [self.nodes[i] for i in self.consumers.get(value, [])]

    def module_node(self, path: str) -> Node | None:
        """The (first) call of the module at ``path``; ``None`` if it never ran."""
        calls = self.modules.get(path)
        return self.nodes[calls[0]] if calls else None


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, list | tuple):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


class _Recorder(TorchFunctionMode):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.leaves = {name for name, m in model.named_modules() if not list(m.children())}
        self.stack: list[str] = []
        self.nodes: list[Node] = []
        self.ids: dict[int, int] = {}
        self.producer: dict[int, int] = {}
        self.keep: list[torch.Tensor] = []  # alive until the pass ends: ids stay unique

    def value(self, t: torch.Tensor, default_producer: int = CONST) -> int:
        key = id(t)
        if key not in self.ids:
            self.ids[key] = len(self.producer)
            self.keep.append(t)
            self.producer[self.ids[key]] = default_producer
        return self.ids[key]

    def add(self, node: Node, args: Any, result: Any) -> None:
        node.inputs = [self.value(t) for t in _tensors(args)]
        index = len(self.nodes)
        for t in _tensors(result):
            # A result that is an existing tensor (nn.Identity, an in-place op) is a new value from
            # here on: earlier readers saw the old one, later readers see this node's.
            self.ids.pop(id(t), None)
            v = self.value(t, index)
            node.outputs.append(v)
        self.nodes.append(node)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        owner = self.stack[-1] if self.stack else ""
        if self.stack and owner not in self.leaves and _tensors(result):
            name = getattr(func, "__name__", str(func))
            self.add(Node("function", name, owner), (args, kwargs or {}), result)
        return result


def trace(model: nn.Module, example_inputs: torch.Tensor | Iterable[torch.Tensor]) -> Dataflow:
    """Run ``model`` once on ``example_inputs`` (no gradients, mode unchanged) and record its dataflow.

    Args:
        model: Any module.
        example_inputs: A tensor or a tuple of tensors, the positional arguments of ``forward``.
    """
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    rec = _Recorder(model)
    handles = []

    def pre(path: str):
        def hook(module: nn.Module, args: Any) -> None:
            rec.stack.append(path)

        return hook

    def post(path: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            rec.stack.pop()
            if path in rec.leaves:
                rec.add(Node("module", path), args, output)

        return hook

    for path, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(pre(path)))
        handles.append(module.register_forward_hook(post(path)))
    try:
        for t in inputs:
            rec.value(t, INPUT)
        with torch.no_grad(), rec:
            result = model(*inputs)
        outputs = [rec.value(t) for t in _tensors(result)]
    finally:
        for h in handles:
            h.remove()
    consumers: dict[int, list[int]] = {}
    modules: dict[str, list[int]] = {}
    for i, node in enumerate(rec.nodes):
        for v in dict.fromkeys(node.inputs):
            consumers.setdefault(v, []).append(i)
        if node.kind == "module":
            modules.setdefault(node.target, []).append(i)
    return Dataflow(rec.nodes, dict(rec.producer), consumers, outputs, modules)
