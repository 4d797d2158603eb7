"""Numerical differentiation and plain gradient descent (chapter 4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np


def _float_copy(leaf) -> np.ndarray:
    """A private float copy: integer input becomes float64, floats keep their precision."""
    a = np.array(leaf, copy=True)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    return a


def numerical_gradient(f: Callable[[Any], Any], x, h: float = 1e-4):
    """Central differences ∂f/∂x_i ≈ (f(x + h·e_i) − f(x − h·e_i)) / 2h for every element.

    ``x`` may be an array, a scalar or a pytree of them; the result has its structure.  The
    input is never modified (``f`` sees a private float copy), and the divisor is the step
    actually taken, (x_i + h) − (x_i − h), which is exact in floating point.
    """
    leaves, unflatten = _flatten(x)
    work = [_float_copy(leaf) for leaf in leaves]
    grads = []
    for leaf in work:
        flat = leaf.reshape(-1)  # a view: writing it perturbs the tree f sees
        g = np.empty_like(flat)
        for i in range(flat.size):
            xi = flat[i]
            flat[i] = xi + h
            fp = float(f(unflatten(work)))
            up = flat[i]
            flat[i] = xi - h
            fm = float(f(unflatten(work)))
            g[i] = (fp - fm) / (up - flat[i])
            flat[i] = xi
        grads.append(g.reshape(leaf.shape))
    return unflatten(grads)


def _flatten(x):
    """(leaves, unflatten): a single array needs no JAX; a pytree uses ``jax.tree_util``."""
    if isinstance(x, np.ndarray | np.generic | float | int):
        return [x], lambda leaves: leaves[0]
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(x)
    return leaves, treedef.unflatten


def _tree_map(fn, x, *rest):
    leaves, unflatten = _flatten(x)
    others = [_flatten(r)[0] for r in rest]
    return unflatten([fn(*args) for args in zip(leaves, *others, strict=True)])


class DescentPath(NamedTuple):
    """Every point visited (``points[0]`` is the start) and f at each of them."""

    points: list
    values: np.ndarray


def gradient_descent(
    f: Callable[[Any], Any],
    x0,
    lr: float = 0.01,
    steps: int = 100,
    grad: Callable[[Any], Any] | None = None,
):
    """x ← x − lr · ∇f(x), ``steps`` times; returns ``(x, DescentPath)``.

    ``grad`` defaults to the numerical gradient of ``f``; pass ``jax.grad(f)`` or any other
    function with the same structure.  ``x0`` may be an array or a pytree and is not modified.
    A step whose x or f(x) is not finite (a rate too large for ``f``: the steps grow until
    they overflow, or until h is below the spacing of x and the central difference is 0/0)
    raises ``FloatingPointError`` naming the step and the rate, instead of NumPy's warnings.
    """
    if steps < 0:
        raise ValueError(f"gradient_descent: steps must be >= 0, got {steps}")
    grad = grad or (lambda x: numerical_gradient(f, x))
    x = _tree_map(_float_copy, x0)
    points, values = [x], [float(f(x))]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # raised below
        for k in range(1, steps + 1):
            g = grad(x)
            x = _tree_map(lambda p, d: p - lr * np.asarray(d, dtype=p.dtype), x, g)
            points.append(x)
            values.append(float(f(x)))
            if not (np.isfinite(values[-1]) and all(np.isfinite(v).all() for v in _leaves(x))):
                raise FloatingPointError(_diverged(points, values, k, lr))
    return x, DescentPath(points, np.array(values))


def _leaves(x) -> list:
    return _flatten(x)[0]


def _diverged(points: list, values: list, step: int, lr: float) -> str:
    """The line for a descent that left the finite numbers at ``step``."""
    what = "f(x)" if all(np.isfinite(v).all() for v in _leaves(points[-1])) else "x"
    last = max(float(np.max(np.abs(v))) for v in _leaves(points[-2])) if step > 1 else None
    before = f" (max |x| {last:.3g} at step {step - 1})" if last is not None else ""
    return (
        f"gradient_descent: {what} is not finite after step {step}{before}: the descent "
        f"diverged at lr {lr}; try a smaller one"
    )


__all__ = ["DescentPath", "gradient_descent", "numerical_gradient"]
