"""The NumPy kernels of ``conv``: same results as its reference kernels, faster, with
bounded memory (private; the tests check each against the reference and ``jax.vjp``).

What differs from the reference, and why:

* im2col is formed for at most ``IM2COL_CHUNK_BYTES`` of samples at a time; the backward
  gathers each chunk again from the cached padded input.
* col2im accumulates in place into one fresh buffer instead of summing padded copies.
* From ``DX_BY_OFFSET_MIN_CHANNELS`` input channels on, Conv's dcols is formed one kernel
  offset at a time, as col2im consumes it.
* MaxPool stacks its windows contiguously (vectorized max) and routes a finite dout by a
  product instead of ``where``.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from . import conv as ref

# From this many input channels on, Conv's backward forms dcols one kernel offset at a time
# (measured on 2 cores: equal at 8 channels, 1.2-1.6x faster at 16-64, 3x slower at 1).
DX_BY_OFFSET_MIN_CHANNELS = 8

# Conv forms im2col for as many samples at a time as fit in this many bytes (at least one
# sample).  Its memory is then bounded whatever the batch, and chunks of this size are
# recycled by the allocator, where one large buffer is mapped and page-faulted afresh on
# every call.  Layers whose im2col fits in one chunk (SimpleConvNet's at batch 100) keep
# cols in the cache; 4 MB chunks slowed those by up to 50 %.
IM2COL_CHUNK_BYTES = 16 << 20


@contextlib.contextmanager
def chunk_budget(nbytes: int):
    """Temporarily set ``IM2COL_CHUNK_BYTES`` (to exercise the chunked path on small data)."""
    global IM2COL_CHUNK_BYTES
    saved, IM2COL_CHUNK_BYTES = IM2COL_CHUNK_BYTES, int(nbytes)
    try:
        yield
    finally:
        IM2COL_CHUNK_BYTES = saved


def chunks(n: int, sample_bytes: int) -> list[slice]:
    """Slices of a batch of ``n``, each with at most IM2COL_CHUNK_BYTES of im2col."""
    step = max(1, IM2COL_CHUNK_BYTES // max(1, sample_bytes))
    return [slice(s, min(s + step, n)) for s in range(0, max(n, 1), step)]  # n = 0: one


def _cols_bytes(W, out_hw) -> int:
    """Bytes of one sample's im2col: C·kh·kw · OH·OW · itemsize."""
    return math.prod(W.shape[1:]) * out_hw[0] * out_hw[1] * W.dtype.itemsize


def col2im(part, padded_shape, kernel, stride, out_hw):
    """``ref.col2im``, accumulated in place: the buffer is fresh and local, so adding into it
    is safe and spares kh·kw full-size temporaries."""
    dx = None
    for i, j in ref.offsets(kernel):
        p = part(i, j)
        if dx is None:
            dx = np.zeros(padded_shape, dtype=p.dtype)
        ref.window(dx, i, j, stride, out_hw)[...] += p
    return dx


def conv_forward(x, W, b, *, kernel, stride, padding, out_hw):
    """(out, x_pad, cols): cols when the batch is one chunk, else x_pad (the other None)."""
    n, f = x.shape[0], W.shape[0]
    x_pad = ref.pad(x, padding)
    W2 = W.reshape(f, -1)
    parts = chunks(n, _cols_bytes(W, out_hw))
    if len(parts) == 1:
        cols = ref.im2col(x_pad, kernel, stride, out_hw)
        out = W2 @ cols
    else:
        cols = None
        out = np.empty((n, f, out_hw[0] * out_hw[1]), dtype=x.dtype)
        for s in parts:
            np.matmul(W2, ref.im2col(x_pad[s], kernel, stride, out_hw), out=out[s])
    out = out.reshape(n, f, *out_hw)
    if b is not None:
        out += b.reshape(1, f, 1, 1)  # ``out`` is fresh: no second full-size array
    return out, (x_pad if cols is None else None), cols


