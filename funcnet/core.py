"""The layer protocol, the pipeline combinator and the helpers every layer shares.

A layer is an immutable value with three pure functions::

    out_shape, params = layer.init(rng, in_shape, dtype=np.float32)
    out, cache        = layer.forward(params, x, *, train=False, rng=None)
    dparams, dx       = layer.backward(cache, dout, *, need_dx=True)

``in_shape`` uses ``-1`` for the batch dimension.  ``params`` is a pytree of arrays
(``{"W": ..., "b": ...}``, or ``()`` for none); ``dparams`` has the same structure, shapes
and dtypes.  ``cache`` holds only arrays (so JAX can carry it as residuals).  ``train`` and
``rng`` are the room left for layers that depend on the mode or on randomness (Dropout,
BatchNorm): layers that do not need them ignore them, and a pipeline passes them on.
``need_dx=False`` lets a caller that does not want the input gradient (the first layer of
a network) skip computing it; ``dx`` is then ``None``.

Running state (BatchNorm's running mean and variance) lives in ``params``, so ``init``,
checkpoints and eval mode need nothing new.  Its gradient is the true one (zero in train
mode, where the output does not depend on it).  A layer that updates state in train mode
returns its cache wrapped as ``StateUpdate(cache, state)``; ``update_state(params, cache)``
then writes every new state into a copy of ``params``, through pipelines of any depth.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

Shape = tuple[int, ...]


class Layer(NamedTuple):
    """A layer: a name and its three pure functions (see the module docstring)."""

    name: str
    init: Callable[..., tuple[Shape, Any]]
    forward: Callable[..., tuple[Any, Any]]
    backward: Callable[..., tuple[Any, Any]]

    def __repr__(self) -> str:
        return self.name


class Op(NamedTuple):
    """A named pair of pure functions, ``forward(...) -> (out, cache)`` and
    ``backward(cache, dout) -> gradients``: a loss, or a node of a computational graph."""

    name: str
    forward: Callable
    backward: Callable

    def __repr__(self) -> str:
        return self.name


# --------------------------------------------------------------------------- arrays


def namespace(*arrays):
    """The array namespace (``numpy`` or ``jax.numpy``) shared by ``arrays``.

    Python scalars and lists count as NumPy.  Mixing NumPy and JAX arrays gives JAX, which
    is what ``jnp`` would do with them anyway.
    """
    xp = np
    for a in arrays:
        get = getattr(a, "__array_namespace__", None)
        if get is not None:
            ns = get()
            if ns is not np:
                return ns
    return xp


def is_concrete(x) -> bool:
    """True when the values of ``x`` can be inspected (not a JAX tracer under jit/grad)."""
    if isinstance(x, np.ndarray | np.generic | int | float):
        return True
    jax = sys.modules.get("jax")
    return jax is None or not isinstance(x, jax.core.Tracer)


def is_numpy_rng(rng) -> bool:
    """True for NumPy-side randomness: an int seed, a tuple of ints, or a Generator."""
    if isinstance(rng, bool):
        return False
    if isinstance(rng, tuple):
        return all(isinstance(r, int | np.integer) for r in rng)
    return isinstance(rng, int | np.integer | np.random.Generator)


def as_rng(rng) -> np.random.Generator:
    """A NumPy Generator from an int seed, a tuple of ints (a seed path) or a Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    if is_numpy_rng(rng):
        if isinstance(rng, tuple):  # (seed, *spawn_key): the stream Generator.spawn would give
            seq = np.random.SeedSequence(int(rng[0]), spawn_key=tuple(int(r) for r in rng[1:]))
            return np.random.default_rng(seq)
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"rng must be an int seed, a tuple of ints or a numpy Generator, got {type(rng).__name__}"
    )


