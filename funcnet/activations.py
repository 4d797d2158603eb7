"""Elementwise activations and the softmax layer. Each keeps its input's shape and dtype."""

from __future__ import annotations

from .core import Layer, namespace, stateless


def relu_fn(x):
    """max(x, 0)."""
    return namespace(x).maximum(x, 0)


def sigmoid_fn(x):
    """σ(x) = 1 / (1 + e^{−x}), evaluated without ever exponentiating a positive number.

    For x ≥ 0 it is 1/(1 + e^{−x}); for x < 0 the same value is e^{x}/(1 + e^{x}).  Both
    use e^{−|x|} ≤ 1, so σ(±1e3) is finite and raises no overflow warning.
    """
    xp = namespace(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def softmax_fn(x, axis: int = -1):
    """softmax(x)_i = e^{x_i − max x} / Σ_j e^{x_j − max x}; the shift keeps e^{…} ≤ 1."""
    xp = namespace(x)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def Relu(*, name: str = "Relu") -> Layer:
    """y = max(x, 0); ∂L/∂x = ∂L/∂y · [x > 0] (0 at the kink, as in the book)."""

    def fwd(x):
        y = relu_fn(x)
        return y, y

    def bwd(y, dout):
        return namespace(dout).where(y > 0, dout, 0)

    return stateless(name, fwd, bwd)


def Sigmoid(*, name: str = "Sigmoid") -> Layer:
    """y = σ(x); ∂L/∂x = ∂L/∂y · y(1 − y)."""

    def fwd(x):
        y = sigmoid_fn(x)
        return y, y

    def bwd(y, dout):
        return dout * y * (1 - y)

    return stateless(name, fwd, bwd)


def Tanh(*, name: str = "Tanh") -> Layer:
    """y = tanh(x); ∂L/∂x = ∂L/∂y · (1 − y²)."""

    def fwd(x):
        y = namespace(x).tanh(x)
        return y, y

    def bwd(y, dout):
        return dout * (1 - y * y)

    return stateless(name, fwd, bwd)


def Softmax(*, name: str = "Softmax") -> Layer:
    """y = softmax(x) over the last axis; ∂L/∂x = y ⊙ (∂L/∂y − Σ_j ∂L/∂y_j · y_j)."""

    def fwd(x):
        y = softmax_fn(x)
        return y, y

    def bwd(y, dout):
        return y * (dout - namespace(dout).sum(dout * y, axis=-1, keepdims=True))

    return stateless(name, fwd, bwd)
