"""Scoring: predictions, accuracy, and the metrics ``fit`` records every epoch.

A metric is any function ``metric(net, params, x, t) -> float`` of a whole data set:
``accuracy`` (the default), or e.g. a sequence model's exact-match accuracy or a language
model's perplexity.  ``fit(..., metrics={"name": metric, ...})`` records each one on the
training and test sets after every epoch, with a net whose eval forward is compiled once
for the whole run when the params are JAX arrays (``scoring_net``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import optim
from .._arrays import tree_namespace
from ..core import Layer, trainable, with_trainable

Metric = Callable[[Layer, Any, Any, Any], float]  # (net, params, x, t) -> float


class _CompiledEval:
    """An eval-mode ``forward`` compiled once with ``jax.jit``.  It returns no cache: a net
    that scores is never differentiated."""

    def __init__(self, net: Layer):
        import jax

        self.outputs = jax.jit(lambda p, xb: net.forward(p, xb)[0])
        self.name = net.name

    def __call__(self, params, x, *, train=False, rng=None):
        if train:
            raise ValueError(
                f"{self.name}: this copy of the net only scores (eval mode); train the net itself"
            )
        return self.outputs(params, x), None


def scoring_net(net: Layer, params) -> Layer:
    """``net`` for scoring ``params`` many times: for JAX params its eval forward compiled
    once (``jax.jit``), so that every later ``predict``/``accuracy``/metric call with it
    reuses one program; for NumPy params ``net`` itself."""
    if tree_namespace(params) is np or isinstance(net.forward, _CompiledEval):
        return net
    return net._replace(forward=_CompiledEval(net))


def _outputs(net: Layer, params) -> Callable:
    """``f(params, xb) -> eval-mode outputs``: jitted when ``params`` are JAX arrays."""
    if isinstance(net.forward, _CompiledEval):
        return net.forward.outputs
    if tree_namespace(params) is np:
        return lambda p, xb: net.forward(p, xb)[0]
    return scoring_net(net, params).forward.outputs


def predict(net: Layer, params, x, batch_size: int = 1000) -> np.ndarray:
    """Class predictions (argmax of the eval-mode outputs), in batches of ``batch_size``;
    jitted when ``params`` are JAX arrays (compiled once per call, or once per
    ``scoring_net``)."""
    return _predictions(net, params, x, batch_size)[0]


def _predictions(net: Layer, params, x, batch_size: int) -> tuple[np.ndarray, int]:
    """(class predictions, the number of outputs per example: 0 for no ``x``)."""
    forward = _outputs(net, params)
    preds, classes = [], 0
    for i in range(0, len(x), batch_size):
        out = np.asarray(forward(params, x[i : i + batch_size]))
        preds.append(out.argmax(axis=-1))
        classes = out.shape[-1]
    return (np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)), classes


def probabilities(net: Layer, params, x, batch_size: int = 1000) -> np.ndarray:
    """softmax of the eval-mode outputs, (N, classes), in batches of ``batch_size``: what
    an ensemble averages."""
    from ..layers.activations import softmax

    forward = _outputs(net, params)
    parts = [
        softmax(np.asarray(forward(params, x[i : i + batch_size]), dtype=np.float64))
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def accuracy(net: Layer, params, x, t, batch_size: int = 1000) -> float:
    """Fraction of ``x`` classified as ``t`` (integer labels or one-hot rows):
    mean(argmax net(x) = t).  Targets of any other kind (a regression's) are refused: an
    argmax over one output is always 0, and every example would count as right."""
    t = np.asarray(t)
    preds, classes = _predictions(net, params, x, batch_size)
    outputs = (*preds.shape, classes)
    if problem := accuracy_problem(outputs, t):
        raise ValueError(f"accuracy: {problem}")
    labels = t.argmax(axis=-1) if t.shape == outputs else t
    return float(np.mean(preds == labels))


def accuracy_problem(outputs: tuple[int, ...], t) -> str | None:
    """Why :func:`accuracy` means nothing for a net with outputs of shape ``outputs`` (the
    classes on the last axis) and targets ``t``; None when ``t`` holds class labels (one
    integer per output row) or one-hot rows of the outputs' shape."""
    outputs, shape = tuple(outputs), tuple(np.shape(t))
    kind = np.asarray(t).dtype.kind
    if outputs[-1:] == (1,):
        return (
            f"the net has 1 output per example, whose argmax is always 0 (every example "
            f"would count as right); accuracy needs one output per class (targets "
            f"{shape}): pass metrics={{}} or a metric of your own for a regression"
        )
    if shape == outputs[:-1] and kind in "iu":
        return None
    if shape == outputs:
        t = np.asarray(t)
        if ((t == 0) | (t == 1)).all() and (t.sum(axis=-1) == 1).all():
            return None
        return (
            f"targets of the outputs' shape {shape} are not one-hot rows (a regression's?): "
            "accuracy needs class labels or one-hot targets; pass metrics={} or a metric "
            "of your own"
        )
    return (
        f"targets of shape {shape} ({np.asarray(t).dtype}) are neither integer labels of "
        f"shape {outputs[:-1]} nor one-hot rows of shape {outputs}"
    )


def check_metrics(metrics: Mapping[str, Metric]) -> dict[str, Metric]:
    """``metrics`` as a dict of names to functions, or a ValueError naming what is wrong."""
    if not isinstance(metrics, Mapping):
        raise ValueError(
            f"fit: metrics must map names to functions (net, params, x, t) -> float, got "
            f"{type(metrics).__name__}"
        )
    for name, metric in metrics.items():
        if not isinstance(name, str) or not callable(metric):
            raise ValueError(
                f"fit: metrics must map names (str) to functions (net, params, x, t) -> float; "
                f"got {name!r}: {metric!r}"
            )
    return dict(metrics)


def evaluate(metrics: Mapping[str, Metric], net: Layer, params, x, t) -> dict[str, float]:
    """Every metric of ``params`` on the data set (x, t), as floats, by name."""
    return {name: float(metric(net, params, x, t)) for name, metric in metrics.items()}


def scored_params(params, opt_state):
    """The params ``fit`` scores: the moving average when the optimizer keeps one
    (``optim.with_average``), else ``params``; running state from ``params`` either way."""
    return with_trainable(params, optim.averaged(opt_state, trainable(params)))


__all__ = [
    "Metric",
    "accuracy",
    "accuracy_problem",
    "check_metrics",
    "evaluate",
    "predict",
    "probabilities",
    "scored_params",
    "scoring_net",
]