def conv_backward(x_pad, cols, W, dout, *, kernel, stride, padding, in_hw, bias, need_dx):
    n, f = dout.shape[:2]
    out_hw = tuple(dout.shape[2:])
    d = dout.reshape(n, f, -1)
    db = dout.sum(axis=(0, 2, 3)) if bias else None
    if cols is not None:
        dW = (d @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(W.shape)
        dx = conv_dx(W, d, kernel, stride, padding, in_hw, out_hw) if need_dx else None
        return dW, db, dx
    # Several chunks: the same, each chunk's cols gathered again from x_pad.
    dW = np.zeros((f, math.prod(W.shape[1:])), dtype=W.dtype)
    dx = np.empty((n, W.shape[1], *in_hw), dtype=dout.dtype) if need_dx else None
    for s in chunks(n, _cols_bytes(W, out_hw)):
        chunk = ref.im2col(x_pad[s], kernel, stride, out_hw)
        dW += (d[s] @ chunk.transpose(0, 2, 1)).sum(axis=0)
        if need_dx:
            dx[s] = conv_dx(W, d[s], kernel, stride, padding, in_hw, out_hw)
    return dW.reshape(W.shape), db, dx


def conv_dx(W, d, kernel, stride, padding, in_hw, out_hw):
    """∂L/∂x = col2im(W₂ᵀ·dy) for the m samples of ``d`` (m, C_out, OH·OW)."""
    m, c = d.shape[0], W.shape[1]
    padded = (m, c, in_hw[0] + 2 * padding[0], in_hw[1] + 2 * padding[1])
    part = (dx_parts_by_offset if c >= DX_BY_OFFSET_MIN_CHANNELS else dx_parts_whole)(
        W, d, kernel, out_hw
    )
    return ref.crop(col2im(part, padded, kernel, stride, out_hw), in_hw, padding)


def dx_parts_by_offset(W, d, kernel, out_hw):
    """dcols[:, :, i, j] = W[:, :, i, j]ᵀ·dy, made one offset at a time as col2im consumes
    it: no cols-sized buffer, and the products are still big enough for BLAS."""
    m, c = d.shape[0], W.shape[1]
    return lambda i, j: (W[:, :, i, j].T @ d).reshape(m, c, *out_hw)


def dx_parts_whole(W, d, kernel, out_hw):
    """All of dcols in one product: with few input channels the per-offset products are
    (C, C_out) slivers that BLAS runs slowly (about 3x slower at C = 1)."""
    m, f = d.shape[:2]
    dcols = (W.reshape(f, -1).T @ d).reshape(m, W.shape[1], *kernel, *out_hw)
    return lambda i, j: dcols[:, :, i, j]


def maxpool_forward(x, *, kernel, stride, padding, out_hw):
    """(max, (arg,)) with arg the first offset k = i·kw + j holding the max."""
    x_pad = ref.pad(x, padding, -np.inf)
    # Contiguous windows let max and == vectorize; np.where on strided views is ~5x
    # slower.  The stack is kh·kw·N·C·OH·OW·itemsize bytes, like im2col.
    windows = np.stack([ref.window(x_pad, i, j, stride, out_hw) for i, j in ref.offsets(kernel)])
    best = windows.max(axis=0)
    arg = np.full(best.shape, len(windows) - 1, dtype=np.int32)
    for k in range(len(windows) - 2, -1, -1):
        # Walking backwards leaves the smallest k whose element equals the max.
        arg -= (arg - k) * (windows[k] == best)
    return best, (arg,)


def maxpool_backward(arg, dout, *, kernel, stride, padding, in_hw):
    n, c, oh, ow = dout.shape
    padded = (n, c, in_hw[0] + 2 * padding[0], in_hw[1] + 2 * padding[1])
    # dout·hit is where(hit, dout, 0) at twice the speed, but only for a finite dout:
    # inf·0 would put NaN where no gradient goes.
    fast = bool(np.isfinite(dout).all())

    def routed(i, j):
        hit = arg == i * kernel[1] + j
        return dout * hit if fast else np.where(hit, dout, 0)

    return ref.crop(col2im(routed, padded, kernel, stride, (oh, ow)), in_hw, padding)


def avgpool_backward(dout, *, kernel, stride, padding, in_hw):
    n, c, oh, ow = dout.shape
    padded = (n, c, in_hw[0] + 2 * padding[0], in_hw[1] + 2 * padding[1])
    share = dout / (kernel[0] * kernel[1])
    return ref.crop(col2im(lambda i, j: share, padded, kernel, stride, (oh, ow)), in_hw, padding)
