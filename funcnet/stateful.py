"""Layers whose forward depends on the mode or on randomness: ``Dropout`` and ``BatchNorm``.

Both take the mode as ``forward(..., train=True/False)`` and Dropout its randomness as
``forward(..., rng=...)``: an int seed or NumPy Generator (NumPy draws) or a JAX PRNG key
(``jax.random``, traceable under ``jit``).  A pipeline passes both on.
"""

from __future__ import annotations

import math

import numpy as np

from .core import (
    Layer,
    StateUpdate,
    as_rng,
    check_dout,
    check_dtype,
    check_float,
    is_numpy_rng,
    namespace,
    shape_str,
)


def _uniform(rng, shape, dtype, xp):
    """U[0, 1) samples of ``shape`` in ``dtype`` from a seed, a Generator or a JAX key."""
    if is_numpy_rng(rng):
        return xp.asarray(as_rng(rng).random(shape, dtype=np.dtype(dtype)))
    import jax

    return jax.random.uniform(rng, shape, dtype=dtype)


def Dropout(p: float = 0.5, *, scale_at: str = "train", name: str | None = None) -> Layer:
    """Dropout with drop probability ``p``; masks m_i ~ Bernoulli(1 − p) drawn from ``rng``.

    ``scale_at="train"`` (inverted dropout, the default):
      train: y = x ⊙ m / (1 − p), ∂L/∂x = ∂L/∂y ⊙ m / (1 − p);  eval: y = x.
    ``scale_at="eval"`` (the book's ``Dropout``):
      train: y = x ⊙ m, ∂L/∂x = ∂L/∂y ⊙ m;  eval: y = (1 − p)·x, ∂L/∂x = (1 − p)·∂L/∂y.
    Both keep E[train output] = eval output.  They are not the same training run: the book's
    net with weights W computes what the inverted one computes with (1 − p)·W after each
    dropout, and SGD moves those layers as if the learning rate were (1 − p)² times as large.
    """
    if scale_at not in ("train", "eval"):
        raise ValueError(f"Dropout: scale_at must be 'train' or 'eval', got {scale_at!r}")
    name = name or (f"Dropout({p})" if scale_at == "train" else f"Dropout({p}, scale_at=eval)")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name}: drop probability p must be in [0, 1), got {p}")
    keep_scale = 1 / (1 - p) if scale_at == "train" else 1.0
    eval_scale = 1.0 if scale_at == "train" else 1 - p

    def init(rng, in_shape, dtype=np.float32):
        return tuple(in_shape), ()

    def forward(params, x, *, train=False, rng=None):
        check_float(name, x)
        if not train or p == 0.0:
            # The cache holds the scale as a 0-d array: arrays only, so JAX can carry it.
            scale = namespace(x).asarray(eval_scale, dtype=x.dtype)
            return (x if eval_scale == 1.0 else x * scale), (None, scale)
        if rng is None:
            raise ValueError(
                f"{name}: train mode needs randomness: pass rng= (an int seed, a numpy "
                "Generator or a jax.random key) to forward"
            )
        xp = namespace(x)
        keep = _uniform(rng, x.shape, x.dtype, xp) >= p
        mask = xp.where(keep, xp.asarray(keep_scale, dtype=x.dtype), xp.asarray(0, x.dtype))
        return x * mask, (mask, None)

    def backward(cache, dout, *, need_dx=True):
        mask, scale = cache
        if mask is not None:
            check_dout(name, dout, mask.shape, mask.dtype)
        if not need_dx:
            return (), None
        if mask is not None:
            return (), dout * mask
        return (), (dout if eval_scale == 1.0 else dout * scale)

    return Layer(name, init, forward, backward)


