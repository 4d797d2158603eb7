"""``Dropout``: the mode at call time (``train=``), the randomness at call time (``rng=``).

``rng`` is an int seed or NumPy Generator (NumPy draws) or a JAX PRNG key (``jax.random``,
traceable under ``jit``); the same ``rng`` always drops the same units.
"""

from __future__ import annotations

import numpy as np

from .._arrays import namespace, uniform01
from .._checks import check_dout, check_float
from ..core import Layer


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
        keep = uniform01(rng, x.shape, x.dtype, xp) >= p
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


__all__ = [
    "Dropout",
]
