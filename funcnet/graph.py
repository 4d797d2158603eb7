"""Computational-graph nodes of chapter 5: ``mul`` and ``add`` as pure forward/backward pairs.

``out, cache = mul.forward(x, y)``; ``dx, dy = mul.backward(cache, dout)``.  Inputs may be
Python scalars or arrays of broadcastable shapes; each gradient is summed back over the axes
its input was broadcast along, so it always has its input's shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ._arrays import namespace


class Node(NamedTuple):
    """A node of a computational graph: ``forward(x, y) -> (z, cache)`` and
    ``backward(cache, dz) -> (dx, dy)``."""

    name: str
    forward: Callable
    backward: Callable

    def __repr__(self) -> str:
        return self.name


def unbroadcast(g, shape):
    """Sum ``g`` over the axes that broadcasting added or stretched to reach ``g.shape``."""
    shape = tuple(shape)
    gshape = tuple(np.shape(g))
    if gshape == shape:
        return g
    xp = namespace(g)
    extra = len(gshape) - len(shape)
    g = xp.sum(g, axis=tuple(range(extra))) if extra else g
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if stretched:
        g = xp.sum(g, axis=stretched, keepdims=True)
    return g[()] if shape == () and hasattr(g, "ndim") and g.ndim == 0 else g


def _mul_forward(x, y):
    """z = x·y."""
    return x * y, (x, y)


def _mul_backward(cache, dout):
    """∂L/∂x = ∂L/∂z · y, ∂L/∂y = ∂L/∂z · x (the inputs swap)."""
    x, y = cache
    return unbroadcast(dout * y, np.shape(x)), unbroadcast(dout * x, np.shape(y))


def _add_forward(x, y):
    """z = x + y."""
    return x + y, (np.shape(x), np.shape(y))


def _add_backward(cache, dout):
    """∂L/∂x = ∂L/∂y = ∂L/∂z (passed through unchanged)."""
    sx, sy = cache
    return unbroadcast(dout, sx), unbroadcast(dout, sy)


mul = Node("mul", _mul_forward, _mul_backward)
add = Node("add", _add_forward, _add_backward)


__all__ = [
    "Node",
    "add",
    "mul",
    "unbroadcast",
]
