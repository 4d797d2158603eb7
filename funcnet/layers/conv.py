"""Convolution and pooling in NCHW layout: ``Conv``, ``MaxPool`` and ``AvgPool`` (chapter 7).

Every layer slides a ``kh×kw`` window with stride ``(sh, sw)`` over the input zero-padded by
``(ph, pw)`` on each side (max-pooling pads with −inf), giving

    OH = (H + 2·ph − kh) / sh + 1,   OW = (W + 2·pw − kw) / sw + 1.

The division must be exact: a window position that would leave rows or columns of the input
unused is a ValueError naming the sizes, never a silent crop.

The layers check their arguments and inputs and pick the kernels by the arrays' namespace:

* ``_conv_geometry``: the sizes, padding and windows every set of kernels shares;
* ``_conv_reference``: the im2col reference as ``docs/conv.md`` teaches it, generic over
  the namespace (JAX arrays run it; re-exported here);
* ``_conv_numpy``: NumPy arrays' faster, bounded-memory kernels, checked against it;
* ``_conv_xla``: JAX arrays' Conv through ``lax.conv_general_dilated``.
"""

from __future__ import annotations

import numpy as np

from .. import initializers
from .._arrays import namespace
from .._checks import check_dout, check_dtype, check_float, check_ndim, check_no_params
from ..core import Layer
from . import _conv_geometry as geometry
from . import _conv_numpy as numpy_kernels
from . import _conv_reference as reference
from . import _conv_xla as xla
from ._conv_geometry import crop, offsets, pad, tiles, window
from ._conv_reference import (
    avgpool_backward,
    avgpool_forward,
    col2im,
    conv_backward,
    conv_forward,
    im2col,
    maxpool_backward,
    maxpool_forward,
)


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
    chunk_bytes: int = numpy_kernels.CHUNK_BYTES,
    name: str | None = None,
) -> Layer:
    """2-D convolution (cross-correlation, as in the book), NCHW, W (C_out, C_in, kh, kw).

    y[n,f,p,q] = b[f] + Σ_{c,i,j} W[f,c,i,j]·x_pad[n, c, sh·p + i, sw·q + j].
    With cols = im2col(x) and W₂ = W.reshape(C_out, −1): y = W₂·cols, ∂L/∂W₂ = Σ_n ∂L/∂y·colsᵀ,
    ∂L/∂b = Σ_{n,p,q} ∂L/∂y, ∂L/∂x = col2im(W₂ᵀ·∂L/∂y).  ``W_init`` gets
    fan_in = C_in·kh·kw and fan_out = C_out·kh·kw (He normal by default).  On NumPy, im2col
    is formed a few samples at a time, at most ``chunk_bytes`` of it (but at least one
    sample; the results do not depend on it), and with 8 or more input channels ∂L/∂x is
    computed as convolutions of ∂L/∂y, one per phase of the stride (see ``docs/conv.md``).

    ``algorithm`` picks the kernels JAX arrays run: ``"im2col"`` (``_conv_reference``'s),
    ``"xla"`` (``lax.conv_general_dilated``, the backward as two convolutions: ``_conv_xla``)
    or ``"auto"``: XLA's on a GPU or TPU; on the CPU XLA's from 8 input channels, else
    im2col, the faster there (``jax_algorithm``).  NumPy arrays run the NumPy kernels.
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
    chunk_bytes = _positive_int(name, "chunk_bytes", chunk_bytes)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{name}: algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    cfg = {
        "kernel": geometry.pair(name, "kernel_size", kernel_size, 1),
        "stride": geometry.pair(name, "stride", stride, 1),
        "padding": geometry.pair(name, "padding", padding, 0),
    }
    kh, kw = cfg["kernel"]
    w_init = initializers.get(W_init)

    def init(rng, in_shape, dtype=np.float32):
        n, c, h, w = geometry.in_nchw(name, in_shape)
        oh, ow = geometry.out_hw(name, (h, w), **cfg)
        shape = (out_channels, c, kh, kw)
        params = {
            "W": w_init(rng, shape, dtype, fan_in=c * kh * kw, fan_out=out_channels * kh * kw)
        }
        if bias:
            params["b"] = initializers.zeros(rng, (out_channels,), dtype)
        return (n, out_channels, oh, ow), params

    def forward(params, x, *, train=False, rng=None):
        W, b = _conv_params(name, params, bias, (out_channels, kh, kw))
        _check_nchw(name, x, W.dtype)
        if x.shape[1] != W.shape[1]:
            raise ValueError(
                f"{name}: input has {x.shape[1]} channels but W {tuple(W.shape)} expects "
                f"{W.shape[1]}"
            )
        out_hw = geometry.out_hw(name, x.shape[2:], **cfg)
        out, cols = _forward(x, W, b, algorithm, chunk_bytes, out_hw=out_hw, **cfg)
        return out, (x, cols, W)

    def backward(cache, dout, *, need_dx=True):
        x, cols, W = cache
        out_hw = geometry.out_hw(name, x.shape[2:], **cfg)
        check_dout(name, dout, (x.shape[0], out_channels, *out_hw), x.dtype)
        opts = dict(in_hw=tuple(x.shape[2:]), bias=bias, need_dx=bool(need_dx), **cfg)
        dW, db, dx = _backward(x, cols, W, dout, algorithm, chunk_bytes, **opts)
        return ({"W": dW, "b": db} if bias else {"W": dW}), dx

    return Layer(name, init, forward, backward)


def _forward(x, W, b, algorithm, chunk_bytes, **static):
    """(y, cols) from the kernels for x's namespace and ``algorithm``.  NumPy and XLA keep
    no cols (the cache holds x, a reference, no copy): NumPy gathers them again."""
    if namespace(x, W) is np:
        return numpy_kernels.conv_forward(x, W, b, chunk_bytes=chunk_bytes, **static), None
    if jax_algorithm(algorithm, x.shape) == "xla":
        return xla.conv_forward(x, W, b, **static), None
    return reference.conv_forward(x, W, b, **static)


def _backward(x, cols, W, dout, algorithm, chunk_bytes, **static):
    """(dW, db, dx) from the kernels for dout's namespace and ``algorithm``."""
    if namespace(dout, W) is np:
        return numpy_kernels.conv_backward(x, W, dout, chunk_bytes=chunk_bytes, **static)
    if jax_algorithm(algorithm, x.shape) == "xla":
        return xla.conv_backward(x, W, dout, **static)
    if cols is None:  # a NumPy forward, a JAX dout: gather what NumPy did not keep
        x_pad = geometry.pad(x, static["padding"])
        cols = reference.im2col(x_pad, static["kernel"], static["stride"], dout.shape[2:])
    return reference.conv_backward(cols, W, dout, **static)


