"""Validation helpers every layer and loss shares (private).

Each raises a ``ValueError`` (shape, value) or ``TypeError`` (dtype) whose message starts
with the layer's name and says what was expected and what came; nothing is ever silently
cast, broadcast or cropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._arrays import is_concrete, namespace


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
    if getattr(dtype, "kind", None) == "f":  # the common case, without issubdtype's cost
        return
    if dtype is None or not np.issubdtype(np.dtype(dtype), np.floating):
        got = dtype if dtype is not None else type(x).__name__
        raise TypeError(
            f"{name}: expected a floating-point {what} array, got {got}; "
            "cast it first (e.g. x.astype(np.float32))"
        )


def check_dtype(name: str, x, dtype, what: str = "input") -> None:
    """Raise a TypeError if ``x`` does not have the params' dtype (no silent up/down-cast)."""
    check_float(name, x, what)
    if x.dtype != dtype and np.dtype(x.dtype) != np.dtype(dtype):
        raise TypeError(
            f"{name}: {what} dtype {np.dtype(x.dtype)} does not match the params dtype "
            f"{np.dtype(dtype)}; cast one of them (funcnet never converts silently)"
        )


def check_dout(name: str, dout, shape, dtype) -> None:
    """Raise if ``dout`` does not have exactly the forward output's ``shape`` and ``dtype``:
    no silent broadcasting or upcasting in a backward."""
    if tuple(dout.shape) != tuple(shape):
        raise ValueError(
            f"{name}: backward expected dout of shape {tuple(shape)}, got {tuple(dout.shape)}"
        )
    if dout.dtype != dtype and np.dtype(dout.dtype) != np.dtype(dtype):
        raise TypeError(
            f"{name}: backward expected dout of dtype {np.dtype(dtype)}, got "
            f"{np.dtype(dout.dtype)} (funcnet never converts silently)"
        )


def check_no_params(name: str, params) -> None:
    """Raise if a parameter-free layer is handed params (likely a misaligned pipeline)."""
    if not (params is None or (isinstance(params, tuple | dict) and len(params) == 0)):
        raise ValueError(f"{name}: takes no params, got {type(params).__name__}")


class NonFiniteError(ValueError):
    """A NaN or inf where a finite value is needed (in training: a diverged step)."""


def check_finite(name: str, x, what: str = "input") -> None:
    """Raise a ValueError naming the layer if a concrete ``x`` holds NaN or inf."""
    if is_concrete(x):
        xp = namespace(x)
        finite = xp.all(xp.isfinite(x))
        # A JAX array a jitted function captured is concrete, but not what the trace computes
        # from it: the check runs only where that result is.
        if is_concrete(finite) and not bool(finite):
            bad = int(xp.sum(~xp.isfinite(x)))
            raise NonFiniteError(f"{name}: {what} contains {bad} non-finite value(s) (NaN or inf)")


def non_finite_in(a, name: str) -> str | None:
    """Where the array ``a`` (called ``name``) first holds NaN or inf, in words: ``"x[7, 3]
    is nan (2 non-finite values)"``; None when all of it is finite or it is not a floating
    array.  One pass (min and max, which NaN and inf reach); the rest only when one is bad."""
    a = np.asarray(a)
    if a.dtype.kind not in "fc" or a.size == 0:
        return None
    if np.isfinite(a.min()) and np.isfinite(a.max()):
        return None
    bad = ~np.isfinite(a)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    where = f"{name}[{', '.join(map(str, first))}]" if first else name
    return f"{where} is {a[first]} ({int(bad.sum())} non-finite value(s))"


def first_non_finite(tree, name: str = "params") -> str | None:
    """The first leaf of a params tree that holds NaN or inf, named by its path as
    checkpoints name it (``params[0]['W'][3, 7] is nan (...)``); None when every leaf is
    finite."""
    import jax

    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if found := non_finite_in(leaf, name + jax.tree_util.keystr(path)):
            return found
    return None


def unusable_params(path, params, use: str) -> str | None:
    """Why the params loaded from ``path`` cannot be put to ``use`` ("score", "sample"): a
    NaN or inf leaf (NaN weights predict one class everywhere, a score of nothing
    trained); None when every leaf is finite."""
    if bad := first_non_finite(params):
        return f"{path}: {bad}: not a model to {use} (saved from a diverged run?)"
    return None
