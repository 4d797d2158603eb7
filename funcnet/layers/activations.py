"""Elementwise activations and the softmax layer, as functions (``relu``, ``sigmoid``,
``softmax``) and as layers.  Each keeps its input's shape and dtype."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._arrays import iadd, idiv, imul, namespace, zero_outside
from .._checks import check_dout, check_float, check_no_params
from ..core import Layer


def relu(x):
    """max(x, 0)."""
    return namespace(x).maximum(x, 0)


def sigmoid(x):
    """σ(x) = 1 / (1 + e^{−x}), evaluated without ever exponentiating a positive number.

    For x ≥ 0 it is 1/(1 + e^{−x}); for x < 0 the same value is e^{x}/(1 + e^{x}).  Both
    use e = e^{−|x|} ≤ 1, so σ(±1e3) is finite and raises no overflow warning.  One
    branch-free formula gives both: σ(x) = max(e, [x ≥ 0]) / (1 + e), since e ≤ 1.
    """
    xp = namespace(x)
    e = xp.exp(-xp.abs(x))
    numerator = xp.maximum(e, x >= 0)
    return idiv(numerator, iadd(e, 1))


def softmax(x, axis: int = -1):
    """softmax(x)_i = e^{x_i − max x} / Σ_j e^{x_j − max x}; the shift keeps e^{…} ≤ 1."""
    xp = namespace(x)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return idiv(e, xp.sum(e, axis=axis, keepdims=True))


def elementwise(name: str, fwd: Callable, bwd: Callable) -> Layer:
    """A parameter-free, shape-preserving layer on floating-point input.

    ``fwd(x) -> (out, cache)`` where ``cache`` is an array of ``out``'s shape (usually
    ``out`` itself), and ``bwd(cache, dout) -> dx``.
    """

    def init(rng, in_shape, dtype=np.float32):
        return tuple(in_shape), ()

    def forward(params, x, *, train=False, rng=None):
        check_no_params(name, params)
        check_float(name, x)
        return fwd(x)

    def backward(cache, dout, *, need_dx=True):
        check_dout(name, dout, cache.shape, cache.dtype)
        return (), (bwd(cache, dout) if need_dx else None)

    return Layer(name, init, forward, backward)


def Relu(*, name: str = "Relu") -> Layer:
    """y = max(x, 0); ∂L/∂x = ∂L/∂y · [x > 0] (0 at the kink, as in the book)."""

    def fwd(x):
        y = relu(x)
        return y, y

    def bwd(y, dout):
        return zero_outside(dout, y > 0)

    return elementwise(name, fwd, bwd)


def Sigmoid(*, name: str = "Sigmoid") -> Layer:
    """y = σ(x); ∂L/∂x = ∂L/∂y · y(1 − y)."""

    def fwd(x):
        y = sigmoid(x)
        return y, y

    def bwd(y, dout):
        return imul(imul(1 - y, y), dout)

    return elementwise(name, fwd, bwd)


def Tanh(*, name: str = "Tanh") -> Layer:
    """y = tanh(x); ∂L/∂x = ∂L/∂y · (1 − y²)."""

    def fwd(x):
        y = namespace(x).tanh(x)
        return y, y

    def bwd(y, dout):
        return imul(imul(1 - y, 1 + y), dout)  # 1 − y² without cancelling near |y| = 1

    return elementwise(name, fwd, bwd)


def Softmax(*, name: str = "Softmax") -> Layer:
    """y = softmax(x) over the last axis; ∂L/∂x = y ⊙ (∂L/∂y − Σ_j ∂L/∂y_j · y_j)."""

    def fwd(x):
        y = softmax(x)
        return y, y

    def bwd(y, dout):
        return imul(dout - namespace(dout).sum(dout * y, axis=-1, keepdims=True), y)

    return elementwise(name, fwd, bwd)


__all__ = [
    "Relu",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "elementwise",
    "relu",
    "sigmoid",
    "softmax",
]
