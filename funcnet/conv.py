"""Convolution and pooling in NCHW layout: ``Conv``, ``MaxPool`` and ``AvgPool`` (chapter 7).

Every layer slides a ``kh×kw`` window with stride ``(sh, sw)`` over the input zero-padded by
``(ph, pw)`` on each side (max-pooling pads with −inf), giving

    OH = (H + 2·ph − kh) / sh + 1,   OW = (W + 2·pw − kw) / sw + 1.

The division must be exact: a window position that would leave rows or columns of the input
unused is a ValueError naming the sizes, never a silent crop.

The windows are gathered as ``kh·kw`` strided slices of the padded input, one per kernel
offset (i, j): ``x_pad[:, :, i : i + sh·(OH−1) + 1 : sh, j : …]``, each of shape
``(N, C, OH, OW)``.  Stacked, they are the im2col matrix; summed back at the same offsets,
they are col2im.  Only slicing, ``stack``, ``pad``, ``where`` and ``@`` are used, so the
same code runs on NumPy and, under ``jax.jit``/``jax.grad``, on ``jax.numpy``.  See
``docs/conv.md`` for the math.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import initializers
from .core import (
    Layer,
    check_dout,
    check_dtype,
    check_float,
    check_ndim,
    check_no_params,
    namespace,
    shape_str,
)

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


def _check_input(name: str, x, dtype=None) -> None:
    if dtype is None:
        check_float(name, x)
    else:
        check_dtype(name, x, dtype)
    check_ndim(name, x, 4, "input (N, C, H, W)")


# --------------------------------------------------------------------------- im2col / col2im


def _pad(xp, x, padding, value=0.0):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _window(x_pad, i: int, j: int, stride, out_hw):
    """The (N, C, OH, OW) slice of ``x_pad`` seen by kernel offset (i, j) in every window."""
    (sh, sw), (oh, ow) = stride, out_hw
    return x_pad[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]


def _offsets(kernel):
    kh, kw = kernel
    return [(i, j) for i in range(kh) for j in range(kw)]


def _im2col(xp, x_pad, kernel, stride, out_hw):
    """(N, C, Hp, Wp) → cols (N, C·kh·kw, OH·OW), rows ordered (c, i, j) like
    ``W.reshape(C_out, -1)``.  Size N·OH·OW·C·kh·kw·itemsize bytes."""
    n, c = x_pad.shape[:2]
    parts = [_window(x_pad, i, j, stride, out_hw) for i, j in _offsets(kernel)]
    return xp.stack(parts, axis=2).reshape(n, c * kernel[0] * kernel[1], out_hw[0] * out_hw[1])


def _col2im(xp, part, padded_shape, kernel, stride, out_hw):
    """Σ over kernel offsets (i, j) of ``part(i, j)`` (N, C, OH, OW) added back at the
    positions ``_window(·, i, j)`` read: the adjoint of the window gather."""
    if xp is np:
        # A fresh local buffer: accumulating in place is safe and avoids kh·kw full-size
        # temporaries.  Only NumPy takes this path; traced JAX code takes the pure one below.
        dx = None
        for i, j in _offsets(kernel):
            p = part(i, j)
            if dx is None:
                dx = np.zeros(padded_shape, dtype=p.dtype)
            _window(dx, i, j, stride, out_hw)[...] += p
        return dx

    (sh, sw), (oh, ow) = stride, out_hw
    n, c, hp, wp = padded_shape
    dh, dw = sh * (oh - 1) + 1, sw * (ow - 1) + 1
    total = None
    for i, j in _offsets(kernel):
        p = part(i, j)
        if sh > 1 or sw > 1:
            # Interleave stride−1 zeros between elements: pad two new unit axes, fold them in.
            p = xp.pad(
                p.reshape(n, c, oh, 1, ow, 1), ((0, 0),) * 3 + ((0, sh - 1), (0, 0), (0, sw - 1))
            )
            p = p.reshape(n, c, oh * sh, ow * sw)[:, :, :dh, :dw]
        p = xp.pad(p, ((0, 0), (0, 0), (i, hp - i - dh), (j, wp - j - dw)))
        total = p if total is None else total + p
    return total


def _crop(dx_pad, hw, padding):
    (h, w), (ph, pw) = hw, padding
    return dx_pad[:, :, ph : ph + h, pw : pw + w]


# --------------------------------------------------------------------------- kernels

# The array work of each layer, as functions of arrays and static configuration only.  On
# NumPy they run as written.  On JAX arrays outside any trace, op-by-op dispatch would
# compile each of the kh·kw slices separately, so they run as one jitted program per
# configuration (under an outer jit/grad the inner jit is simply inlined).


def _kernel(fn):
    jitted: dict = {}

    @functools.wraps(fn)
    def run(xp, *arrays, **static):
        if xp is np or not getattr(xp, "__name__", "").startswith("jax"):
            return fn(xp, *arrays, **static)
        key = (xp, tuple(sorted(static.items())))
        if key not in jitted:
            import jax

            jitted[key] = jax.jit(functools.partial(fn, xp, **static))
        return jitted[key](*arrays)

    return run


# From this many input channels on, Conv's backward forms dcols one kernel offset at a time
# (measured on 2 cores: equal at 8 channels, 1.2-1.6x faster at 16-64, 3x slower at 1).
DX_BY_OFFSET_MIN_CHANNELS = 8

# On NumPy, Conv forms im2col for as many samples at a time as fit in this many bytes (at
# least one sample).  Its memory is then bounded whatever the batch, and chunks of this size
# are recycled by the allocator, where one large buffer is mapped and page-faulted afresh on
# every call: at 64->64 channels, 32x32, 3x3, batch 64 (151 MB of im2col), a forward+backward
# took about 190 ms on 2 cores against 220-375 ms.  Layers whose im2col fits in one chunk
# (SimpleConvNet's, at batch 100) run as before; 4 MB chunks slowed those by up to 50 %.
IM2COL_CHUNK_BYTES = 16 << 20


def _chunks(xp, n: int, sample_bytes: int) -> list[slice]:
    """Slices of the batch, each with at most IM2COL_CHUNK_BYTES of im2col.  On JAX one
    slice: XLA plans the memory of the whole program, and a Python loop would only unroll."""
    if xp is not np:
        return [slice(0, n)]
    step = max(1, IM2COL_CHUNK_BYTES // max(1, sample_bytes))
    return [slice(s, min(s + step, n)) for s in range(0, max(n, 1), step)]  # n = 0: one


def _cols_bytes(W, out_hw) -> int:
    """Bytes of one sample's im2col: C·kh·kw · OH·OW · itemsize."""
    return math.prod(W.shape[1:]) * out_hw[0] * out_hw[1] * W.dtype.itemsize


