"""The reference kernels of ``conv``, as ``docs/conv.md`` teaches them (private; ``conv``
exports them).

``im2col`` stacks the ``kh·kw`` strided slices ``window(x_pad, i, j)``, one per kernel
offset; ``col2im`` adds slices back at the same offsets.  The kernels use only slicing,
``stack``, ``pad``, ``where`` and ``@``, so they run on NumPy and on ``jax.numpy`` (traced
by ``jax.grad``, compiled by ``jax.jit``): JAX arrays run them (Conv's ``"im2col"``
algorithm, and pooling), and the tests check the NumPy kernels of ``_conv_numpy`` against
them.
"""

from __future__ import annotations

from .._arrays import jit_static, namespace
from ._conv_geometry import crop, offsets, pad, padded_shape, tiles, window


def im2col(x_pad, kernel, stride, out_hw):
    """(N, C, Hp, Wp) → cols (N, C·kh·kw, OH·OW), rows ordered (c, i, j) like
    ``W.reshape(C_out, -1)``.  Size N·OH·OW·C·kh·kw·itemsize bytes."""
    n, c = x_pad.shape[:2]
    parts = [window(x_pad, i, j, stride, out_hw) for i, j in offsets(kernel)]
    stacked = namespace(x_pad).stack(parts, axis=2)
    return stacked.reshape(n, c * kernel[0] * kernel[1], out_hw[0] * out_hw[1])


def col2im(part, padded, kernel, stride, out_hw):
    """Σ over kernel offsets (i, j) of ``part(i, j)`` (N, C, OH, OW) added back, into the
    ``padded`` shape, at the positions ``window(·, i, j)`` read: the adjoint of the window
    gather, as a pure sum of padded slices (stride − 1 zeros interleaved first when the
    stride is above 1).

    When the windows tile the input the sum has one term per position, and the adjoint is a
    permutation: the parts stacked as (kh, kw, N, C, OH, OW) and moved to (N, C, OH, kh, OW,
    kw).  A pooling layer's jitted forward and backward runs 2-3x faster so on the CPU than
    with the padded sum; inside a whole jitted training step XLA fuses this part with its
    neighbours either way, and the step takes as long (benchmarks/NOTES.md)."""
    (sh, sw), (oh, ow) = stride, out_hw
    n, c, hp, wp = padded
    if tiles(padded, kernel, stride, out_hw):
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
    padded = padded_shape((n, c, *in_hw), padding)
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
    padded = padded_shape((n, c, *in_hw), padding)
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
    padded = padded_shape((n, c, *in_hw), padding)
    share = dout / (kernel[0] * kernel[1])
    return crop(col2im(lambda i, j: share, padded, kernel, stride, (oh, ow)), in_hw, padding)
