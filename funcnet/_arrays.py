"""Array and randomness plumbing shared by every module (private).

One rule tells NumPy from JAX across the package: ``namespace(*arrays) is np``.  JAX is
imported only when a JAX array, key or feature is actually in use, so ``import funcnet``
costs no more than ``import numpy``.
"""

from __future__ import annotations

import functools
import operator
import sys

import numpy as np


def namespace(*arrays):
    """The array namespace (``numpy`` or ``jax.numpy``) shared by ``arrays``.

    Python scalars and lists count as NumPy.  Mixing NumPy and JAX arrays gives JAX, which
    is what ``jnp`` would do with them anyway.
    """
    # Every layer call asks this several times; NumPy arrays answer without a method call.
    for a in arrays:
        if type(a) is np.ndarray:
            continue
        get = getattr(a, "__array_namespace__", None)
        if get is not None:
            ns = get()
            if ns is not np:
                return ns
    return np


# In-place arithmetic on temporaries.  ``iadd(t, b)`` is ``t + b``, written into ``t`` when
# ``t`` is a NumPy array: a kernel passes only a temporary it made itself and nobody else
# holds, so purity is kept while NumPy skips allocating (and page-faulting) a new array per
# operation.  JAX arrays are immutable, and XLA fuses the same expression anyway.


def _inplace(numpy_op, op):
    def run(fresh, other):
        return numpy_op(fresh, other) if type(fresh) is np.ndarray else op(fresh, other)

    return run


iadd = _inplace(operator.iadd, operator.add)
isub = _inplace(operator.isub, operator.sub)
imul = _inplace(operator.imul, operator.mul)
idiv = _inplace(operator.itruediv, operator.truediv)


def zero_outside(x, mask):
    """``x`` where ``mask``, else exactly 0 (NaN and ±inf in ``x`` included), as
    ``where(mask, x, 0)``.

    On NumPy the bits of ``x`` are ANDed with the mask: ``np.where`` on a data-dependent
    mask mispredicts a branch per element (9x slower than a multiply on 10⁶ floats here),
    and ``x * mask`` would turn ``inf * 0`` into NaN.
    """
    if type(x) is np.ndarray and x.dtype.kind == "f" and x.shape == mask.shape:
        # 0 or all ones in one pass: the cast happens inside the ufunc, with no astype pass.
        bits = np.negative(mask, dtype=f"i{x.dtype.itemsize}")
        np.bitwise_and(bits, x.view(bits.dtype), out=bits)
        return bits.view(x.dtype)
    return namespace(x).where(mask, x, 0)


def row_reduce(x, how: str):
    """``x.max(axis=1, keepdims=True)`` (``how="max"``) or ``.sum(...)`` of a 2-D ``x``.

    NumPy reduces a C-contiguous (N, C) array row by row, and with short rows the loop
    around each row costs more than the row: 54 µs for the max of (1000, 10) logits here.
    The transposed copy reduced along its first axis gives the same values in 14 µs (the
    max bit for bit; the sum in another order, within rounding).  Narrow rows only: from
    about 32 columns on the copy costs more than it saves.
    """
    if type(x) is np.ndarray and x.ndim == 2 and x.shape[1] <= 16 and x.shape[0] >= 64:
        return getattr(x.T.copy(), how)(axis=0)[:, None]
    return getattr(x, how)(axis=1, keepdims=True)


def tree_namespace(tree):
    """The namespace of a pytree's leaves (NumPy for an empty tree)."""
    return namespace(*leaves(tree))


def leaves(tree) -> list:
    """The leaves of nested dicts/lists/tuples, without importing JAX."""
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in leaves(tree[key])]
    if isinstance(tree, list | tuple):
        return [leaf for child in tree for leaf in leaves(child)]
    return [] if tree is None else [tree]


def is_concrete(x) -> bool:
    """True when the values of ``x`` can be inspected (not a JAX tracer under jit/grad)."""
    if isinstance(x, np.ndarray | np.generic | int | float):
        return True
    jax = sys.modules.get("jax")
    return jax is None or not isinstance(x, jax.core.Tracer)


def jit_static(fn):
    """``fn(*arrays, **static)`` run as is on NumPy arrays and, on JAX arrays, as one jitted
    program per distinct ``static`` (hashable) configuration.

    Eager JAX would dispatch (and compile) every slice of a kernel separately; under an
    outer ``jit``/``grad`` the inner ``jit`` is simply inlined.
    """
    compiled: dict = {}

    @functools.wraps(fn)
    def run(*arrays, **static):
        if namespace(*arrays) is np:
            return fn(*arrays, **static)
        names = tuple(sorted(static))
        if names not in compiled:
            import jax

            compiled[names] = jax.jit(fn, static_argnames=names)
        return compiled[names](*arrays, **static)

    return run


# --------------------------------------------------------------------------- randomness


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


def uniform01(rng, shape, dtype, xp):
    """U[0, 1) samples of ``shape`` in ``dtype`` from a seed, a Generator or a JAX key."""
    if is_numpy_rng(rng):
        return xp.asarray(as_rng(rng).random(shape, dtype=np.dtype(dtype)))
    import jax

    return jax.random.uniform(rng, shape, dtype=dtype)
