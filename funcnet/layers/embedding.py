"""``Embedding``: integer ids to rows of a weight matrix (the book's ``TimeEmbedding``)."""

from __future__ import annotations

import numpy as np

from .. import initializers
from .._arrays import is_concrete, namespace
from .._checks import check_dout, shape_str
from ..core import Layer


def _check_ids(name: str, ids, vocab: int) -> None:
    kind = getattr(getattr(ids, "dtype", None), "kind", None)
    if kind not in ("i", "u"):
        got = getattr(ids, "dtype", type(ids).__name__)
        raise TypeError(f"{name}: expected integer ids, got {got}")
    if ids.ndim < 1:
        raise ValueError(f"{name}: expected ids of shape (N, ...), got a scalar")
    # Values are checked only where they are known: under jit the ids are a tracer, and an
    # id out of range would be clamped by the gather: a caller checks its data before jit.
    if is_concrete(ids) and ids.size:
        lo, hi = ids.min(), ids.max()
        if is_concrete(lo) and (int(lo) < 0 or int(hi) >= vocab):
            raise ValueError(
                f"{name}: ids must be in [0, {vocab - 1}] for a vocabulary of {vocab}, got "
                f"values in [{int(lo)}, {int(hi)}]"
            )


def Embedding(vocab_size: int, dim: int, *, W_init=0.01, name: str | None = None) -> Layer:
    """y[n, t] = W[ids[n, t]]: ids ``(N, ...)`` of ints in [0, vocab_size) -> ``(N, ..., dim)``.

    ∂L/∂W[v] = Σ_{(n,t): ids[n,t] = v} ∂L/∂y[n, t] (a scatter-add: repeated ids accumulate);
    the ids are data and get no gradient (``dx`` is ``None``).  W ~ N(0, 0.01²) as the
    book's.  An id out of range is a ValueError when the ids' values are known; under
    ``jit`` they are not, and the gather would clamp them, so check data before tracing.
    """
    name = name or f"Embedding({vocab_size}, {dim})"
    for what, v in (("vocab_size", vocab_size), ("dim", dim)):
        if not (isinstance(v, int | np.integer) and v >= 1):
            raise ValueError(f"{name}: {what} must be a positive int, got {v!r}")
    w_init = initializers.get(W_init)

    def init(rng, in_shape, dtype=np.float32):
        if len(in_shape) < 1:
            raise ValueError(f"{name}: expected an input shape (N, ...), got {shape_str(in_shape)}")
        W = w_init(rng, (vocab_size, dim), dtype, fan_in=vocab_size, fan_out=dim)
        return (*tuple(in_shape), dim), {"W": W}

    def forward(params, ids, *, train=False, rng=None):
        W = params["W"] if isinstance(params, dict) and set(params) == {"W"} else None
        if W is None or tuple(W.shape) != (vocab_size, dim):
            got = tuple(W.shape) if W is not None else params
            raise ValueError(f"{name}: expected params {{'W': ({vocab_size}, {dim})}}, got {got}")
        y, ids = lookup(name, W, ids)
        # The ids travel in the cache; W itself only for its shape and dtype, by reference.
        return y, (ids, W)

    def backward(cache, dout, *, need_dx=True):
        ids, W = cache
        check_dout(name, dout, (*ids.shape, dim), W.dtype)
        return {"W": scatter_add(ids, dout, W)}, None

    return Layer(name, init, forward, backward)


def lookup(name: str, W, ids):
    """``(W[ids], ids)`` once ``ids`` are checked: integers, in [0, len(W)) where their
    values are known (``name`` is the layer the errors name).  Every layer that reads rows of
    a weight matrix by id (``Embedding``, ``gpt.tied``) goes through here."""
    ids = ids if hasattr(ids, "dtype") else np.asarray(ids)
    _check_ids(name, ids, W.shape[0])
    return W[ids], ids


def scatter_add(ids, d, W):
    """The gradient of the lookup W[ids] given d = ∂L/∂(W[ids]): ∂L/∂W[v] = Σ over the
    positions holding id v of d's row there (an id used k times gets the sum of its k rows;
    an unused one 0).  Shape and dtype of ``W``."""
    xp = namespace(d, W)
    dim = W.shape[-1]
    flat_ids, flat = ids.reshape(-1), d.reshape(-1, dim)
    if xp is np:
        dW = np.zeros(W.shape, W.dtype)
        np.add.at(dW, flat_ids, flat)
    else:
        dW = xp.zeros(W.shape, W.dtype).at[flat_ids].add(flat)
    return dW


__all__ = ["Embedding", "lookup", "scatter_add"]
