"""The NumPy kernels of ``conv``: the results of ``_conv_reference``'s kernels, faster, with
bounded memory (private; the tests check each against the reference and ``jax.vjp``).

What differs from the reference, and why (figures: ``benchmarks/NOTES.md``):

* Conv forms im2col for a few samples at a time (``chunk_bytes``), padding each chunk into
  a small buffer, so cols stay in the cache between their gather and their product; the
  cache keeps only x, and the backward gathers each chunk again.
* At stride 1 the gather is "wide": a window row is read on together with the next row's
  start, as one run of OH·Wp elements per (channel, offset), instead of OH runs of OW.  The
  product then also yields Wp − OW junk columns per output row, which are dropped (a
  padding row at the bottom keeps the last run in bounds).  Long runs copy about twice as
  fast; the junk adds (Wp − OW)/Wp to the flops.
* The samples of a chunk sit side by side in one product (C_out, K)·(K, m·P) instead of m
  products of (K, P) each.
* dx, with ``DX_AS_CONV_MIN_CHANNELS`` input channels or more, is itself a convolution:
  per phase of the stride, the correlation of dy (padded) with W's taps of that phase
  flipped in space and with its channel axes swapped; at stride 1 the one phase is dy
  padded by k − 1 − p against W flipped.  Otherwise dx is col2im of W₂ᵀ·dy, accumulated in
  place into each chunk's own buffer.
* Pools read their windows as views, with no stacked copy; MaxPool keeps the running
  maxima over the offsets and counts, per window, those below the max to get the first
  maximal offset.  When the windows tile the input the backward writes each window's
  gradient in place, with no col2im.  A finite dout is routed by a product instead of
  ``where``.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import _conv_reference as reference
from ._conv_geometry import crop, offsets, pad, padded_shape, tiles, window

# dx as a convolution from this many input channels on.  Its product is
# (C, C_out·kh·kw)·(…), a sliver for few channels (3x slower at C = 1); col2im's is
# (C·kh·kw, C_out)·(…).
DX_AS_CONV_MIN_CHANNELS = 8

# The default ``chunk_bytes``: Conv gathers im2col for as many samples at a time as fit in
# this many bytes (at least one sample), so that cols are still in the cache when BLAS reads
# them.  BLAS runs these products as fast from one sample as from 16; 8 MB chunks were
# 10-40 % slower.
CHUNK_BYTES = 2 << 20


def chunks(n: int, sample_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> list[slice]:
    """Slices of a batch of ``n``, each with at most ``chunk_bytes`` of im2col (>= 1 sample)."""
    step = max(1, chunk_bytes // max(1, sample_bytes))
    return [slice(s, min(s + step, n)) for s in range(0, max(n, 1), step)]  # n = 0: one


class _Gather:
    """The geometry of one im2col: source (N, C, H, W) padded by ``pads`` = (top, bottom,
    left, right) (negative: cropped), windows ``kernel`` at ``stride``, output ``out_hw``.
    Rows of its cols are (c, i, j), as ``W.reshape(C_out, -1)``; columns (sample, oy, ox'),
    with ox' < ``row`` (Wp when wide, else OW)."""

    def __init__(self, src_shape, pads, kernel, stride, out_hw, itemsize, origin=(0, 0)):
        _, c, h, w = src_shape
        top, bottom, left, right = pads
        self.pads, self.kernel, self.stride, self.out_hw = pads, kernel, stride, out_hw
        self.origin = origin  # where the windows start in the padded source
        self.wide = stride == (1, 1)
        self.hp, self.wp = h + top + bottom, w + left + right
        self.row = self.wp if self.wide else out_hw[1]
        self.cols_per_sample = out_hw[0] * self.row
        self.k = c * kernel[0] * kernel[1]
        self.sample_bytes = self.k * self.cols_per_sample * itemsize

    def padded(self, src):
        """A fresh zero-padded copy of the chunk ``src`` (+1 row when wide; see above)."""
        m, c, h, w = src.shape
        top, bottom, left, right = self.pads
        buf = np.zeros((m, c, self.hp + self.wide, self.wp), dtype=src.dtype)
        dst = buf[:, :, max(top, 0) : max(top, 0) + h + min(top, 0) + min(bottom, 0)]
        dst = dst[:, :, :, max(left, 0) : max(left, 0) + w + min(left, 0) + min(right, 0)]
        dst[...] = src[:, :, max(-top, 0) : h - max(-bottom, 0), max(-left, 0) : w - max(-right, 0)]
        return buf

    def cols(self, src=None, buf=None):
        """im2col of the chunk ``src`` (or of its ``padded`` copy ``buf``) as one
        (K, m·cols_per_sample) matrix."""
        buf = self.padded(src) if buf is None else buf
        buf = buf[:, :, self.origin[0] :, self.origin[1] :]
        m, c = buf.shape[:2]
        (kh, kw), (sh, sw), (oh, _) = self.kernel, self.stride, self.out_hw
        sn, sc, sy, sx = buf.strides
        view = as_strided(
            buf,
            shape=(c, kh, kw, m, oh, self.row),
            strides=(sc, sy, sx, sn, sh * sy, sw * sx),
            writeable=False,
        )
        return view.reshape(self.k, m * self.cols_per_sample)  # the gather: one copy

    def spread(self, d):
        """dy (m, F, OH, OW) as (F, m·cols_per_sample), zero in the junk columns."""
        m, f, oh, ow = d.shape
        out = np.zeros((f, m, oh, self.row), dtype=d.dtype)
        out[..., :ow] = d.transpose(1, 0, 2, 3)
        return out.reshape(f, m * self.cols_per_sample)

    def collect(self, r, m, out, bias=None):
        """out (m, F, OH, OW) = the product r (F, m·cols_per_sample) without junk (+ b)."""
        f, (oh, ow) = r.shape[0], self.out_hw
        r = r.reshape(f, m, oh, self.row)[..., :ow].transpose(1, 0, 2, 3)
        if bias is None:
            out[...] = r
        else:
            np.add(r, bias.reshape(1, f, 1, 1), out=out)


def correlate(src, W2, g: _Gather, bias=None, chunk_bytes=CHUNK_BYTES):
    """y[n] = W₂·cols(src)[n] (+ b) for the whole batch, a chunk at a time."""
    n = src.shape[0]
    out = np.empty((n, W2.shape[0], *g.out_hw), dtype=src.dtype)
    for s in chunks(n, g.sample_bytes, chunk_bytes):
        g.collect(W2 @ g.cols(src[s]), s.stop - s.start, out[s], bias)
    return out


def _gather(x_shape, W, kernel, stride, padding, out_hw) -> _Gather:
    (ph, pw) = padding
    return _Gather(x_shape, (ph, ph, pw, pw), kernel, stride, out_hw, W.dtype.itemsize)


def conv_forward(x, W, b, *, kernel, stride, padding, out_hw, chunk_bytes=CHUNK_BYTES):
    """y = W₂·cols + b, chunk by chunk; the backward gathers cols again from x."""
    g = _gather(x.shape, W, kernel, stride, padding, out_hw)
    return correlate(x, W.reshape(W.shape[0], -1), g, b, chunk_bytes)


def conv_backward(
    x, W, dout, *, kernel, stride, padding, in_hw, bias, need_dx, chunk_bytes=CHUNK_BYTES
):
    """dW₂ = Σ_chunks dy·colsᵀ, db = Σ dy, and dx (see ``conv_dx``)."""
    n, f = dout.shape[:2]
    g = _gather(x.shape, W, kernel, stride, padding, tuple(dout.shape[2:]))
    db = dout.sum(axis=(0, 2, 3)) if bias else None
    as_conv = need_dx and W.shape[1] >= DX_AS_CONV_MIN_CHANNELS
    by_col2im = need_dx and not as_conv
    dW = np.zeros((f, g.k), dtype=W.dtype)
    dx = np.empty(x.shape, dtype=dout.dtype) if by_col2im else None
    W2 = W.reshape(f, -1)
    for s in chunks(n, g.sample_bytes, chunk_bytes):
        d = g.spread(dout[s])
        dW += d @ g.cols(x[s]).T
        if by_col2im:
            dx[s] = col2im_chunk(W2.T @ d, g, s.stop - s.start, x.shape[1], in_hw, padding)
    if as_conv:
        dx = conv_dx(W, dout, kernel, stride, padding, in_hw, chunk_bytes)
    return dW.reshape(W.shape), db, dx


def conv_dx(W, dout, kernel, stride, padding, in_hw, chunk_bytes=CHUNK_BYTES):
    """∂L/∂x as stride-1 convolutions of dy, one per phase (a, b) of the stride.

    x_pad row y = sh·u + a is read by output row oy = u − t through kernel row
    i = a + sh·t, so x_pad[sh·u + a] gets Σ_t W[a + sh·t]·dy[u − t]: the correlation of dy,
    padded by T_a − 1 rows, with the kernel rows a, a + sh, … flipped (T_a of them), and
    the channel axes of W swapped.  Columns alike.  At stride 1 there is one phase and this
    is the familiar ∂L/∂x = dy (padded by k − 1 − p) ⋆ W flipped.  Every tap of W is used
    once, so the flops equal col2im's.  The phases share one padded copy of each chunk."""
    n, c, (oh, ow) = dout.shape[0], W.shape[1], dout.shape[2:]
    dx = np.empty((n, c, *in_hw), dtype=dout.dtype)
    plan = []
    for (y0, u0, rows, ta), (x0, v0, cols, tb) in _phases(kernel, stride, padding, in_hw):
        target = dx[:, :, y0 :: stride[0], x0 :: stride[1]]
        if ta == 0 or tb == 0:  # the kernel is narrower than the stride: no tap reads here
            target[...] = 0
            continue
        a, b = y0 + padding[0] - stride[0] * u0, x0 + padding[1] - stride[1] * v0
        sub = W[:, :, a :: stride[0], b :: stride[1]][:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        pads = (ta - 1 - u0, u0 + rows - oh, tb - 1 - v0, v0 + cols - ow)
        plan.append(
            (target, np.ascontiguousarray(sub).reshape(c, -1), pads, (ta, tb), (rows, cols))
        )
    if not plan:
        return dx
    # One padding that holds every phase's (negative: cropped) dy, each at its own origin.
    shared = tuple(max(0, *(pads[k] for _, _, pads, _, _ in plan)) for k in range(4))
    gathers = [
        _Gather(
            dout.shape, shared, taps, (1, 1), hw, W.dtype.itemsize,
            origin=(shared[0] - pads[0], shared[2] - pads[2]),
        )
        for _, _, pads, taps, hw in plan
    ]  # fmt: skip
    for s in chunks(n, max(g.sample_bytes for g in gathers), chunk_bytes):
        buf = gathers[0].padded(dout[s])
        for (target, sub, *_), g in zip(plan, gathers, strict=True):
            g.collect(sub @ g.cols(buf=buf), s.stop - s.start, target[s])
    return dx


def _phases(kernel, stride, padding, in_hw):
    """Per axis and phase: (first x index y0, its u, how many, taps T), where x index
    y0 + sh·r sits at x_pad row sh·(u0 + r) + a."""
    axes = []
    for k, s, p, n in zip(kernel, stride, padding, in_hw, strict=True):
        phase = []
        for y0 in range(min(s, n)):
            a = (y0 + p) % s
            phase.append((y0, (y0 + p) // s, len(range(y0, n, s)), len(range(a, k, s))))
        axes.append(phase)
    return [(r, q) for r in axes[0] for q in axes[1]]


def col2im_chunk(dcols, g: _Gather, m, c, in_hw, padding):
    """col2im of one chunk's dcols (C·kh·kw, m·cols_per_sample) into (m, C, H, W): each
    offset's slice added in place into a fresh local buffer.  Junk columns are zero (dy is
    spread with zeros there), so adding them along with the rest changes nothing."""
    (kh, kw), oh = g.kernel, g.out_hw[0]
    buf = np.zeros((m, c, g.hp + g.wide, g.wp), dtype=dcols.dtype)
    parts = dcols.reshape(c, kh, kw, m, oh, g.row)
    if g.wide:
        run = oh * g.wp  # one contiguous run per (sample, channel), as in the gather
        flat = buf.reshape(m, c, (g.hp + 1) * g.wp)
        for i, j in offsets(g.kernel):
            at = i * g.wp + j
            flat[:, :, at : at + run] += parts[:, i, j].reshape(c, m, run).transpose(1, 0, 2)
    else:
        for i, j in offsets(g.kernel):
            window(buf, i, j, g.stride, g.out_hw)[...] += parts[:, i, j].transpose(1, 0, 2, 3)
    return crop(buf, in_hw, padding)


def col2im(part, padded, kernel, stride, out_hw):
    """``reference.col2im``, accumulated in place: the buffer is fresh and local, so adding
    into it is safe and spares kh·kw full-size temporaries (the pools' backward)."""
    dx = None
    for i, j in offsets(kernel):
        p = part(i, j)
        if dx is None:
            dx = np.zeros(padded, dtype=p.dtype)
        window(dx, i, j, stride, out_hw)[...] += p
    return dx


def maxpool_forward(x, *, kernel, stride, padding, out_hw):
    """(max, (arg,)) with arg the first offset k = i·kw + j holding the max."""
    x_pad = pad(x, padding, -np.inf)
    # Views, not a stacked copy: maximum and == read them in place.
    views = [window(x_pad, i, j, stride, out_hw) for i, j in offsets(kernel)]
    n = len(views)
    # Reading a window view is the cost here (a strided read touches every cache line of
    # its rows): keep the running maxima c_k = max(v_0..v_k) when they take no more room
    # than x, so that each view is read once, not again to find the arg.  The first maximal
    # offset is then the number of running maxima still below the max:
    # arg = Σ_{k<n−1} [c_k < max].
    running = n > 1 and (n - 1) * views[0].size <= x.size
    if running:
        cum = np.empty((n - 1, *views[0].shape), dtype=x.dtype)
        np.copyto(cum[0], views[0])
        for k in range(1, n - 1):
            np.maximum(cum[k - 1], views[k], out=cum[k])
        best = np.maximum(cum[-1], views[-1])
    else:
        best = views[0].copy()
        for v in views[1:]:
            np.maximum(best, v, out=best)
    if np.isnan(best).any():
        # maximum lets a NaN win anywhere; the reference's strict ">" only at offset 0.
        best, arg = reference.maxpool_forward(
            x, kernel=kernel, stride=stride, padding=padding, out_hw=out_hw
        )
        return best, (arg,)
    # One byte per window while the offsets fit: this loop is memory-bound, and copyto with
    # where= or np.where took 2-4x longer than the arithmetic.
    kind = np.int8 if n <= 127 else np.int32
    if running:
        below = np.less(cum, best).view(np.int8)  # bool as 0/1 bytes
        arg = below[0].astype(kind)
        for k in range(1, n - 1):
            arg += below[k]
        return best, (arg,)
    arg = np.full(best.shape, n - 1, dtype=kind)
    for k in range(n - 2, -1, -1):
        # Walking backwards leaves the smallest k whose element equals the max.
        arg -= (arg - kind(k)) * (views[k] == best)
    return best, (arg,)


def maxpool_backward(arg, dout, *, kernel, stride, padding, in_hw):
    n, c, oh, ow = dout.shape
    padded = padded_shape((n, c, *in_hw), padding)
    # dout·hit is where(hit, dout, 0) at twice the speed, but only for a finite dout:
    # inf·0 would put NaN where no gradient goes.
    dout_finite = bool(np.isfinite(dout).all())

    def routed(i, j, out=None):
        hit = arg == i * kernel[1] + j
        if dout_finite:
            return np.multiply(dout, hit, out=out)
        return np.where(hit, dout, 0) if out is None else np.copyto(out, np.where(hit, dout, 0))

    dx = _spread(routed, padded, dout.dtype, kernel, stride, (oh, ow))
    return crop(dx, in_hw, padding)


def avgpool_forward(x, *, kernel, stride, padding, out_hw):
    """``reference.avgpool_forward``, the same sums in the same order, on views of the
    windows, without the jit wrapper's dispatch."""
    x_pad = pad(x, padding)
    views = [window(x_pad, i, j, stride, out_hw) for i, j in offsets(kernel)]
    total = views[0] + views[1] if len(views) > 1 else views[0].copy()
    for v in views[2:]:
        total += v
    total /= kernel[0] * kernel[1]
    return total


def _spread(part, padded, dtype, kernel, stride, out_hw):
    """col2im of a pool's per-offset gradients ``part(i, j)``; when the windows tile the
    input, ``part(i, j, out=window)`` writes each straight into its window of an
    uninitialized buffer (no temporary, nothing to add)."""
    if not tiles(padded, kernel, stride, out_hw):
        return col2im(part, padded, kernel, stride, out_hw)
    dx = np.empty(padded, dtype=dtype)
    for i, j in offsets(kernel):
        part(i, j, out=window(dx, i, j, stride, out_hw))
    return dx


def avgpool_backward(dout, *, kernel, stride, padding, in_hw):
    n, c, oh, ow = dout.shape
    padded = padded_shape((n, c, *in_hw), padding)
    share = dout / (kernel[0] * kernel[1])

    def part(i, j, out=None):
        return share if out is None else np.copyto(out, share)

    dx = _spread(part, padded, dout.dtype, kernel, stride, (oh, ow))
    return crop(dx, in_hw, padding)