def split_rng(rng, n: int) -> list:
    """``n`` independent children of ``rng``, deterministically.

    An int seed ``s`` or a tuple seed gives the tuples ``(s, 0) ... (s, n-1)``: free to make,
    and ``as_rng((s, *key))`` is ``SeedSequence(s, spawn_key=key)``, the stream that
    ``default_rng(s).spawn(n)[i]`` would give.  A Generator gives spawned Generators; a
    JAX PRNG key gives keys (``jax.random.split``).  ``None`` gives ``None`` children.
    """
    if rng is None:
        return [None] * n
    if isinstance(rng, np.random.Generator):
        return list(rng.spawn(n))
    if is_numpy_rng(rng):
        base = tuple(int(r) for r in rng) if isinstance(rng, tuple) else (int(rng),)
        return [(*base, i) for i in range(n)]
    import jax

    return list(jax.random.split(rng, n))


# --------------------------------------------------------------------------- checks


def shape_str(shape) -> str:
    """``(-1, 784)`` as ``(N, 784)``: -1 is the batch dimension in ``init`` shapes."""
    return str(tuple("N" if d == -1 else d for d in shape)).replace("'", "")


def check_ndim(name: str, x, ndim: int | Sequence[int], what: str = "input") -> None:
    """Raise a ValueError naming the layer if ``x.ndim`` is not (one of) ``ndim``."""
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if getattr(x, "ndim", None) not in allowed:
        want = " or ".join(str(d) for d in allowed)
        got = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{name}: expected a {want}-D {what}, got shape {got}")


def check_float(name: str, x, what: str = "input") -> None:
    """Raise a TypeError naming the layer if ``x`` is not a floating-point array."""
    dtype = getattr(x, "dtype", None)
    if dtype is None or not np.issubdtype(np.dtype(dtype), np.floating):
        got = dtype if dtype is not None else type(x).__name__
        raise TypeError(
            f"{name}: expected a floating-point {what} array, got {got}; "
            "cast it first (e.g. x.astype(np.float32))"
        )


def check_dtype(name: str, x, dtype, what: str = "input") -> None:
    """Raise a TypeError if ``x`` does not have the params' dtype (no silent up/down-cast)."""
    check_float(name, x, what)
    if np.dtype(x.dtype) != np.dtype(dtype):
        raise TypeError(
            f"{name}: {what} dtype {np.dtype(x.dtype)} does not match the params dtype "
            f"{np.dtype(dtype)}; cast one of them (funcnet never converts silently)"
        )


def check_same_shape(name: str, a, b, what_a: str, what_b: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"{name}: {what_b} shape {tuple(b.shape)} does not match {what_a} shape "
            f"{tuple(a.shape)}"
        )


def check_dout(name: str, dout, shape, dtype) -> None:
    """Raise if ``dout`` does not have exactly the forward output's ``shape`` and ``dtype``:
    no silent broadcasting or upcasting in a backward."""
    if tuple(dout.shape) != tuple(shape):
        raise ValueError(
            f"{name}: backward expected dout of shape {tuple(shape)}, got {tuple(dout.shape)}"
        )
    if np.dtype(dout.dtype) != np.dtype(dtype):
        raise TypeError(
            f"{name}: backward expected dout of dtype {np.dtype(dtype)}, got "
            f"{np.dtype(dout.dtype)} (funcnet never converts silently)"
        )


def check_no_params(name: str, params) -> None:
    """Raise if a parameter-free layer is handed params (likely a misaligned pipeline)."""
    if not (params is None or (isinstance(params, tuple | dict) and len(params) == 0)):
        raise ValueError(f"{name}: takes no params, got {type(params).__name__}")


def check_finite(name: str, x, what: str = "input") -> None:
    """Raise a ValueError naming the layer if a concrete ``x`` holds NaN or inf."""
    if is_concrete(x):
        xp = namespace(x)
        if not bool(xp.all(xp.isfinite(x))):
            bad = int(xp.sum(~xp.isfinite(x)))
            raise ValueError(f"{name}: {what} contains {bad} non-finite value(s) (NaN or inf)")


# --------------------------------------------------------------------------- state


class StateUpdate(NamedTuple):
    """A cache that also carries new values for some of the layer's params (``state``)."""

    cache: Any
    state: dict


def update_state(params, cache):
    """``params`` with the state entries that the forward that made ``cache`` computed.

    Walks a pipeline's params and caches together (both are tuples with one entry per
    child); leaves every other layer's params as they are.  Nothing is mutated.
    """
    if isinstance(cache, StateUpdate):
        return {**params, **cache.state}
    if isinstance(params, tuple) and isinstance(cache, tuple) and len(params) == len(cache):
        return tuple(update_state(p, c) for p, c in zip(params, cache, strict=True))
    return params


