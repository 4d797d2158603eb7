"""funcnet: neural networks from scratch as pure functions, every gradient checked against JAX.

import funcnet as fn
net = fn.pipeline(fn.Dense(100), fn.Relu(), fn.Dense(10))
out_shape, params = net.init(0, (-1, 784))
logits, cache = net.forward(params, x)
loss, lcache = fn.softmax_cross_entropy.forward(logits, t)
dparams, dx = net.backward(cache, fn.softmax_cross_entropy.backward(lcache))

The protocol, the layers and the losses are here at the top; the rest are submodules,
loaded on first use (``fn.optim``, ``fn.train``, ``fn.models``, ``fn.data``, ...), so that
``import funcnet`` imports NumPy and nothing heavier.
"""

from __future__ import annotations

import importlib

# _starting first: in the funcnet command, a Ctrl-C while the rest is imported is one line
from . import _starting, layers  # noqa: F401
from ._arrays import namespace, split_rng
from .core import (
    STATE,
    Aux,
    Layer,
    Loss,
    StateUpdate,
    concat,
    pipeline,
    residual,
    to_jax,
    trainable,
    update_state,
    with_trainable,
)
from .graph import Node, add, mul
from .layers import *  # noqa: F403  (the export list to edit is layers.__all__)
from .losses import mean_squared_error, softmax_cross_entropy
from .numerical import gradient_descent, numerical_gradient

__version__ = "0.1.0"

# Submodules, and names of submodules, that are imported on first use (PEP 562).
_SUBMODULES = (
    "augment",
    "checkpoints",
    "concat",
    "data",
    "experiments",
    "gpt",
    "gradcheck",
    "initializers",
    "models",
    "optim",
    "plot",
    "profile",
    "parallel",
    "seq2seq",
    "shakespeare",
    "tasks",
    "text",
    "train",
)
_LAZY_NAMES = {
    "GradcheckError": "gradcheck",
    "check_layer": "gradcheck",
    "check_loss": "gradcheck",
    "check_vjp": "gradcheck",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'funcnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "STATE",
    "Aux",
    "GradcheckError",
    "Layer",
    "Loss",
    "Node",
    "StateUpdate",
    "add",
    "augment",
    "check_layer",
    "check_loss",
    "check_vjp",
    "checkpoints",
    "concat",
    "data",
    "experiments",
    "gradcheck",
    "gpt",
    "gradient_descent",
    "initializers",
    "layers",
    "mean_squared_error",
    "models",
    "mul",
    "namespace",
    "numerical_gradient",
    "optim",
    "pipeline",
    "plot",
    "profile",
    "residual",
    "parallel",
    "shakespeare",
    "softmax_cross_entropy",
    "split_rng",
    "tasks",
    "to_jax",
    "train",
    "trainable",
    "update_state",
    "with_trainable",
    *layers.__all__,
]