@_kernel
def _conv_forward(xp, x, W, b, *, kernel, stride, padding, out_hw):
    """out = W₂·cols (+ b), and for the backward either cols, when the batch is one chunk
    (always on JAX), or else the padded input, from which the backward gathers each chunk
    again; the other one is None."""
    n, f = x.shape[0], W.shape[0]
    x_pad = _pad(xp, x, padding)
    W2 = W.reshape(f, -1)
    chunks = _chunks(xp, n, _cols_bytes(W, out_hw))
    if len(chunks) == 1:
        cols = _im2col(xp, x_pad, kernel, stride, out_hw)
        # (C_out, K) @ (N, K, P) is one BLAS call per sample and lands directly in NCHW.
        out = W2 @ cols
    else:
        cols = None
        out = np.empty((n, f, out_hw[0] * out_hw[1]), dtype=x.dtype)
        for s in chunks:
            np.matmul(W2, _im2col(np, x_pad[s], kernel, stride, out_hw), out=out[s])
    out = out.reshape(n, f, *out_hw)
    if b is not None and xp is np:
        # ``out`` is a fresh local array; adding in place spares a full-size allocation.
        out += b.reshape(1, f, 1, 1)
    elif b is not None:
        out = out + b.reshape(1, f, 1, 1)
    return out, (x_pad if cols is None else None), cols


