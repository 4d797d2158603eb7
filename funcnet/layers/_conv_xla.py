"""Conv on JAX arrays through XLA's own convolution (private; ``conv.Conv`` picks it).

The forward is ``lax.conv_general_dilated``; the backward is written here, by hand, as the
two convolutions it is (the tests check both against ``jax.vjp`` of the forward):

    dx[n,c]  = Σ_f  dy[n,f] dilated by the stride, padded by k − 1 − p,  ⋆ W[f,c] flipped
    dW[f,c]  = Σ_n  x_pad[n,c] ⋆ dy[n,f] dilated by the stride

(⋆ a stride-1 correlation).  For dx the batch stays the batch and W's channel axes swap;
for dW the roles turn: C is the batch, N the summed feature axis, dy the kernel.  On a GPU
these run as cuDNN's kernels, where im2col would move kh·kw times the input through memory;
on the CPU, XLA's convolutions are slower than im2col (``docs/conv.md`` has the figures).
"""

from __future__ import annotations

from .._arrays import jit_static

NCHW = ("NCHW", "OIHW", "NCHW")


def _lax():
    from jax import lax  # only JAX arrays come here

    return lax


@jit_static
def conv_forward(x, W, b, *, kernel, stride, padding, out_hw):
    """y = x ⋆ W at ``stride`` (+ b); nothing beyond x and W is kept for the backward."""
    (ph, pw), f = padding, W.shape[0]
    y = _lax().conv_general_dilated(x, W, stride, [(ph, ph), (pw, pw)], dimension_numbers=NCHW)
    return y if b is None else y + b.reshape(1, f, 1, 1)


@jit_static
def conv_backward(x, W, dout, *, kernel, stride, padding, in_hw, bias, need_dx):
    lax = _lax()
    (kh, kw), (ph, pw) = kernel, padding
    db = dout.sum(axis=(0, 2, 3)) if bias else None
    # dW: batch C (x's axis 1), feature N (axis 0, summed), dy as the (F, N) kernel.
    dW = lax.conv_general_dilated(
        x,
        dout,
        (1, 1),
        [(ph, ph), (pw, pw)],
        rhs_dilation=stride,
        dimension_numbers=("CNHW", "IOHW", "CNHW"),
    )
    if not need_dx:
        return dW, db, None
    # The windows tile the input exactly (Conv checks it), so both sides pad alike; a
    # padding above k − 1 makes that negative, which crops.
    flipped = W[:, :, ::-1, ::-1]
    dx = lax.conv_general_dilated(
        dout,
        flipped,
        (1, 1),
        [(kh - 1 - ph, kh - 1 - ph), (kw - 1 - pw, kw - 1 - pw)],
        lhs_dilation=stride,
        dimension_numbers=("NCHW", "IOHW", "NCHW"),
    )
    return dW, db, dx