# --------------------------------------------------------------------------- pipeline


def pipeline(*layers: Layer, name: str | None = None) -> Layer:
    """Compose layers left to right into one layer of the same protocol.

    ``params`` and the cache are tuples with one entry per child.  ``init`` threads the
    shapes and gives child ``i`` the ``i``-th spawned child of ``rng``, so the same seed
    always gives the same params.  ``backward`` runs the children in reverse; with
    ``need_dx=False`` only the first child skips its input gradient.
    """
    if not layers:
        raise ValueError("pipeline: needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"pipeline: argument {i} is a {type(layer).__name__}, not a Layer "
                "(did you pass fn.Dense instead of fn.Dense(100)?)"
            )
    label = name or "pipeline(" + ", ".join(layer.name for layer in layers) + ")"

    def where(i: int) -> str:
        # The child's own message already starts with its name.
        return f"{name or 'pipeline'}[{i}]"

    def init(rng, in_shape, dtype=np.float32):
        shape, params = tuple(in_shape), []
        for i, (layer, r) in enumerate(zip(layers, split_rng(rng, len(layers)), strict=True)):
            try:
                shape, p = layer.init(r, shape, dtype=dtype)
            except (ValueError, TypeError) as e:
                raise type(e)(f"{where(i)}: {e}") from e
            params.append(p)
        return shape, tuple(params)

    def forward(params, x, *, train=False, rng=None):
        if not isinstance(params, tuple) or len(params) != len(layers):
            raise ValueError(
                f"{label}: expected a tuple of {len(layers)} params, one per layer, got "
                f"{type(params).__name__}"
                + (f" of length {len(params)}" if isinstance(params, tuple | list) else "")
            )
        caches = []
        for i, (layer, p, r) in enumerate(
            zip(layers, params, split_rng(rng, len(layers)), strict=True)
        ):
            try:
                x, c = layer.forward(p, x, train=train, rng=r)
            except (ValueError, TypeError) as e:
                raise type(e)(f"{where(i)}: {e}") from e
            caches.append(c)
        return x, tuple(caches)

    def backward(cache, dout, *, need_dx=True):
        dparams = [None] * len(layers)
        for i in reversed(range(len(layers))):
            try:
                dparams[i], dout = layers[i].backward(cache[i], dout, need_dx=need_dx or i > 0)
            except (ValueError, TypeError) as e:
                raise type(e)(f"{where(i)}: {e}") from e
        return tuple(dparams), dout

    return Layer(label, init, forward, backward)


# --------------------------------------------------------------------------- helpers


def stateless(name: str, fwd: Callable, bwd: Callable) -> Layer:
    """A parameter-free, shape-preserving layer on floating-point input.

    ``fwd(x) -> (out, cache)`` where ``cache`` is an array of ``out``'s shape (usually
    ``out`` itself), and ``bwd(cache, dout) -> dx``.
    """

    def init(rng, in_shape, dtype=np.float32):
        return tuple(in_shape), ()

    def forward(params, x, *, train=False, rng=None):
        check_no_params(name, params)
        check_float(name, x)
        return fwd(x)

    def backward(cache, dout, *, need_dx=True):
        check_dout(name, dout, cache.shape, cache.dtype)
        return (), (bwd(cache, dout) if need_dx else None)

    return Layer(name, init, forward, backward)


def to_jax(layer: Layer) -> Callable:
    """``apply(params, x) -> out`` as a JAX function whose VJP is the hand-written backward.

    Built with ``jax.custom_vjp``: ``jax.grad``, ``jax.vjp`` and ``jax.jit`` of any JAX
    program that calls ``apply`` use ``layer.backward`` for this layer instead of
    differentiating its forward.
    """
    import jax

    @jax.custom_vjp
    def apply(params, x):
        return layer.forward(params, x)[0]

    def fwd(params, x):
        return layer.forward(params, x)

    def bwd(cache, g):
        return layer.backward(cache, g)

    apply.defvjp(fwd, bwd)
    return apply
