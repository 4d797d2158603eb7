"""Losses (``core.Loss``): ``loss, cache = L.forward(y, t)``, ``dy = L.backward(cache, dloss=1.0)``.

A loss is a scalar of ``y``'s dtype; ``t`` (the target) is data and gets no gradient.
Weight decay is not a loss here but a gradient transformation: ``optim.add_decayed_weights``.
"""

from __future__ import annotations

import math

import numpy as np

from ._arrays import idiv, is_concrete, namespace, row_reduce
from ._checks import check_finite, check_float, check_ndim
from .core import Loss


def _labels_to_targets(name: str, logits, t):
    """Validate ``t`` against ``(N, C)`` logits; return (is_integer_labels, t)."""
    n, c = logits.shape
    kind = np.dtype(t.dtype).kind
    if kind in "iu":
        if tuple(t.shape) != (n,):
            raise ValueError(
                f"{name}: integer labels must have shape ({n},) for logits {tuple(logits.shape)}, "
                f"got {tuple(t.shape)}"
            )
        # A JAX array a jitted function captured is concrete, but its min inside the trace
        # is not: the range is checked where that result is.
        lo, hi = (t.min(), t.max()) if is_concrete(t) and n else (None, None)
        if lo is not None and is_concrete(lo) and (int(lo) < 0 or int(hi) >= c):
            raise ValueError(
                f"{name}: labels must be in [0, {c - 1}] for {c} classes, got values in "
                f"[{int(lo)}, {int(hi)}]"
            )
        return True, t
    if kind == "f":
        if tuple(t.shape) != (n, c):
            raise ValueError(
                f"{name}: one-hot/probability targets must have the logits' shape "
                f"{tuple(logits.shape)}, got {tuple(t.shape)}"
            )
        check_finite(name, t, "targets")
        return False, t
    raise TypeError(f"{name}: targets must be integer labels or float one-hot, got {t.dtype}")


def _cross_entropy_forward(logits, t):
    """Mean softmax cross-entropy over the batch.

    L = −(1/N) Σ_n Σ_c t_nc · log softmax(z_n)_c with ``t`` integer labels (N,) or one-hot /
    probability rows (N, C).  ∂L/∂z = (softmax(z) − t) / N.
    """
    name = "softmax_cross_entropy"
    check_float(name, logits, "logits")
    check_ndim(name, logits, 2, "logits array (N, classes)")
    t = t if hasattr(t, "dtype") else np.asarray(t)
    integer, t = _labels_to_targets(name, logits, t)
    xp = namespace(logits, t)
    n = logits.shape[0]
    if n == 0:
        raise ValueError(f"{name}: empty batch (logits shape {tuple(logits.shape)})")
    # log-softmax by log-sum-exp: s ≤ 0 so exp(s) ≤ 1 never overflows, and log p = s − lse is
    # finite even where p underflows to 0 (no log(0) for logits of ±1e4).
    # Reductions as methods (np.sum's wrapper costs more than the sum of a small batch), and
    # across short rows through row_reduce.
    s = logits - row_reduce(logits, "max")
    e = xp.exp(s)
    total = row_reduce(e, "sum")
    lse = xp.log(total)
    if integer:  # −Σ_n log p_{n,t_n}: only the labels' entries of log p are needed
        # On JAX take_along_axis, not s[arange(n), t]: with the batch sharded over devices
        # the latter gathers the whole batch first (docs/scale.md).  On NumPy the fancy
        # index is the same gather without take_along_axis's Python wrapper (2x its cost).
        picked = s[np.arange(n), t] if xp is np else xp.take_along_axis(s, t[:, None], axis=1)
        loss = (lse.sum() - picked.sum()) / n
    else:
        loss = -(t.astype(s.dtype) * (s - lse)).sum() / n
    if is_concrete(loss) and not math.isfinite(loss):
        # Log-sum-exp keeps finite logits finite, so a NaN/inf loss means a NaN/inf logit:
        # checking the scalar costs nothing, scanning every logit on every step would.
        check_finite(name, logits, "logits")
    if loss.dtype != logits.dtype:
        loss = loss.astype(logits.dtype)
    return loss, (idiv(e, total), t)


def _cross_entropy_backward(cache, dloss=1.0):
    p, t = cache
    xp = namespace(p, t, dloss)
    n = p.shape[0]
    scale = dloss / n
    if t.ndim == 1:  # subtract at the labels, in a copy: no one-hot matrix
        d = p * scale
        if xp is np:
            d[np.arange(n), t] -= scale
            return d
        # A scatter, as jax.grad's own: with a one-hot matrix instead, XLA's CPU program
        # for a whole step ran up to 1.3x slower (benchmarks/dense.py).
        return d.at[xp.arange(n), t].add(-scale)
    return (p - t.astype(p.dtype)) * scale