@_kernel
def _conv_backward(xp, x_pad, cols, W, dout, *, kernel, stride, padding, in_hw, bias, need_dx):
    n, f = dout.shape[:2]
    out_hw = dout.shape[2:]
    d = dout.reshape(n, f, -1)
    db = dout.sum(axis=(0, 2, 3)) if bias else None
    if cols is not None:
        # Per-sample (C_out, K) products summed over N: no transposed copy of cols is made.
        dW = (d @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(W.shape)
        dx = _conv_dx(xp, W, d, kernel, stride, padding, in_hw, out_hw) if need_dx else None
        return dW, db, dx
    # NumPy, several chunks: the same, each chunk's cols gathered again from x_pad.
    dW = np.zeros((f, math.prod(W.shape[1:])), dtype=W.dtype)
    dx = np.empty((n, W.shape[1], *in_hw), dtype=dout.dtype) if need_dx else None
    for s in _chunks(np, n, _cols_bytes(W, out_hw)):
        chunk = _im2col(np, x_pad[s], kernel, stride, out_hw)
        dW += (d[s] @ chunk.transpose(0, 2, 1)).sum(axis=0)
        if need_dx:
            dx[s] = _conv_dx(np, W, d[s], kernel, stride, padding, in_hw, out_hw)
    return dW.reshape(W.shape), db, dx


def _conv_dx(xp, W, d, kernel, stride, padding, in_hw, out_hw):
    """∂L/∂x = col2im(W₂ᵀ·dy) for the m samples of ``d`` (m, C_out, OH·OW)."""
    m, f = d.shape[:2]
    c = W.shape[1]
    padded = (m, c, in_hw[0] + 2 * padding[0], in_hw[1] + 2 * padding[1])
    if c >= DX_BY_OFFSET_MIN_CHANNELS:
        # dcols[:, :, i, j] = W[:, :, i, j]ᵀ·dy, made one offset at a time as col2im consumes
        # it: no cols-sized buffer, and the products are still big enough for BLAS.
        def part(i, j):
            return (W[:, :, i, j].T @ d).reshape(m, c, *out_hw)
    else:
        # With few input channels the per-offset products are (C, C_out) slivers that BLAS
        # runs slowly (about 3x slower at C = 1); one product into a whole dcols is faster.
        dcols = (W.reshape(f, -1).T @ d).reshape(m, c, *kernel, *out_hw)

        def part(i, j):
            return dcols[:, :, i, j]

    return _crop(_col2im(xp, part, padded, kernel, stride, out_hw), in_hw, padding)


@_kernel
def _maxpool_forward(xp, x, *, kernel, stride, padding, out_hw):
    """The window max and ``arg``, the first offset k = i·kw + j holding it."""
    x_pad = _pad(xp, x, padding, -xp.inf)
    if xp is np:
        # Contiguous windows let max and == vectorize; np.where on strided views is ~5x
        # slower.  The stack is kh·kw·N·C·OH·OW·itemsize bytes, like im2col.
        windows = np.stack([_window(x_pad, i, j, stride, out_hw) for i, j in _offsets(kernel)])
        best = windows.max(axis=0)
        arg = np.full(best.shape, len(windows) - 1, dtype=np.int32)
        for k in range(len(windows) - 2, -1, -1):
            # Walking backwards leaves the smallest k whose element equals the max.
            arg -= (arg - k) * (windows[k] == best)
        return best, (arg,)

    best = _window(x_pad, 0, 0, stride, out_hw)
    arg = xp.zeros(best.shape, dtype=xp.int32)
    for k, (i, j) in enumerate(_offsets(kernel)[1:], start=1):
        s = _window(x_pad, i, j, stride, out_hw)
        # Strict ">" keeps the earlier offset on a tie; jax.vjp of this same ``where``
        # routes the gradient the same way, so the reference agrees on ties too.
        better = s > best
        best = xp.where(better, s, best)
        arg = xp.where(better, k, arg)
    return best, (arg,)


@_kernel
def _maxpool_backward(xp, arg, dout, *, kernel, stride, padding, in_hw):
    n, c, oh, ow = dout.shape
    padded = (n, c, in_hw[0] + 2 * padding[0], in_hw[1] + 2 * padding[1])
    fast = xp is np and bool(np.isfinite(dout).all())

    def routed(i, j):
        hit = arg == i * kernel[1] + j
        # For a finite dout, dout·hit is where(hit, dout, 0) at twice the NumPy speed.
        return dout * hit if fast else xp.where(hit, dout, 0)

    return _crop(_col2im(xp, routed, padded, kernel, stride, (oh, ow)), in_hw, padding)


@_kernel
def _avgpool_forward(xp, x, *, kernel, stride, padding, out_hw):
    x_pad = _pad(xp, x, padding)
    total = None
    for i, j in _offsets(kernel):
        s = _window(x_pad, i, j, stride, out_hw)
        total = s if total is None else total + s
    return total / (kernel[0] * kernel[1]), ()


@_kernel
def _avgpool_backward(xp, dout, *, kernel, stride, padding, in_hw):
    n, c, oh, ow = dout.shape
    padded = (n, c, in_hw[0] + 2 * padding[0], in_hw[1] + 2 * padding[1])
    share = dout / (kernel[0] * kernel[1])
    return _crop(_col2im(xp, lambda i, j: share, padded, kernel, stride, (oh, ow)), in_hw, padding)


# --------------------------------------------------------------------------- Conv


def _label(kind: str, *args, **opts) -> str:
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in opts.items() if v is not None]
    return f"{kind}({', '.join(shown)})"


def _positive_int(name: str, what: str, value) -> int:
    if not (isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"{name}: {what} must be a positive int, got {value!r}")
    return int(value)


