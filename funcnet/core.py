"""The protocol: ``Layer``, ``Loss``, the combinators (``pipeline``, ``residual``,
``concat``), running state, ``to_jax``.

A layer is an immutable value with three pure functions::

    out_shape, params = layer.init(rng, in_shape, dtype=np.float32)
    out, cache        = layer.forward(params, x, *, train=False, rng=None)
    dparams, dx       = layer.backward(cache, dout, *, need_dx=True)

``in_shape`` uses ``-1`` for the batch dimension.  ``params`` is a pytree of arrays
(``{"W": ..., "b": ...}``, or ``()`` for none).  ``cache`` holds only arrays (so JAX can
carry it as residuals).  ``train`` and ``rng`` are the room left for layers that depend on
the mode or on randomness (Dropout, BatchNorm): layers that do not need them ignore them,
and a pipeline passes them on.  ``need_dx=False`` lets a caller that does not want the input
gradient (the first layer of a network) skip computing it; ``dx`` is then ``None``.

**Running state** (BatchNorm's running mean and variance) lives in ``params`` under the key
``STATE`` (``"state"``) of the layer's params dict, so ``init`` and checkpoints carry it with
nothing new.  It is not trained: ``dparams`` has the structure of ``trainable(params)`` (the
params without their state entries), and optimizers, weight decay and parameter averages
only ever see that.  A layer that computes new state in train mode returns its cache
wrapped as ``StateUpdate(cache, new_state)``; ``update_state(params, cache)`` writes every
new state into a copy of ``params`` and raises if one cannot be placed.

A loss is a named pair ``forward(y, t) -> (value, cache)`` and ``backward(cache, dloss=1.0)
-> dy``: ``t`` is data and gets no gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ._arrays import namespace, split_rng
from ._checks import shape_str

Shape = tuple[int, ...]

STATE = "state"  # the params-dict key of a layer's running state


class Layer(NamedTuple):
    """A layer: a name and its three pure functions (see the module docstring)."""

    name: str
    init: Callable[..., tuple[Shape, Any]]
    forward: Callable[..., tuple[Any, Any]]
    backward: Callable[..., tuple[Any, Any]]

    def __repr__(self) -> str:
        return self.name


class Loss(NamedTuple):
    """A loss: ``forward(y, t) -> (scalar, cache)``, ``backward(cache, dloss=1.0) -> dy``."""

    name: str
    forward: Callable[..., tuple[Any, Any]]
    backward: Callable[..., Any]

    def __repr__(self) -> str:
        return self.name


# --------------------------------------------------------------------------- pipeline


def pipeline(*layers: Layer, name: str | None = None) -> Layer:
    """Compose layers left to right into one layer of the same protocol.

    ``params`` and the cache are tuples with one entry per child.  ``init`` threads the
    shapes and gives child ``i`` the ``i``-th spawned child of ``rng``, so the same seed
    always gives the same params.  ``backward`` runs the children in reverse; with
    ``need_dx=False`` only the first child skips its input gradient.  Errors from a child
    are re-raised as ``pipeline[i]: <child's message>``.
    """
    _check_layers("pipeline", layers)
    label = name or "pipeline(" + ", ".join(layer.name for layer in layers) + ")"

    def where(i: int) -> str:
        return f"{name or 'pipeline'}[{i}]"

    def init(rng, in_shape, dtype=np.float32):
        shape, params = tuple(in_shape), []
        for i, (layer, r) in enumerate(zip(layers, split_rng(rng, len(layers)), strict=True)):
            shape, p = _child(where, i, layer.init, r, shape, dtype=dtype)
            params.append(p)
        return shape, tuple(params)

    # forward and backward catch a child's error themselves rather than through _child:
    # a small net's NumPy step pays for every Python call.
    def forward(params, x, *, train=False, rng=None):
        _check_child_params(label, params, len(layers), "layer")
        caches = []
        for i, (layer, p, r) in enumerate(
            zip(layers, params, split_rng(rng, len(layers)), strict=True)
        ):
            try:
                x, c = layer.forward(p, x, train=train, rng=r)
            except (ValueError, TypeError) as e:
                raise _located(e, where(i)) from e
            caches.append(c)
        return x, tuple(caches)

    def backward(cache, dout, *, need_dx=True):
        dparams = [None] * len(layers)
        for i in range(len(layers) - 1, -1, -1):
            try:
                dparams[i], dout = layers[i].backward(cache[i], dout, need_dx=need_dx or i > 0)
            except (ValueError, TypeError) as e:
                raise _located(e, where(i)) from e
        return tuple(dparams), dout

    return Layer(label, init, forward, backward)


def residual(layer: Layer, *, name: str | None = None) -> Layer:
    """A skip connection: y = x + f(x), with ``f`` = ``layer``, which must keep the shape.

    ∂L/∂x = ∂L/∂y + ∂L/∂x through f (the gradient takes both paths); ∂L/∂θ is f's.  The
    params and the cache are f's own, so running state inside f is routed as usual.
    """
    _check_layers("residual", (layer,))
    label = name or f"residual({layer.name})"

    def where(_: int) -> str:
        return label

    def init(rng, in_shape, dtype=np.float32):
        out_shape, params = _child(where, 0, layer.init, rng, in_shape, dtype=dtype)
        if tuple(out_shape) != tuple(in_shape):
            raise ValueError(
                f"{label}: the layer maps {shape_str(in_shape)} to {shape_str(out_shape)}; "
                "a residual branch must keep the shape (add a projection inside it)"
            )
        return tuple(in_shape), params

    def forward(params, x, *, train=False, rng=None):
        y, cache = _child(where, 0, layer.forward, params, x, train=train, rng=rng)
        if tuple(y.shape) != tuple(x.shape):
            raise ValueError(
                f"{label}: the layer maps shape {tuple(x.shape)} to {tuple(y.shape)}; a "
                "residual branch must keep the shape"
            )
        return x + y, cache  # not in place: y may be the layer's own cache (Relu's is)

    def backward(cache, dout, *, need_dx=True):
        dparams, dx = _child(where, 0, layer.backward, cache, dout, need_dx=need_dx)
        return dparams, (dout + dx if need_dx else None)

    return Layer(label, init, forward, backward)


class Aux(NamedTuple):
    """A combinator's cache with data of its own beside its children's: ``update_state``
    routes ``cache`` against the params and ignores ``aux``."""

    cache: Any
    aux: Any


def concat(*branches: Layer, axis: int = 1, name: str | None = None) -> Layer:
    """Every branch applied to the same input, the outputs concatenated along ``axis``
    (stax's ``FanOut``, ``parallel`` and ``FanInConcat`` in one: an Inception block).

    y = [f_1(x), …, f_k(x)] along ``axis`` (1: channels of (N, C, H, W), features of
    (N, D)); ∂L/∂x = Σ_i (∂L/∂x through f_i of the slice of ∂L/∂y that f_i produced), since
    x fans out to every branch; ∂L/∂θ_i is f_i's.  Params and cache: one entry per branch.
    """
    _check_layers("concat", branches)
    if not isinstance(axis, int) or axis == 0:
        raise ValueError(
            f"concat: axis must be a non-batch axis (an int other than 0), got {axis!r}"
        )
    label = name or "concat(" + ", ".join(b.name for b in branches) + f", axis={axis})"

    def where(i: int) -> str:
        return f"{name or 'concat'}[{i}]"

    def init(rng, in_shape, dtype=np.float32):
        shapes, params = [], []
        for i, (branch, r) in enumerate(zip(branches, split_rng(rng, len(branches)), strict=True)):
            shape, p = _child(where, i, branch.init, r, in_shape, dtype=dtype)
            shapes.append(tuple(shape))
            params.append(p)
        ax = axis % len(shapes[0])
        others = {s[:ax] + s[ax + 1 :] for s in shapes}
        if len({len(s) for s in shapes}) != 1 or len(others) != 1:
            raise ValueError(
                f"{label}: the branches' output shapes {', '.join(map(shape_str, shapes))} "
                f"differ off axis {axis}; they cannot be concatenated"
            )
        out = list(shapes[0])
        out[ax] = sum(s[ax] for s in shapes)
        return tuple(out), tuple(params)

    def forward(params, x, *, train=False, rng=None):
        _check_child_params(label, params, len(branches), "branch")
        outs, caches = [], []
        for i, (branch, p, r) in enumerate(
            zip(branches, params, split_rng(rng, len(branches)), strict=True)
        ):
            y, c = _child(where, i, branch.forward, p, x, train=train, rng=r)
            outs.append(y)
            caches.append(c)
        try:
            out = namespace(*outs).concatenate(outs, axis=axis)
        except ValueError as e:
            shapes = ", ".join(str(tuple(y.shape)) for y in outs)
            raise ValueError(f"{label}: cannot concatenate outputs {shapes}: {e}") from None
        # Each branch's width along the axis, as the shape of an empty array: a cache holds
        # only arrays (JAX carries it as residuals), and a shape stays static under jit.
        widths = tuple(namespace(y).zeros((0, y.shape[axis]), dtype=y.dtype) for y in outs)
        return out, Aux(tuple(caches), widths)

    def backward(cache, dout, *, need_dx=True):
        caches, widths = cache
        xp = namespace(dout)
        sizes = [w.shape[1] for w in widths]
        if not -dout.ndim <= axis < dout.ndim or dout.shape[axis] != sum(sizes):
            raise ValueError(
                f"{label}: backward expected dout with {sum(sizes)} entries along axis {axis} "
                f"(the branches' {sizes}), got shape {tuple(dout.shape)}"
            )
        bounds = np.cumsum(sizes)[:-1].tolist()
        parts = xp.split(dout, bounds, axis=axis)
        dparams, dx = [], None
        for i, (branch, c, d) in enumerate(zip(branches, caches, parts, strict=True)):
            dp, di = _child(where, i, branch.backward, c, d, need_dx=need_dx)
            dparams.append(dp)
            if need_dx:
                dx = di if dx is None else dx + di
        return tuple(dparams), dx

    return Layer(label, init, forward, backward)


def _child(where: Callable[[int], str], i: int, fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` for child ``i`` of a combinator: a ValueError or TypeError
    comes back as the same type with ``where(i): `` in front, so that an error deep in a
    network says where it is (the child's own message already starts with its name)."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as e:
        raise _located(e, where(i)) from e


def _located(e: Exception, where: str) -> Exception:
    """The same error type with ``where: `` in front of its message."""
    return type(e)(f"{where}: {e}")


def _check_child_params(label: str, params, n: int, per: str) -> None:
    if not isinstance(params, tuple) or len(params) != n:
        raise ValueError(
            f"{label}: expected a tuple of {n} params, one per {per}, got "
            f"{type(params).__name__}"
            + (f" of length {len(params)}" if isinstance(params, tuple | list) else "")
        )


def _check_layers(what: str, layers) -> None:
    if not layers:
        raise ValueError(f"{what}: needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"{what}: argument {i} is a {type(layer).__name__}, not a Layer "
                "(did you pass fn.Dense instead of fn.Dense(100)?)"
            )


# --------------------------------------------------------------------------- running state


class StateUpdate(NamedTuple):
    """A train-mode cache that also carries the layer's new running state."""

    cache: Any
    state: Any


def trainable(params):
    """``params`` without the running-state entries: what gradients, optimizers, weight
    decay and averages see.  Same nesting of dicts, lists and tuples."""
    if isinstance(params, dict):
        return {k: trainable(v) for k, v in params.items() if k != STATE}
    if isinstance(params, list | tuple) and not hasattr(params, "_fields"):
        return type(params)(trainable(p) for p in params)
    return params


def with_trainable(params, new):
    """``params`` with its trainable entries replaced by those of ``new`` (shaped like
    ``trainable(params)``) and its running state kept."""
    if isinstance(params, dict):
        if isinstance(new, dict) and params.keys() == new.keys():  # no state here: no sets
            return {k: with_trainable(params[k], new[k]) for k in params}
        missing = set(params) - {STATE} - set(new)
        if missing or set(new) - set(params):
            raise ValueError(
                f"with_trainable: keys {sorted(new)} do not match the params' trainable keys "
                f"{sorted(set(params) - {STATE})}"
            )
        out = {k: with_trainable(params[k], new[k]) for k in params if k != STATE}
        if STATE in params:
            out[STATE] = params[STATE]
        return out
    if isinstance(params, list | tuple) and not hasattr(params, "_fields"):
        if not isinstance(new, list | tuple) or len(new) != len(params):
            raise ValueError(
                f"with_trainable: expected {len(params)} entries, got {type(new).__name__}"
            )
        return type(params)(with_trainable(p, n) for p, n in zip(params, new, strict=True))
    return new


def update_state(params, cache):
    """``params`` with every running state that the forward which made ``cache`` computed.

    Walks the params and the cache of a pipeline together (tuples with one entry per
    child) and puts each ``StateUpdate``'s state under its layer's ``STATE`` key; every other
    entry is kept as it is and nothing is mutated.  A ``StateUpdate`` that cannot be placed
    (a combinator whose cache is not shaped like its params, or a layer with no state entry)
    raises a ValueError instead of losing the update.
    """
    return _route(params, cache, ())


def _route(params, cache, path: tuple):
    if isinstance(cache, Aux):
        return _route(params, cache.cache, path)
    if isinstance(cache, StateUpdate):
        if not isinstance(params, dict) or STATE not in params:
            raise ValueError(
                f"update_state: the cache at {_at(path)} carries new running state but those "
                f"params have no {STATE!r} entry to hold it (got {type(params).__name__})"
            )
        return {**params, STATE: cache.state}
    pairable = (
        isinstance(params, tuple)
        and isinstance(cache, tuple)
        and not hasattr(cache, "_fields")
        and len(params) == len(cache)
    )
    if pairable:  # a list, not a generator: this walk runs every training step
        pairs = enumerate(zip(params, cache, strict=True))
        return tuple([_route(p, c, (*path, i)) for i, (p, c) in pairs])
    if _holds_update(cache):
        raise ValueError(
            f"update_state: the cache at {_at(path)} holds a StateUpdate that cannot be matched "
            "to its params (a combinator's params and cache must be tuples with one entry per "
            "child); route it in that combinator, or its running state would be lost"
        )
    return params


def _at(path: tuple) -> str:
    return "params" + "".join(f"[{i}]" for i in path)


def _holds_update(cache) -> bool:
    if isinstance(cache, StateUpdate):
        return True
    if isinstance(cache, dict):
        cache = cache.values()
    elif not isinstance(cache, list | tuple):
        return False
    # A loop, not any(...), and no call for an array: this walk runs every training step.
    for c in cache:
        if not hasattr(c, "shape") and _holds_update(c):
            return True
    return False


# --------------------------------------------------------------------------- JAX


def to_jax(layer: Layer) -> Callable:
    """``apply(params, x) -> out`` (eval mode) as a JAX function whose VJP is the hand-written
    backward.

    Built with ``jax.custom_vjp``: ``jax.grad``, ``jax.vjp`` and ``jax.jit`` of any JAX
    program that calls ``apply`` use ``layer.backward`` for this layer instead of
    differentiating its forward.  Running state gets a zero cotangent: it is not trained.
    """
    import jax

    @jax.custom_vjp
    def apply(params, x):
        return layer.forward(params, x)[0]

    def fwd(params, x):
        out, cache = layer.forward(params, x)
        return out, (cache, params)

    def bwd(residuals, g):
        cache, params = residuals
        dparams, dx = layer.backward(cache, g)
        zeros = jax.tree_util.tree_map(jax.numpy.zeros_like, params)
        return with_trainable(zeros, dparams), dx

    apply.defvjp(fwd, bwd)
    return apply


__all__ = [
    "STATE",
    "Aux",
    "Layer",
    "Loss",
    "Shape",
    "StateUpdate",
    "concat",
    "pipeline",
    "residual",
    "to_jax",
    "trainable",
    "update_state",
    "with_trainable",
]
