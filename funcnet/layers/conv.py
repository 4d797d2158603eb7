"""Convolution and pooling in NCHW layout: ``Conv``, ``MaxPool`` and ``AvgPool`` (chapter 7).

Every layer slides a ``kh×kw`` window with stride ``(sh, sw)`` over the input zero-padded by
``(ph, pw)`` on each side (max-pooling pads with −inf), giving

    OH = (H + 2·ph − kh) / sh + 1,   OW = (W + 2·pw − kw) / sw + 1.

The division must be exact: a window position that would leave rows or columns of the input
unused is a ValueError naming the sizes, never a silent crop.

This module is the reference, as ``docs/conv.md`` teaches it: ``im2col`` stacks the
``kh·kw`` strided slices ``window(x_pad, i, j)``, one per kernel offset; ``col2im`` adds
slices back at the same offsets.  The kernels below use only slicing, ``stack``, ``pad``,
``where`` and ``@``, so they run on NumPy and on ``jax.numpy`` (traced by ``jax.grad``,
compiled by ``jax.jit``); JAX arrays take them.  NumPy arrays take the faster, bounded-
memory kernels of ``_conv_fast``, which the tests check against these.
"""

from __future__ import annotations

import numpy as np

from .. import initializers
from .._arrays import jit_static, namespace
from .._checks import (
    check_dout,
    check_dtype,
    check_float,
    check_ndim,
    check_no_params,
    shape_str,
)
from ..core import Layer
from . import _conv_fast as fast
from . import _conv_xla as xla

# --------------------------------------------------------------------------- geometry


def _pair(name: str, what: str, value, minimum: int) -> tuple[int, int]:
    def is_int(v) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, tuple | list) and len(value) == 2 and all(map(is_int, value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name}: {what} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name}: {what} must be >= {minimum}, got {value!r}")
    return pair


def _out_hw(name: str, hw, kernel, stride, padding) -> tuple[int, int]:
    """(OH, OW), or a ValueError naming the sizes when the windows do not tile the input."""
    (h, w), (kh, kw), (ph, pw) = hw, kernel, padding
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise ValueError(
            f"{name}: kernel {kh}x{kw} is larger than the padded input "
            f"{h + 2 * ph}x{w + 2 * pw} (input {h}x{w}, padding {ph},{pw})"
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


def _in_nchw(name: str, in_shape) -> tuple[int, int, int, int]:
    in_shape = tuple(in_shape)
    if len(in_shape) != 4 or min(in_shape[1:]) < 1:
        raise ValueError(f"{name}: expected an input shape (N, C, H, W), got {shape_str(in_shape)}")
    return in_shape


def _check_nchw(name: str, x, dtype=None) -> None:
    if dtype is None:
        check_float(name, x)
    else:
        check_dtype(name, x, dtype)
    check_ndim(name, x, 4, "input (N, C, H, W)")


def _layer_name(kind: str, *args, **opts) -> str:
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in opts.items() if v is not None]
    return f"{kind}({', '.join(shown)})"