def BatchNorm(momentum: float = 0.9, eps: float = 1e-5, *, name: str = "BatchNorm") -> Layer:
    """Batch normalization over the batch (and spatial) axes, per feature/channel.

    train: μ, σ² = batch mean and (biased) variance; x̂ = (x − μ)/√(σ² + ε); y = γx̂ + β.
      ∂L/∂x = (1/√(σ² + ε)) · (g − mean(g) − x̂ · mean(g ⊙ x̂)) with g = γ ⊙ ∂L/∂y,
      ∂L/∂γ = Σ ∂L/∂y ⊙ x̂, ∂L/∂β = Σ ∂L/∂y; running stats ← m·running + (1 − m)·batch
      (returned through ``StateUpdate``, never mutated; their gradient is 0).
    eval: the running mean/var replace μ, σ²; ∂L/∂x = g/√(var + ε), and the running stats get
      their true gradients ∂L/∂mean = −Σg/√(var + ε), ∂L/∂var = −½ Σ g ⊙ x̂ / (var + ε).
    Input (N, D) normalizes each of D features; (N, C, H, W) each of C channels.
    """
    if not 0.0 <= momentum <= 1.0 or not eps > 0:
        raise ValueError(f"{name}: need 0 <= momentum <= 1 and eps > 0, got {momentum}, {eps}")

    def init(rng, in_shape, dtype=np.float32):
        if len(in_shape) not in (2, 4):
            raise ValueError(
                f"{name}: expected an input shape (N, D) or (N, C, H, W), got {shape_str(in_shape)}"
            )
        c = in_shape[1]
        params = {
            "gamma": np.ones(c, dtype),
            "beta": np.zeros(c, dtype),
            "mean": np.zeros(c, dtype),
            "var": np.ones(c, dtype),
        }
        return tuple(in_shape), params

    def forward(params, x, *, train=False, rng=None):
        gamma = params["gamma"]
        check_dtype(name, x, gamma.dtype)
        if x.ndim not in (2, 4) or x.shape[1] != gamma.shape[0]:
            want = f"(N, {gamma.shape[0]}) or (N, {gamma.shape[0]}, H, W)"
            raise ValueError(f"{name}: expected input shape {want}, got {tuple(x.shape)}")
        xp = namespace(x)
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        bshape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)

        def b(v):  # a per-channel vector, shaped to broadcast against x
            return xp.reshape(v, bshape)

        if train:
            if x.shape[0] < 2:
                raise ValueError(
                    f"{name}: train mode needs a batch of at least 2 to estimate a variance, "
                    f"got input shape {tuple(x.shape)}"
                )
            mu = xp.mean(x, axis=axes)
            xc = x - b(mu)
            var = xp.mean(xc * xc, axis=axes)
            std = xp.sqrt(var + eps)
            xn = xc / b(std)
            state = {
                "mean": momentum * params["mean"] + (1 - momentum) * mu,
                "var": momentum * params["var"] + (1 - momentum) * var,
            }
            return b(gamma) * xn + b(params["beta"]), StateUpdate((xn, std, gamma), state)
        std = xp.sqrt(params["var"] + eps)
        xn = (x - b(params["mean"])) / b(std)
        return b(gamma) * xn + b(params["beta"]), (xn, std, gamma)

    def backward(cache, dout, *, need_dx=True):
        train = isinstance(cache, StateUpdate)
        xn, std, gamma = cache.cache if train else cache
        check_dout(name, dout, xn.shape, xn.dtype)
        xp = namespace(dout)
        axes = (0,) if xn.ndim == 2 else (0, 2, 3)
        bshape = (1, -1) if xn.ndim == 2 else (1, -1, 1, 1)
        dgamma = xp.sum(dout * xn, axis=axes)
        dbeta = xp.sum(dout, axis=axes)
        g = dout * xp.reshape(gamma, bshape)
        bstd = xp.reshape(std, bshape)
        if train:
            n = math.prod(xn.shape[a] for a in axes)
            sg = xp.sum(g, axis=axes)
            sgx = xp.sum(g * xn, axis=axes)
            dparams = {
                "gamma": dgamma,
                "beta": dbeta,
                "mean": xp.zeros_like(std),
                "var": xp.zeros_like(std),
            }
            dx = None
            if need_dx:
                dx = (g - xp.reshape(sg / n, bshape) - xn * xp.reshape(sgx / n, bshape)) / bstd
            return dparams, dx
        dmean = -xp.sum(g, axis=axes) / std
        dvar = -0.5 * xp.sum(g * xn, axis=axes) / (std * std)
        dparams = {"gamma": dgamma, "beta": dbeta, "mean": dmean, "var": dvar}
        return dparams, (g / bstd if need_dx else None)

    return Layer(name, init, forward, backward)
