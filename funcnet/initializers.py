"""Weight initializers: ``init(rng, shape, dtype, *, fan_in=None, fan_out=None) -> array``.

``rng`` is an int seed, a tuple seed or a NumPy Generator; the same seed gives the same bits.
Results have ``dtype`` (the book's ``0.01 * np.random.randn(...)`` is float64 and would
silently upcast a float32 network); normal samples are drawn in ``dtype`` directly.
``fan_in``/``fan_out`` default to a Dense weight's ``(in, out)`` layout; a convolution passes
its own (``C_in·kh·kw``, ``C_out·kh·kw``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ._arrays import as_rng

Initializer = Callable[..., np.ndarray]


def _fans(shape, fan_in, fan_out) -> tuple[int, int]:
    if fan_in is None or fan_out is None:
        if len(shape) != 2:  # only a Dense (in, out) weight has an unambiguous layout
            raise ValueError(
                f"initializer: cannot infer fan_in/fan_out of a {len(shape)}-D shape {shape}; "
                "pass fan_in= and fan_out="
            )
        fan_in = shape[0] if fan_in is None else fan_in
        fan_out = shape[-1] if fan_out is None else fan_out
    return int(fan_in), int(fan_out)


def _draw_normal(rng, shape, dtype, std: float) -> np.ndarray:
    return (as_rng(rng).standard_normal(shape, dtype=dtype) * std).astype(dtype, copy=False)


def _gaussian(std_of: Callable[[int, int], float], name: str) -> Initializer:
    def init(rng, shape, dtype=np.float32, *, fan_in=None, fan_out=None):
        return _draw_normal(rng, shape, dtype, std_of(*_fans(shape, fan_in, fan_out)))

    init.__name__ = init.__qualname__ = name
    return init


def _uniform_draw(limit_of: Callable[[int, int], float], name: str) -> Initializer:
    def init(rng, shape, dtype=np.float32, *, fan_in=None, fan_out=None):
        a = limit_of(*_fans(shape, fan_in, fan_out))
        return as_rng(rng).uniform(-a, a, size=shape).astype(dtype)

    init.__name__ = init.__qualname__ = name
    return init


def normal(std: float = 0.01) -> Initializer:
    """N(0, std²), the book's ``weight_init_std * randn``."""
    if not std > 0:
        raise ValueError(f"normal: std must be > 0, got {std}")

    def init(rng, shape, dtype=np.float32, *, fan_in=None, fan_out=None):
        return _draw_normal(rng, shape, dtype, std)

    init.__name__ = init.__qualname__ = f"normal({std})"
    return init


def zeros(rng, shape, dtype=np.float32, *, fan_in=None, fan_out=None):
    """All zeros (biases)."""
    return np.zeros(shape, dtype=dtype)


def lecun_normal() -> Initializer:
    """N(0, 1/fan_in): what the book calls "Xavier" (std = 1/√n)."""
    return _gaussian(lambda fi, fo: math.sqrt(1.0 / fi), "lecun_normal")


def glorot_normal() -> Initializer:
    """Xavier/Glorot normal: N(0, 2/(fan_in + fan_out))."""
    return _gaussian(lambda fi, fo: math.sqrt(2.0 / (fi + fo)), "glorot_normal")


def glorot_uniform() -> Initializer:
    """Xavier/Glorot uniform: U(−a, a), a = √(6/(fan_in + fan_out)), variance 2/(fan_in+fan_out)."""
    return _uniform_draw(lambda fi, fo: math.sqrt(6.0 / (fi + fo)), "glorot_uniform")


def he_normal() -> Initializer:
    """He normal: N(0, 2/fan_in), for ReLU networks."""
    return _gaussian(lambda fi, fo: math.sqrt(2.0 / fi), "he_normal")


def he_uniform() -> Initializer:
    """He uniform: U(−a, a), a = √(6/fan_in), variance 2/fan_in."""
    return _uniform_draw(lambda fi, fo: math.sqrt(6.0 / fi), "he_uniform")


_NAMED = {
    "lecun_normal": lecun_normal,
    "xavier": lecun_normal,
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "he": he_normal,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
}


def get(spec) -> Initializer:
    """An initializer from a callable, a float (normal std) or a name like ``"he"``."""
    if callable(spec):
        return spec
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        return normal(float(spec))
    if isinstance(spec, str) and spec.lower() in _NAMED:
        return _NAMED[spec.lower()]()
    raise ValueError(
        f"unknown initializer {spec!r}: use a callable, a float std, or one of {sorted(_NAMED)}"
    )


__all__ = [
    "get",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "normal",
    "zeros",
]
