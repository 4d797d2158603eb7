"""``BatchNorm``: normalization over the batch, with its running statistics as state.

The running mean and variance live in the layer's params under ``core.STATE``; they are
not trained (no gradient, no optimizer, no weight decay), a train-mode forward returns
their new values through ``core.StateUpdate``, and ``core.update_state`` writes them.
"""

from __future__ import annotations

import math

import numpy as np

from .._arrays import iadd, idiv, imul, isub, namespace
from .._checks import check_dout, check_dtype, shape_str
from ..core import STATE, Layer, StateUpdate


def BatchNorm(momentum: float = 0.9, eps: float = 1e-5, *, name: str = "BatchNorm") -> Layer:
    """Batch normalization over the batch (and spatial) axes, per feature/channel.

    train: μ, σ² = batch mean and (biased) variance; x̂ = (x − μ)/√(σ² + ε); y = γx̂ + β.
      ∂L/∂γ = Σ ∂L/∂y ⊙ x̂, ∂L/∂β = Σ ∂L/∂y (sums over the M normalized values per channel),
      ∂L/∂x = (γ/√(σ² + ε)) ⊙ (∂L/∂y − ∂L/∂β/M − x̂ ⊙ ∂L/∂γ/M): the book's
      (g − mean(g) − x̂ ⊙ mean(g ⊙ x̂))/√(σ² + ε) with g = γ ⊙ ∂L/∂y, whose two means are
      γ∂L/∂β/M and γ∂L/∂γ/M, so no pass over g is needed; the running stats become
      m·running + (1 − m)·batch (returned through ``StateUpdate``, never mutated).
    eval: the running mean/var replace μ, σ²; ∂L/∂x = γ ⊙ ∂L/∂y/√(var + ε).
    Params: ``{"gamma", "beta", "state": {"mean", "var"}}``; gradients: ``{"gamma", "beta"}``.
    Input (N, D) normalizes each of D features; (N, C, H, W) each of C channels.
    """
    if not 0.0 <= momentum <= 1.0 or not eps > 0:
        raise ValueError(f"{name}: need 0 <= momentum <= 1 and eps > 0, got {momentum}, {eps}")

    def init(rng, in_shape, dtype=np.float32):
        return _init(name, in_shape, dtype)

    def forward(params, x, *, train=False, rng=None):
        gamma, beta, running = _unpack(name, params)
        check_dtype(name, x, gamma.dtype)
        if x.ndim not in (2, 4) or x.shape[1] != gamma.shape[0]:
            want = f"(N, {gamma.shape[0]}) or (N, {gamma.shape[0]}, H, W)"
            raise ValueError(f"{name}: expected input shape {want}, got {tuple(x.shape)}")
        xp = namespace(x)
        axes, bshape = _axes(x.ndim)

        def b(v):  # a per-channel vector, shaped to broadcast against x
            return xp.reshape(v, bshape)

        if train:
            if x.shape[0] < 2:
                raise ValueError(
                    f"{name}: train mode needs a batch of at least 2 to estimate a variance, "
                    f"got input shape {tuple(x.shape)}"
                )
            mu = x.mean(axis=axes)
            xc = x - b(mu)
            var = (xc * xc).mean(axis=axes)
            std = xp.sqrt(var + eps)
            xn = idiv(xc, b(std))
            state = {
                "mean": momentum * running["mean"] + (1 - momentum) * mu,
                "var": momentum * running["var"] + (1 - momentum) * var,
            }
            return iadd(xn * b(gamma), b(beta)), StateUpdate((xn, std, gamma), state)
        std = xp.sqrt(running["var"] + eps)
        xn = idiv(x - b(running["mean"]), b(std))
        return iadd(xn * b(gamma), b(beta)), (xn, std, gamma)

    def backward(cache, dout, *, need_dx=True):
        train = isinstance(cache, StateUpdate)
        xn, std, gamma = cache.cache if train else cache
        check_dout(name, dout, xn.shape, xn.dtype)
        xp = namespace(dout)
        axes, bshape = _axes(xn.ndim)
        dgamma, dbeta = (dout * xn).sum(axis=axes), dout.sum(axis=axes)
        dparams = {"gamma": dgamma, "beta": dbeta}
        if not need_dx:
            return dparams, None
        scale = xp.reshape(gamma / std, bshape)
        if not train:
            return dparams, dout * scale
        m = math.prod(xn.shape[a] for a in axes)
        dx = isub(dout - xp.reshape(dbeta / m, bshape), xn * xp.reshape(dgamma / m, bshape))
        return dparams, imul(dx, scale)

    return Layer(name, init, forward, backward)


def _init(name: str, in_shape, dtype):
    if len(in_shape) not in (2, 4):
        raise ValueError(
            f"{name}: expected an input shape (N, D) or (N, C, H, W), got {shape_str(in_shape)}"
        )
    c = in_shape[1]
    params = {
        "gamma": np.ones(c, dtype),
        "beta": np.zeros(c, dtype),
        STATE: {"mean": np.zeros(c, dtype), "var": np.ones(c, dtype)},
    }
    return tuple(in_shape), params


def _unpack(name: str, params):
    if not isinstance(params, dict) or set(params) != {"gamma", "beta", STATE}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(
            f"{name}: expected params with keys ['beta', 'gamma', {STATE!r}], got {got}"
        )
    return params["gamma"], params["beta"], params[STATE]


def _axes(ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The axes a channel's statistics run over, and a per-channel vector's broadcast shape."""
    return ((0,), (1, -1)) if ndim == 2 else ((0, 2, 3), (1, -1, 1, 1))


__all__ = [
    "BatchNorm",
]
