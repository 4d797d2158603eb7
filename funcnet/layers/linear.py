"""Affine layers: ``MatMul`` (x·W), ``Bias`` (x + b), ``Dense`` (x·W + b) and ``Flatten``.

All act on the last axis of an ``(N, ..., in)`` input, so leading axes are batch axes.
"""

from __future__ import annotations

import math

import numpy as np

from .. import initializers
from .._arrays import iadd, split_rng
from .._checks import check_dout, check_dtype, shape_str
from ..core import Layer


def _check_features(name: str, x, W_or_b, axis_size: int) -> None:
    check_dtype(name, x, W_or_b.dtype)
    if x.ndim < 2:
        raise ValueError(
            f"{name}: expected an input of shape (N, ..., {axis_size}) with a batch axis, "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[-1] != axis_size:
        raise ValueError(
            f"{name}: expected input shape (N, ..., {axis_size}), got {tuple(x.shape)} "
            f"(last axis {x.shape[-1]} != {axis_size})"
        )


def _unpack(name: str, params, *keys: str):
    """The arrays under ``keys``, or a ValueError naming the layer when the params dict has
    other keys (a missing one would be a bare KeyError, an extra one silently ignored)."""
    if isinstance(params, dict) and len(params) == len(keys):
        try:
            return [params[k] for k in keys]
        except KeyError:
            pass
    got = sorted(params) if isinstance(params, dict) else type(params).__name__
    raise ValueError(f"{name}: expected params with keys {sorted(keys)}, got {got}")


def _in_features(name: str, in_shape) -> int:
    if len(in_shape) < 2 or in_shape[-1] < 1:
        raise ValueError(
            f"{name}: expected an input shape (N, ..., features), got {shape_str(in_shape)}"
        )
    return int(in_shape[-1])


def _matmul_backward(x, W, dout, need_dx: bool):
    """dW = xᵀ·dout over all batch axes; dx = dout·Wᵀ (skipped when not needed)."""
    x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])
    d2 = dout if dout.ndim == 2 else dout.reshape(-1, dout.shape[-1])
    dW = x2.T @ d2
    dx = dout @ W.T if need_dx else None
    return dW, dx


def _bias_backward(dout):
    """db = Σ dout over every batch axis."""
    return (dout if dout.ndim == 2 else dout.reshape(-1, dout.shape[-1])).sum(axis=0)


def MatMul(out_features: int, *, W_init="he_normal", name: str | None = None) -> Layer:
    """y = x·W (no bias). ∂L/∂W = xᵀ·∂L/∂y, ∂L/∂x = ∂L/∂y·Wᵀ."""
    name = name or f"MatMul({out_features})"
    w_init = initializers.get(W_init)

    def init(rng, in_shape, dtype=np.float32):
        n_in = _in_features(name, in_shape)
        return (*tuple(in_shape)[:-1], out_features), {
            "W": w_init(rng, (n_in, out_features), dtype)
        }

    def forward(params, x, *, train=False, rng=None):
        (W,) = _unpack(name, params, "W")
        _check_features(name, x, W, W.shape[0])
        return x @ W, (x, W)

    def backward(cache, dout, *, need_dx=True):
        x, W = cache
        check_dout(name, dout, (*x.shape[:-1], W.shape[1]), x.dtype)
        dW, dx = _matmul_backward(x, W, dout, need_dx)
        return {"W": dW}, dx

    return Layer(name, init, forward, backward)


def Bias(*, b_init=initializers.zeros, name: str = "Bias") -> Layer:
    """y = x + b (b broadcast over the batch axes only). ∂L/∂b = Σ_batch ∂L/∂y, ∂L/∂x = ∂L/∂y."""
    b_init = initializers.get(b_init)

    def init(rng, in_shape, dtype=np.float32):
        n = _in_features(name, in_shape)
        return tuple(in_shape), {"b": b_init(rng, (n,), dtype, fan_in=n, fan_out=n)}

    def forward(params, x, *, train=False, rng=None):
        (b,) = _unpack(name, params, "b")
        _check_features(name, x, b, b.shape[0])
        # x is cached only for dout's expected shape and dtype; a reference costs nothing.
        return x + b, (x,)

    def backward(cache, dout, *, need_dx=True):
        (x,) = cache
        check_dout(name, dout, x.shape, x.dtype)
        return {"b": _bias_backward(dout)}, (dout if need_dx else None)

    return Layer(name, init, forward, backward)


