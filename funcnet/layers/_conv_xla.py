"""Conv on JAX arrays through XLA's own convolution (private; ``conv.Conv`` picks it).

The forward is ``lax.conv_general_dilated``; the backward is written here, by hand, as the
two convolutions it is (the tests check both against ``jax.vjp`` of the forward):

    dx[n,c]  = Σ_f  dy[n,f] dilated by the stride, padded by k − 1 − p,  ⋆ W[f,c] flipped
    dW[f,c]  = Σ_n  x_pad[n,c] ⋆ dy[n,f] dilated by the stride

(⋆ a stride-1 correlation).  For dx the batch stays the batch and W's channel axes swap;
for dW the roles turn: C is the batch, N the summed feature axis, dy the kernel.  On a GPU
these run as cuDNN's kernels, where im2col would move kh·kw times the input through memory;
on the CPU, XLA's are the faster from about 6 input channels on, im2col below
(``benchmarks/NOTES.md`` has the figures).

On the CPU every convolution is written channels-last (NHWC input, HWIO kernel, NHWC
output), the only layout XLA's CPU backend runs through its Eigen kernels.  At the top of a
program XLA transposes any other layout into that one itself, but not inside a loop body:
there an NCHW convolution is emitted as plain loops, and a ``lax.scan`` over DeepConvNet's
steps runs 4x slower than the same steps jitted one by one (jax issue 12868).  Written
channels-last, a convolution runs the same kernel in both places.
"""

from __future__ import annotations

from .._arrays import jit_static

NCHW = ("NCHW", "OIHW", "NCHW")
NHWC = ("NHWC", "HWIO", "NHWC")  # XLA:CPU's Eigen convolution; names the axes of each array


def _lax():
    from jax import lax  # only JAX arrays come here

    return lax


def _channels_last() -> bool:
    import jax

    return jax.default_backend() == "cpu"  # the backend a traced program compiles for


def _conv(lhs, rhs, pads, last, *, stride=(1, 1), lhs_dilation=None, rhs_dilation=None, dn):
    """``lax.conv_general_dilated``; with ``last`` (channels-last), both operands and the
    result moved to NHWC/HWIO first (``dn`` still names the axes of the arrays given)."""
    lax = _lax()
    kw = {"lhs_dilation": lhs_dilation, "rhs_dilation": rhs_dilation}
    if not last:
        return lax.conv_general_dilated(lhs, rhs, stride, pads, dimension_numbers=dn, **kw)
    # dn's letters say where batch/feature/spatial sit in each array; put them in NHWC order.
    lhs_spec, rhs_spec, out_spec = dn
    lhs = lhs.transpose([lhs_spec.index(a) for a in "NHWC"])
    rhs = rhs.transpose([rhs_spec.index(a) for a in "HWIO"])
    y = lax.conv_general_dilated(lhs, rhs, stride, pads, dimension_numbers=NHWC, **kw)
    return y.transpose(["NHWC".index(a) for a in out_spec])


def conv_forward(x, W, b, **static):
    """y = x ⋆ W at ``stride`` (+ b); nothing beyond x and W is kept for the backward."""
    return _forward(x, W, b, last=_channels_last(), **static)


def conv_backward(x, W, dout, **static):
    """(dW, db, dx) of ``conv_forward`` (dx None unless ``need_dx``)."""
    return _backward(x, W, dout, last=_channels_last(), **static)


@jit_static
def _forward(x, W, b, *, kernel, stride, padding, out_hw, last):
    (ph, pw), f = padding, W.shape[0]
    y = _conv(x, W, [(ph, ph), (pw, pw)], last, stride=stride, dn=NCHW)
    return y if b is None else y + b.reshape(1, f, 1, 1)


@jit_static
def _backward(x, W, dout, *, kernel, stride, padding, in_hw, bias, need_dx, last):
    (kh, kw), (ph, pw) = kernel, padding
    db = dout.sum(axis=(0, 2, 3)) if bias else None
    # dW: batch C (x's axis 1), feature N (axis 0, summed), dy as the (F, N) kernel.
    dn = ("CNHW", "IOHW", "CNHW")
    pads = [(ph, ph), (pw, pw)]
    if last and (ph > (kh - 1) // 2 or pw > (kw - 1) // 2):
        # XLA:CPU ran this convolution 10-15x slower with more padding than (k - 1) / 2 (an
        # output larger than the input, as DeepConvNet's fourth conv): x takes the excess
        # as explicit zeros, the convolution the rest (docs/conv.md).
        eh, ew = max(0, ph - (kh - 1) // 2), max(0, pw - (kw - 1) // 2)
        x = _lax().pad(x, x.dtype.type(0), [(0, 0, 0), (0, 0, 0), (eh, eh, 0), (ew, ew, 0)])
        pads = [(ph - eh, ph - eh), (pw - ew, pw - ew)]
    dW = _conv(x, dout, pads, last, rhs_dilation=stride, dn=dn)
    if not need_dx:
        return dW, db, None
    # The windows tile the input exactly (Conv checks it), so both sides pad alike; a
    # padding above k − 1 makes that negative, which crops.
    flipped = W[:, :, ::-1, ::-1]
    pads = [(kh - 1 - ph, kh - 1 - ph), (kw - 1 - pw, kw - 1 - pw)]
    dx = _conv(dout, flipped, pads, last, lhs_dilation=stride, dn=("NCHW", "IOHW", "NCHW"))
    return dW, db, dx