def _conv_params(name: str, params, bias: bool, shape):
    """(W, b) of a Conv's ``params`` (b None without bias), or a ValueError naming what is
    wrong; ``shape`` = (C_out, kh, kw), W's shape but for its input channels."""
    keys = {"W", "b"} if bias else {"W"}
    if not isinstance(params, dict) or set(params) != keys:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{name}: expected params with keys {sorted(keys)}, got {got}")
    W, b = params["W"], params.get("b")
    out_channels, kh, kw = shape
    got = tuple(getattr(W, "shape", ()))
    if len(got) != 4 or got[0] != out_channels or got[2:] != (kh, kw):
        raise ValueError(
            f"{name}: expected W of shape ({out_channels}, C_in, {kh}, {kw}), got {got}"
        )
    if b is not None:
        check_dtype(name, b, W.dtype, "b")
        if tuple(b.shape) != (out_channels,):
            raise ValueError(f"{name}: expected b of shape ({out_channels},), got {tuple(b.shape)}")
    return W, b


# --------------------------------------------------------------------------- pooling


def _pool_layer(kind, size, stride, padding, name, fwd, bwd) -> Layer:
    """A parameter-free pooling layer.  ``fwd(x, **cfg)`` returns (out, extra cache
    arrays) and ``bwd(*extra, dout, **cfg)`` the input gradient; each picks its own path
    by the arrays' namespace."""
    name = name or _layer_name(kind, size, stride=stride, padding=None if padding == 0 else padding)
    kernel = geometry.pair(name, "size", size, 1)
    cfg = {
        "kernel": kernel,
        "stride": kernel if stride is None else geometry.pair(name, "stride", stride, 1),
        "padding": geometry.pair(name, "padding", padding, 0),
    }
    if cfg["padding"][0] >= kernel[0] or cfg["padding"][1] >= kernel[1]:
        # Otherwise a window could hold only padding and have no input to take from.
        raise ValueError(
            f"{name}: padding {cfg['padding']} must be smaller than the window {kernel}"
        )

    def out_hw_of(hw):
        return geometry.out_hw(name, hw, **cfg)

    def init(rng, in_shape, dtype=np.float32):
        n, c, h, w = geometry.in_nchw(name, in_shape)
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
        return numpy_kernels.maxpool_forward(x, **cfg)
    best, arg = reference.maxpool_forward(x, **cfg)
    return best, (arg,)


def _maxpool_bwd(arg, dout, **cfg):
    if namespace(dout) is np:
        return numpy_kernels.maxpool_backward(arg, dout, **cfg)
    return reference.maxpool_backward(arg, dout, **cfg)


def _avgpool_fwd(x, **cfg):
    if namespace(x) is np:
        return numpy_kernels.avgpool_forward(x, **cfg), ()
    return reference.avgpool_forward(x, **cfg), ()


def _avgpool_bwd(dout, **cfg):
    if namespace(dout) is np:
        return numpy_kernels.avgpool_backward(dout, **cfg)
    return reference.avgpool_backward(dout, **cfg)


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