def Dense(
    out_features: int,
    *,
    W_init="he_normal",
    b_init=initializers.zeros,
    name: str | None = None,
) -> Layer:
    """Affine layer y = x·W + b (the book's ``Affine``).

    ∂L/∂W = xᵀ·∂L/∂y, ∂L/∂b = Σ_batch ∂L/∂y, ∂L/∂x = ∂L/∂y·Wᵀ.
    ``W_init`` is an initializer, a float std (``0.01`` is the book's) or a name.
    """
    name = name or f"Dense({out_features})"
    w_init, b_init = initializers.get(W_init), initializers.get(b_init)
    if not (isinstance(out_features, int) and out_features >= 1):
        raise ValueError(f"{name}: out_features must be a positive int, got {out_features!r}")

    def init(rng, in_shape, dtype=np.float32):
        n_in = _in_features(name, in_shape)
        rng_w, rng_b = split_rng(rng, 2)  # a non-zero b_init must not replay W's draws
        params = {
            "W": w_init(rng_w, (n_in, out_features), dtype),
            "b": b_init(rng_b, (out_features,), dtype, fan_in=n_in, fan_out=out_features),
        }
        return (*tuple(in_shape)[:-1], out_features), params

    def check(x, W, b):
        _check_features(name, x, W, W.shape[0])
        if b.shape != W.shape[1:]:
            raise ValueError(
                f"{name}: b shape {tuple(b.shape)} does not match W's output axis "
                f"{tuple(W.shape[1:])}"
            )
        check_dtype(name, b, W.dtype, "b")

    def forward(params, x, *, train=False, rng=None):
        W, b = _unpack(name, params, "W", "b")
        dtype = W.dtype
        # One cheap test that passes only what ``check`` passes (the common case of a small
        # net's step spends its time in checks like these); anything else gets the full ones.
        if not (
            getattr(x, "dtype", None) == dtype == b.dtype
            and dtype.kind == "f"
            and x.ndim >= 2
            and x.shape[-1] == W.shape[0]
            and b.shape == W.shape[1:]
        ):
            check(x, W, b)
        return iadd(x @ W, b), (x, W)

    def backward(cache, dout, *, need_dx=True):
        x, W = cache
        check_dout(name, dout, (*x.shape[:-1], W.shape[1]), x.dtype)
        dW, dx = _matmul_backward(x, W, dout, need_dx)
        return {"W": dW, "b": _bias_backward(dout)}, dx

    return Layer(name, init, forward, backward)


def Flatten(*, name: str = "Flatten") -> Layer:
    """(N, d1, d2, ...) → (N, d1·d2·...); the backward reshapes the gradient back."""

    def init(rng, in_shape, dtype=np.float32):
        if len(in_shape) < 2:
            raise ValueError(f"{name}: expected an input shape (N, ...), got {shape_str(in_shape)}")
        return (in_shape[0], math.prod(in_shape[1:])), ()

    def forward(params, x, *, train=False, rng=None):
        if getattr(x, "ndim", 0) < 1:
            raise ValueError(f"{name}: expected an input with a batch axis, got a scalar")
        # The input itself is the cache: the backward needs only its shape, and a reference
        # costs nothing (a Python tuple could not travel as a JAX residual).
        return x.reshape(x.shape[0], -1), (x,)

    def backward(cache, dout, *, need_dx=True):
        (x,) = cache
        check_dout(name, dout, (x.shape[0], math.prod(x.shape[1:])), x.dtype)
        return (), (dout.reshape(x.shape) if need_dx else None)

    return Layer(name, init, forward, backward)


__all__ = [
    "Bias",
    "Dense",
    "Flatten",
    "MatMul",
]