def _positive_int(name: str, what: str, value) -> int:
    if not (isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"{name}: {what} must be a positive int, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- im2col / col2im


def pad(x, padding, value=0.0):
    """Pad the two spatial axes of (N, C, H, W) by ``padding`` = (ph, pw) on each side."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return namespace(x).pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def window(x_pad, i: int, j: int, stride, out_hw):
    """The (N, C, OH, OW) slice of ``x_pad`` seen by kernel offset (i, j) in every window."""
    (sh, sw), (oh, ow) = stride, out_hw
    return x_pad[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]


def offsets(kernel) -> list[tuple[int, int]]:
    """The kernel offsets (i, j) in row-major order: k = i·kw + j."""
    kh, kw = kernel
    return [(i, j) for i in range(kh) for j in range(kw)]


def im2col(x_pad, kernel, stride, out_hw):
    """(N, C, Hp, Wp) → cols (N, C·kh·kw, OH·OW), rows ordered (c, i, j) like
    ``W.reshape(C_out, -1)``.  Size N·OH·OW·C·kh·kw·itemsize bytes."""
    n, c = x_pad.shape[:2]
    parts = [window(x_pad, i, j, stride, out_hw) for i, j in offsets(kernel)]
    stacked = namespace(x_pad).stack(parts, axis=2)
    return stacked.reshape(n, c * kernel[0] * kernel[1], out_hw[0] * out_hw[1])


def tiles(padded_shape, kernel, stride, out_hw) -> bool:
    """Whether the windows tile the padded input with no overlap and no gap (stride = kernel):
    then every element is in exactly one ``window``."""
    (kh, kw), (oh, ow) = kernel, out_hw
    return tuple(stride) == tuple(kernel) and tuple(padded_shape[2:]) == (oh * kh, ow * kw)


def col2im(part, padded_shape, kernel, stride, out_hw):
    """Σ over kernel offsets (i, j) of ``part(i, j)`` (N, C, OH, OW) added back at the
    positions ``window(·, i, j)`` read: the adjoint of the window gather, as a pure sum of
    padded slices (stride − 1 zeros interleaved first when the stride is above 1).

    When the windows tile the input the sum has one term per position, and the adjoint is a
    permutation: the parts stacked as (kh, kw, N, C, OH, OW) and moved to (N, C, OH, kh, OW,
    kw).  A pooling layer's jitted forward and backward runs 2-3x faster so on the CPU than
    with the padded sum; inside a whole jitted training step XLA fuses this part with its
    neighbours either way, and the step takes as long (benchmarks/NOTES.md)."""
    (sh, sw), (oh, ow) = stride, out_hw
    n, c, hp, wp = padded_shape
    if tiles(padded_shape, kernel, stride, out_hw):
        kh, kw = kernel
        parts = [part(i, j) for i, j in offsets(kernel)]
        parts = namespace(*parts).stack(parts)
        moved = parts.reshape(kh, kw, n, c, oh, ow).transpose(2, 3, 4, 0, 5, 1)
        return moved.reshape(n, c, hp, wp)
    dh, dw = sh * (oh - 1) + 1, sw * (ow - 1) + 1
    total = None
    for i, j in offsets(kernel):
        p = part(i, j)
        xp = namespace(p)
        if sh > 1 or sw > 1:
            # Interleave stride−1 zeros between elements: pad two new unit axes, fold them in.
            p = xp.pad(
                p.reshape(n, c, oh, 1, ow, 1), ((0, 0),) * 3 + ((0, sh - 1), (0, 0), (0, sw - 1))
            )
            p = p.reshape(n, c, oh * sh, ow * sw)[:, :, :dh, :dw]
        p = xp.pad(p, ((0, 0), (0, 0), (i, hp - i - dh), (j, wp - j - dw)))
        total = p if total is None else total + p
    return total


def crop(dx_pad, hw, padding):
    """The inverse of ``pad``: the (H, W) interior of a padded gradient."""
    (h, w), (ph, pw) = hw, padding
    return dx_pad[:, :, ph : ph + h, pw : pw + w]


# --------------------------------------------------------------------------- reference kernels


@jit_static
def conv_forward(x, W, b, *, kernel, stride, padding, out_hw):
    """y = W₂·cols (+ b); returns (y, cols)."""
    n, f = x.shape[0], W.shape[0]
    cols = im2col(pad(x, padding), kernel, stride, out_hw)
    # (C_out, K) @ (N, K, P) is one BLAS call per sample and lands directly in NCHW.
    out = (W.reshape(f, -1) @ cols).reshape(n, f, *out_hw)
    return (out if b is None else out + b.reshape(1, f, 1, 1)), cols


@jit_static
def conv_backward(cols, W, dout, *, kernel, stride, padding, in_hw, bias, need_dx):
    """dW₂ = Σ_n dy·colsᵀ, db = Σ dy, dx = crop(col2im(W₂ᵀ·dy))."""
    n, f = dout.shape[:2]
    out_hw = tuple(dout.shape[2:])
    d = dout.reshape(n, f, -1)
    db = dout.sum(axis=(0, 2, 3)) if bias else None
    # Per-sample (C_out, K) products summed over N: no transposed copy of cols is made.
    dW = (d @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(W.shape)
    if not need_dx:
        return dW, db, None
    c = W.shape[1]
    dcols = (W.reshape(f, -1).T @ d).reshape(n, c, *kernel, *out_hw)
    padded = (n, c, in_hw[0] + 2 * padding[0], in_hw[1] + 2 * padding[1])
    dx = col2im(lambda i, j: dcols[:, :, i, j], padded, kernel, stride, out_hw)
    return dW, db, crop(dx, in_hw, padding)


@jit_static
def maxpool_forward(x, *, kernel, stride, padding, out_hw):
    """The window max and ``arg``, the first offset k = i·kw + j holding it."""
    xp = namespace(x)
    x_pad = pad(x, padding, -xp.inf)
    best = window(x_pad, 0, 0, stride, out_hw)
    arg = xp.zeros(best.shape, dtype=xp.int32)
    for k, (i, j) in enumerate(offsets(kernel)[1:], start=1):
        s = window(x_pad, i, j, stride, out_hw)
        # Strict ">" keeps the earlier offset on a tie; jax.vjp of this same ``where``
        # routes the gradient the same way, so the reference agrees on ties too.
        better = s > best
        best = xp.where(better, s, best)
        arg = xp.where(better, k, arg)
    return best, arg


@jit_static
def maxpool_backward(arg, dout, *, kernel, stride, padding, in_hw):
    """Each dy goes to the offset ``arg`` that won its window."""
    n, c, oh, ow = dout.shape
    padded = (n, c, in_hw[0] + 2 * padding[0], in_hw[1] + 2 * padding[1])
    xp = namespace(dout)

    def routed(i, j):
        return xp.where(arg == i * kernel[1] + j, dout, 0)

    return crop(col2im(routed, padded, kernel, stride, (oh, ow)), in_hw, padding)


@jit_static
def avgpool_forward(x, *, kernel, stride, padding, out_hw):
    x_pad = pad(x, padding)
    total = None
    for i, j in offsets(kernel):
        s = window(x_pad, i, j, stride, out_hw)
        total = s if total is None else total + s
    return total / (kernel[0] * kernel[1])


@jit_static
def avgpool_backward(dout, *, kernel, stride, padding, in_hw):
    n, c, oh, ow = dout.shape
    padded = (n, c, in_hw[0] + 2 * padding[0], in_hw[1] + 2 * padding[1])
    share = dout / (kernel[0] * kernel[1])
    return crop(col2im(lambda i, j: share, padded, kernel, stride, (oh, ow)), in_hw, padding)


# --------------------------------------------------------------------------- Conv


ALGORITHMS = ("auto", "im2col", "xla")

# On the CPU, XLA's convolution (forward and backward) wins from about 6 input channels on;
# with fewer, its kernels run slower than im2col's product (benchmarks/NOTES.md has them).
XLA_MIN_CHANNELS = 8


def jax_algorithm(algorithm: str, x_shape) -> str:
    """The kernels a Conv runs on JAX arrays of ``x_shape``: ``algorithm``, with "auto"
    resolved by JAX's default backend (the one a traced program compiles for) and, on the
    CPU, by the input channels."""
    if algorithm != "auto":
        return algorithm
    import jax

    if jax.default_backend() != "cpu":
        return "xla"
    return "xla" if x_shape[1] >= XLA_MIN_CHANNELS else "im2col"


def Conv(
    out_channels: int,
    kernel_size,
    *,
    stride=1,
    padding=0,
    bias: bool = True,
    W_init="he_normal",
    algorithm: str = "auto",
    name: str | None = None,
) -> Layer:
    """2-D convolution (cross-correlation, as in the book), NCHW, W (C_out, C_in, kh, kw).

    y[n,f,p,q] = b[f] + Σ_{c,i,j} W[f,c,i,j]·x_pad[n, c, sh·p + i, sw·q + j].
    With cols = im2col(x) and W₂ = W.reshape(C_out, −1): y = W₂·cols, ∂L/∂W₂ = Σ_n ∂L/∂y·colsᵀ,
    ∂L/∂b = Σ_{n,p,q} ∂L/∂y, ∂L/∂x = col2im(W₂ᵀ·∂L/∂y).  ``W_init`` gets
    fan_in = C_in·kh·kw and fan_out = C_out·kh·kw (He normal by default).  On NumPy, im2col
    is formed a few samples at a time, and with 8 or more input channels ∂L/∂x is computed
    as convolutions of ∂L/∂y, one per phase of the stride (see ``docs/conv.md``).

    ``algorithm`` picks the kernels JAX arrays run: ``"im2col"`` (this module's), ``"xla"``
    (``lax.conv_general_dilated`` with the backward written as two convolutions, in
    ``_conv_xla``) or ``"auto"``: XLA's on a GPU or TPU; on the CPU XLA's from 8 input
    channels, else im2col, the faster there (``jax_algorithm``, ``docs/conv.md``).  NumPy
    arrays always run the NumPy kernels.
    """
    name = name or _layer_name(
        "Conv",
        out_channels,
        kernel_size,
        stride=None if stride == 1 else stride,
        padding=None if padding == 0 else padding,
        bias=None if bias else False,
        algorithm=None if algorithm == "auto" else algorithm,
    )
    out_channels = _positive_int(name, "out_channels", out_channels)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{name}: algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    cfg = {
        "kernel": _pair(name, "kernel_size", kernel_size, 1),
        "stride": _pair(name, "stride", stride, 1),
        "padding": _pair(name, "padding", padding, 0),
    }
    kh, kw = cfg["kernel"]
    w_init = initializers.get(W_init)
    keys = {"W", "b"} if bias else {"W"}

    def init(rng, in_shape, dtype=np.float32):
        n, c, h, w = _in_nchw(name, in_shape)
        oh, ow = _out_hw(name, (h, w), cfg["kernel"], cfg["stride"], cfg["padding"])
        shape = (out_channels, c, kh, kw)
        params = {
            "W": w_init(rng, shape, dtype, fan_in=c * kh * kw, fan_out=out_channels * kh * kw)
        }
        if bias:
            params["b"] = initializers.zeros(rng, (out_channels,), dtype)
        return (n, out_channels, oh, ow), params

    def unpack(params):
        if not isinstance(params, dict) or set(params) != keys:
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"{name}: expected params with keys {sorted(keys)}, got {got}")
        W, b = params["W"], params.get("b")
        shape = tuple(getattr(W, "shape", ()))
        if len(shape) != 4 or shape[0] != out_channels or shape[2:] != (kh, kw):
            raise ValueError(
                f"{name}: expected W of shape ({out_channels}, C_in, {kh}, {kw}), got {shape}"
            )
        if b is not None:
            check_dtype(name, b, W.dtype, "b")
            if tuple(b.shape) != (out_channels,):
                raise ValueError(
                    f"{name}: expected b of shape ({out_channels},), got {tuple(b.shape)}"
                )
        return W, b

    def out_hw_of(x):
        return _out_hw(name, tuple(x.shape[2:]), cfg["kernel"], cfg["stride"], cfg["padding"])

    def forward(params, x, *, train=False, rng=None):
        W, b = unpack(params)
        _check_nchw(name, x, W.dtype)
        if x.shape[1] != W.shape[1]:
            raise ValueError(
                f"{name}: input has {x.shape[1]} channels but W {tuple(W.shape)} expects "
                f"{W.shape[1]}"
            )
        out_hw = out_hw_of(x)
        if namespace(x, W) is np:
            out, cols = fast.conv_forward(x, W, b, out_hw=out_hw, **cfg), None
        elif jax_algorithm(algorithm, x.shape) == "xla":
            out, cols = xla.conv_forward(x, W, b, out_hw=out_hw, **cfg), None
        else:
            out, cols = conv_forward(x, W, b, out_hw=out_hw, **cfg)
        # NumPy and XLA keep only x (a reference, no copy); NumPy gathers cols again.
        return out, (x, cols, W)

    def backward(cache, dout, *, need_dx=True):
        x, cols, W = cache
        check_dout(name, dout, (x.shape[0], out_channels, *out_hw_of(x)), x.dtype)
        opts = dict(in_hw=tuple(x.shape[2:]), bias=bias, need_dx=bool(need_dx), **cfg)
        if namespace(dout, W) is np:
            dW, db, dx = fast.conv_backward(x, W, dout, **opts)
        elif jax_algorithm(algorithm, x.shape) == "xla":
            dW, db, dx = xla.conv_backward(x, W, dout, **opts)
        else:
            if cols is None:  # a NumPy forward, a JAX dout: gather what NumPy did not keep
                cols = im2col(pad(x, cfg["padding"]), cfg["kernel"], cfg["stride"], dout.shape[2:])
            dW, db, dx = conv_backward(cols, W, dout, **opts)
        return ({"W": dW, "b": db} if bias else {"W": dW}), dx

    return Layer(name, init, forward, backward)


# --------------------------------------------------------------------------- pooling


def _pool_layer(kind, size, stride, padding, name, fwd, bwd) -> Layer:
    """A parameter-free pooling layer.  ``fwd(x, **cfg)`` returns (out, extra cache
    arrays) and ``bwd(*extra, dout, **cfg)`` the input gradient; each picks its own path
    by the arrays' namespace."""
    name = name or _layer_name(kind, size, stride=stride, padding=None if padding == 0 else padding)
    kernel = _pair(name, "size", size, 1)
    cfg = {
        "kernel": kernel,
        "stride": kernel if stride is None else _pair(name, "stride", stride, 1),
        "padding": _pair(name, "padding", padding, 0),
    }
    if cfg["padding"][0] >= kernel[0] or cfg["padding"][1] >= kernel[1]:
        # Otherwise a window could hold only padding and have no input to take from.
        raise ValueError(
            f"{name}: padding {cfg['padding']} must be smaller than the window {kernel}"
        )

    def out_hw_of(hw):
        return _out_hw(name, tuple(hw), cfg["kernel"], cfg["stride"], cfg["padding"])

    def init(rng, in_shape, dtype=np.float32):
        n, c, h, w = _in_nchw(name, in_shape)
        return (n, c, *out_hw_of((h, w))), ()

    def forward(params, x, *, train=False, rng=None):
        check_no_params(name, params)
        _check_nchw(name, x)
        out, extra = fwd(x, out_hw=out_hw_of(x.shape[2:]), **cfg)
        return out, (x, *extra)

    def backward(cache, dout, *, need_dx=True):
        x, *rest = cache
        check_dout(name, dout, (*x.shape[:2], *out_hw_of(x.shape[2:])), x.dtype)
        if not need_dx:
            return (), None
        return (), bwd(*rest, dout, in_hw=tuple(x.shape[2:]), **cfg)

    return Layer(name, init, forward, backward)


def _maxpool_fwd(x, **cfg):
    if namespace(x) is np:
        return fast.maxpool_forward(x, **cfg)
    best, arg = maxpool_forward(x, **cfg)
    return best, (arg,)


def _maxpool_bwd(arg, dout, **cfg):
    if namespace(dout) is np:
        return fast.maxpool_backward(arg, dout, **cfg)
    return maxpool_backward(arg, dout, **cfg)


def _avgpool_fwd(x, **cfg):
    if namespace(x) is np:
        return fast.avgpool_forward(x, **cfg), ()
    return avgpool_forward(x, **cfg), ()


def _avgpool_bwd(dout, **cfg):
    if namespace(dout) is np:
        return fast.avgpool_backward(dout, **cfg)
    return avgpool_backward(dout, **cfg)


def MaxPool(size, stride=None, padding=0, *, name: str | None = None) -> Layer:
    """y[n,c,p,q] = max_{i,j} x_pad[n, c, sh·p + i, sw·q + j], padding with −inf.

    ∂L/∂x routes each ∂L/∂y to the element that won its window (summed where windows
    overlap).  Ties: the FIRST maximal element in row-major window order (smallest i, then
    smallest j) takes the whole gradient.  ``stride`` defaults to ``size``; ``padding`` must
    be smaller than ``size``, so padding never wins.
    """
    return _pool_layer("MaxPool", size, stride, padding, name, _maxpool_fwd, _maxpool_bwd)


def AvgPool(size, stride=None, padding=0, *, name: str | None = None) -> Layer:
    """y[n,c,p,q] = (1/(kh·kw)) Σ_{i,j} x_pad[n, c, sh·p + i, sw·q + j], zero padding.

    Padded zeros count in the average (count_include_pad): every window divides by kh·kw.
    ∂L/∂x spreads ∂L/∂y/(kh·kw) over each window (summed where windows overlap).
    ``stride`` defaults to ``size``; ``padding`` must be smaller than ``size``.
    """
    return _pool_layer("AvgPool", size, stride, padding, name, _avgpool_fwd, _avgpool_bwd)


__all__ = [
    "AvgPool",
    "Conv",
    "MaxPool",
    "avgpool_backward",
    "avgpool_forward",
    "col2im",
    "conv_backward",
    "conv_forward",
    "crop",
    "im2col",
    "jax_algorithm",
    "maxpool_backward",
    "maxpool_forward",
    "offsets",
    "pad",
    "tiles",
    "window",
]