def Conv(
    out_channels: int,
    kernel_size,
    *,
    stride=1,
    padding=0,
    bias: bool = True,
    W_init="he_normal",
    name: str | None = None,
) -> Layer:
    """2-D convolution (cross-correlation, as in the book), NCHW, W (C_out, C_in, kh, kw).

    y[n,f,p,q] = b[f] + Σ_{c,i,j} W[f,c,i,j]·x_pad[n, c, sh·p + i, sw·q + j].
    With cols = im2col(x) and W₂ = W.reshape(C_out, −1): y = W₂·cols, ∂L/∂W₂ = Σ_n ∂L/∂y·colsᵀ,
    ∂L/∂b = Σ_{n,p,q} ∂L/∂y, ∂L/∂x = col2im(W₂ᵀ·∂L/∂y).  ``W_init`` gets
    fan_in = C_in·kh·kw and fan_out = C_out·kh·kw (He normal by default).  cols takes
    N·OH·OW·C_in·kh·kw·itemsize bytes; the cache keeps it when that is at most
    ``IM2COL_CHUNK_BYTES`` (always on JAX).  Beyond that NumPy forms it in chunks of samples,
    in the forward and again in the backward, and the cache keeps the padded input instead.
    """
    name = name or _label(
        "Conv",
        out_channels,
        kernel_size,
        stride=None if stride == 1 else stride,
        padding=None if padding == 0 else padding,
        bias=None if bias else False,
    )
    out_channels = _positive_int(name, "out_channels", out_channels)
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
        _check_input(name, x, W.dtype)
        if x.shape[1] != W.shape[1]:
            raise ValueError(
                f"{name}: input has {x.shape[1]} channels but W {tuple(W.shape)} expects "
                f"{W.shape[1]}"
            )
        out, x_pad, cols = _conv_forward(namespace(x, W), x, W, b, out_hw=out_hw_of(x), **cfg)
        # x travels only for its shape; a reference costs nothing.  Of x_pad and cols one is
        # None: cols when the forward formed it in chunks.
        return out, (x, x_pad, cols, W)

    def backward(cache, dout, *, need_dx=True):
        x, x_pad, cols, W = cache
        check_dout(name, dout, (x.shape[0], out_channels, *out_hw_of(x)), x.dtype)
        dW, db, dx = _conv_backward(
            namespace(dout, W),
            x_pad,
            cols,
            W,
            dout,
            in_hw=tuple(x.shape[2:]),
            bias=bias,
            need_dx=bool(need_dx),
            **cfg,
        )
        return ({"W": dW, "b": db} if bias else {"W": dW}), dx

    return Layer(name, init, forward, backward)


# --------------------------------------------------------------------------- pooling


def _pool_layer(kind, size, stride, padding, name, fwd, bwd) -> Layer:
    """A parameter-free pooling layer.  ``fwd`` returns (out, extra cache arrays) and
    ``bwd(xp, *extra, dout)`` the input gradient."""
    name = name or _label(kind, size, stride=stride, padding=None if padding == 0 else padding)
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
        _check_input(name, x)
        out, extra = fwd(namespace(x), x, out_hw=out_hw_of(x.shape[2:]), **cfg)
        return out, (x, *extra)

    def backward(cache, dout, *, need_dx=True):
        x, *rest = cache
        check_dout(name, dout, (*x.shape[:2], *out_hw_of(x.shape[2:])), x.dtype)
        if not need_dx:
            return (), None
        return (), bwd(namespace(dout, *cache), *rest, dout, in_hw=tuple(x.shape[2:]), **cfg)

    return Layer(name, init, forward, backward)


def MaxPool(size, stride=None, padding=0, *, name: str | None = None) -> Layer:
    """y[n,c,p,q] = max_{i,j} x_pad[n, c, sh·p + i, sw·q + j], padding with −inf.

    ∂L/∂x routes each ∂L/∂y to the element that won its window (summed where windows
    overlap).  Ties: the FIRST maximal element in row-major window order (smallest i, then
    smallest j) takes the whole gradient.  ``stride`` defaults to ``size``; ``padding`` must
    be smaller than ``size``, so padding never wins.
    """
    return _pool_layer("MaxPool", size, stride, padding, name, _maxpool_forward, _maxpool_backward)


def AvgPool(size, stride=None, padding=0, *, name: str | None = None) -> Layer:
    """y[n,c,p,q] = (1/(kh·kw)) Σ_{i,j} x_pad[n, c, sh·p + i, sw·q + j], zero padding.

    Padded zeros count in the average (count_include_pad): every window divides by kh·kw.
    ∂L/∂x spreads ∂L/∂y/(kh·kw) over each window (summed where windows overlap).
    ``stride`` defaults to ``size``; ``padding`` must be smaller than ``size``.
    """
    return _pool_layer("AvgPool", size, stride, padding, name, _avgpool_forward, _avgpool_backward)
