"""Data augmentation: pure functions of randomness and a batch of images.

An augmentation is ``augment(rng, x) -> x'`` with ``x`` of shape (N, C, H, W) or (N, H, W).
``rng`` is a NumPy seed, seed tuple or Generator (then ``x`` is NumPy) or a JAX key (then it
runs under ``jit``, inside the compiled step): the same rng always gives the same images.
``train.make_step(..., augment=...)`` applies it to every training batch.
"""

from __future__ import annotations

from collections.abc import Callable

from ._arrays import as_rng, is_numpy_rng, namespace


def random_shift(max_shift: int = 2) -> Callable:
    """``augment(rng, x)``: each image moved by its own integer (dy, dx), drawn uniformly
    from [−s, s]², s = ``max_shift``; what moves out is dropped and the uncovered border is
    0 (MNIST's background).  out[n, :, r, c] = x[n, :, r − dy_n, c − dx_n], or 0 outside."""
    if not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"random_shift: max_shift must be an int >= 0, got {max_shift!r}")
    s = max_shift

    def augment(rng, x):
        if x.ndim not in (3, 4):
            raise ValueError(
                f"random_shift: expected images (N, H, W) or (N, C, H, W), got shape "
                f"{tuple(x.shape)}; flat rows must be reshaped to images first"
            )
        if s == 0:
            return x
        n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        if is_numpy_rng(rng):
            shifts = namespace(x).asarray(as_rng(rng).integers(-s, s + 1, (n, 2)))
        else:
            import jax

            shifts = jax.random.randint(rng, (n, 2), -s, s + 1)
        xp = namespace(x, shifts)
        lead = (1,) * (x.ndim - 3)  # the channel axis, if any, broadcasts
        padded = xp.pad(x, [(0, 0)] * (x.ndim - 2) + [(s, s), (s, s)])
        # Padded row index of output row r is r − dy + s (in [0, H + 2s)), same for columns.
        rows = xp.arange(h)[None, :] + (s - shifts[:, :1])
        cols = xp.arange(w)[None, :] + (s - shifts[:, 1:])
        picked = xp.take_along_axis(padded, xp.reshape(rows, (n, *lead, h, 1)), axis=-2)
        return xp.take_along_axis(picked, xp.reshape(cols, (n, *lead, 1, w)), axis=-1)

    return augment


__all__ = ["random_shift"]
