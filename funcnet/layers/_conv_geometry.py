"""The geometry of convolution and pooling in NCHW layout (private; ``conv`` and every set of
kernels import it, and it imports none of them).

A ``kh×kw`` window slides with stride ``(sh, sw)`` over the input padded by ``(ph, pw)`` on
each side, so the padded input is (N, C, H + 2·ph, W + 2·pw) and

    OH = (H + 2·ph − kh) / sh + 1,   OW = (W + 2·pw − kw) / sw + 1,

with the division exact.  Kernel offset (i, j) reads, in every window at once, the strided
slice ``window(x_pad, i, j)``; offsets run row-major, k = i·kw + j.
"""

from __future__ import annotations

import numpy as np

from .._arrays import namespace
from .._checks import shape_str


def pair(name: str, what: str, value, minimum: int) -> tuple[int, int]:
    """``value`` (an int or a pair of ints, each >= ``minimum``) as a pair, or a ValueError
    naming the layer ``name`` and the argument ``what``."""

    def is_int(v) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if is_int(value):
        result = (int(value), int(value))
    elif isinstance(value, tuple | list) and len(value) == 2 and all(map(is_int, value)):
        result = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name}: {what} must be an int or a pair of ints, got {value!r}")
    if min(result) < minimum:
        raise ValueError(f"{name}: {what} must be >= {minimum}, got {value!r}")
    return result


def padded_shape(shape, padding) -> tuple[int, int, int, int]:
    """(N, C, H + 2·ph, W + 2·pw) of an (N, C, H, W) ``shape`` padded by ``padding``."""
    n, c, h, w = shape
    ph, pw = padding
    return (n, c, h + 2 * ph, w + 2 * pw)


def out_hw(name: str, hw, kernel, stride, padding) -> tuple[int, int]:
    """(OH, OW), or a ValueError naming the sizes when the windows do not tile the input."""
    (h, w), (kh, kw) = hw, kernel
    hp, wp = padded_shape((0, 0, h, w), padding)[2:]
    if hp < kh or wp < kw:
        raise ValueError(
            f"{name}: kernel {kh}x{kw} is larger than the padded input {hp}x{wp} "
            f"(input {h}x{w}, padding {padding[0]},{padding[1]})"
        )
    out = []
    for axis, n, k, s, p in zip(("height", "width"), hw, kernel, stride, padding, strict=True):
        span = n + 2 * p - k
        if span % s:
            raise ValueError(
                f"{name}: input {axis} {n} does not tile: ({n} + 2·{p} − {k}) = {span} is not "
                f"divisible by stride {s}; change the padding or the stride, or crop the input"
            )
        out.append(span // s + 1)
    return out[0], out[1]


def in_nchw(name: str, in_shape) -> tuple[int, int, int, int]:
    """``in_shape`` as (N, C, H, W) with C, H, W >= 1, or a ValueError naming the layer."""
    in_shape = tuple(in_shape)
    if len(in_shape) != 4 or min(in_shape[1:]) < 1:
        raise ValueError(f"{name}: expected an input shape (N, C, H, W), got {shape_str(in_shape)}")
    return in_shape


def pad(x, padding, value=0.0):
    """Pad the two spatial axes of (N, C, H, W) by ``padding`` = (ph, pw) on each side."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return namespace(x).pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def crop(dx_pad, hw, padding):
    """The inverse of ``pad``: the (H, W) interior of a padded gradient."""
    (h, w), (ph, pw) = hw, padding
    return dx_pad[:, :, ph : ph + h, pw : pw + w]


def window(x_pad, i: int, j: int, stride, out_hw):
    """The (N, C, OH, OW) slice of ``x_pad`` seen by kernel offset (i, j) in every window."""
    (sh, sw), (oh, ow) = stride, out_hw
    return x_pad[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]


def offsets(kernel) -> list[tuple[int, int]]:
    """The kernel offsets (i, j) in row-major order: k = i·kw + j."""
    kh, kw = kernel
    return [(i, j) for i in range(kh) for j in range(kw)]


def tiles(padded, kernel, stride, out_hw) -> bool:
    """Whether the windows tile the ``padded`` shape with no overlap and no gap (stride =
    kernel): then every element is in exactly one ``window``."""
    (kh, kw), (oh, ow) = kernel, out_hw
    return tuple(stride) == tuple(kernel) and tuple(padded[2:]) == (oh * kh, ow * kw)