softmax_cross_entropy = Loss(
    "softmax_cross_entropy", _cross_entropy_forward, _cross_entropy_backward
)


def _mse_forward(y, t):
    """Mean squared error over every element: L = (1/M) Σ (y − t)², M = y.size.

    ∂L/∂y = 2(y − t)/M (the true gradient, not the book's y − t).
    """
    name = "mean_squared_error"
    check_float(name, y, "prediction")
    t = t if hasattr(t, "dtype") else np.asarray(t)
    xp = namespace(y, t)
    if tuple(t.shape) != tuple(y.shape):
        raise ValueError(
            f"{name}: target shape {tuple(t.shape)} does not match prediction shape "
            f"{tuple(y.shape)} (no broadcasting)"
        )
    check_finite(name, y, "prediction")
    check_finite(name, t, "target")
    if y.size == 0:
        raise ValueError(f"{name}: empty prediction (shape {tuple(y.shape)})")
    d = y - t.astype(y.dtype)
    return (xp.sum(d * d) / d.size).astype(y.dtype), (d,)


def _mse_backward(cache, dloss=1.0):
    (d,) = cache
    return d * (2 * dloss / d.size)


mean_squared_error = Loss("mean_squared_error", _mse_forward, _mse_backward)


def time_softmax_cross_entropy_with(ignore_label: int = -1) -> Loss:
    """Softmax cross-entropy over every position of ``(N, T, V)`` logits with integer labels
    ``(N, T)`` (the book's ``TimeSoftmaxWithLoss``); positions labelled ``ignore_label`` add
    nothing to the loss or its gradient.

    With M = the number of other positions: L = −(1/M) Σ_{(n,t) kept} log softmax(z_nt)_{t_nt},
    ∂L/∂z_nt = (softmax(z_nt) − onehot(t_nt)) / M at a kept position, 0 at an ignored one.
    When every position is ignored L = 0 and so is the gradient.  Labels other than
    ``ignore_label`` must be in [0, V); checked when their values are known (not under jit).
    """
    name = "time_softmax_cross_entropy"

    def forward(logits, t):
        check_float(name, logits, "logits")
        t = t if hasattr(t, "dtype") else np.asarray(t)
        if np.dtype(t.dtype).kind not in "iu":
            raise TypeError(f"{name}: expected integer labels, got {t.dtype}")
        if logits.ndim < 2 or tuple(t.shape) != tuple(logits.shape[:-1]):
            raise ValueError(
                f"{name}: labels must have shape {tuple(logits.shape[:-1])} for logits "
                f"{tuple(logits.shape)} (N, T, classes), got {tuple(t.shape)}"
            )
        xp, v = namespace(logits, t), logits.shape[-1]
        z, labels = logits.reshape(-1, v), t.reshape(-1)
        keep = labels != ignore_label
        if is_concrete(labels) and labels.size:
            bad = keep & ((labels < 0) | (labels >= v))
            if is_concrete(bad) and bool(bad.any()):
                raise ValueError(
                    f"{name}: labels must be in [0, {v - 1}] or {ignore_label} (ignored), got "
                    f"{int(labels[bad][0])}"
                )
        safe = xp.where(keep, labels, 0)
        s = z - z.max(axis=1, keepdims=True)
        e = xp.exp(s)
        total = e.sum(axis=1, keepdims=True)
        picked = xp.take_along_axis(s, safe[:, None], axis=1)[:, 0]
        count = xp.maximum(keep.sum(), 1).astype(logits.dtype)
        loss = (xp.where(keep, xp.log(total[:, 0]) - picked, 0).sum() / count).astype(logits.dtype)
        if is_concrete(loss) and not math.isfinite(loss):
            check_finite(name, logits, "logits")
        return loss, (e / total, safe, keep, count, xp.zeros((*logits.shape[:-1], 0), logits.dtype))

    def backward(cache, dloss=1.0):
        p, safe, keep, count, shape = cache
        xp = namespace(p, dloss)
        rows = xp.arange(p.shape[0])
        d = p.at[rows, safe].add(-1) if xp is not np else p.copy()
        if xp is np:
            d[rows, safe] -= 1
        d = d * (keep[:, None] * (dloss / count)).astype(p.dtype)
        return d.reshape(*shape.shape[:-1], p.shape[-1])

    return Loss(name, forward, backward)


time_softmax_cross_entropy = time_softmax_cross_entropy_with(-1)


__all__ = [
    "Loss",
    "mean_squared_error",
    "softmax_cross_entropy",
    "time_softmax_cross_entropy",
    "time_softmax_cross_entropy_with",
]
