"""``Attention``: the book's chapter-8 dot-product attention over an encoder's states."""

from __future__ import annotations

import numpy as np

from .._arrays import namespace
from .._checks import check_dout, check_dtype, check_ndim, check_no_params, shape_str
from ..core import Layer
from .activations import softmax


def Attention(*, return_weights: bool = False, name: str | None = None) -> Layer:
    """Input ``(hs_enc (N, S, H), hs_dec (N, T, H))``, output the contexts ``c (N, T, H)``
    (the book's ``TimeAttention``); with ``return_weights``, ``(c, a)`` with ``a (N, T, S)``.

    Forward: s_ts = h_dec,t · h_enc,s, a_t = softmax_s(s_t), c_t = Σ_s a_ts h_enc,s.
    Backward: ∂L/∂a = ∂L/∂c·h_encᵀ (+ the cotangent of ``a``), ∂L/∂s = a ⊙ (∂L/∂a −
    Σ_s a ∂L/∂a), ∂L/∂h_enc = aᵀ·∂L/∂c + (∂L/∂s)ᵀ·h_dec, ∂L/∂h_dec = ∂L/∂s·h_enc.  No
    params; the input gradient is the pair ``(∂L/∂hs_enc, ∂L/∂hs_dec)``.
    """
    name = name or ("Attention(return_weights=True)" if return_weights else "Attention")

    def init(rng, in_shape, dtype=np.float32):
        if not (isinstance(in_shape, tuple | list) and len(in_shape) == 2):
            raise ValueError(f"{name}: expected input shapes (hs_enc, hs_dec), got {in_shape}")
        enc, dec = map(tuple, in_shape)
        if len(enc) != 3 or len(dec) != 3 or enc[-1] != dec[-1]:
            raise ValueError(
                f"{name}: expected shapes (N, S, H) and (N, T, H), got {shape_str(enc)} and "
                f"{shape_str(dec)}"
            )
        c = dec
        return ((c, (*dec[:2], enc[1])) if return_weights else c), ()

    def forward(params, inp, *, train=False, rng=None):
        check_no_params(name, params)
        if not (isinstance(inp, tuple | list) and len(inp) == 2):
            raise ValueError(
                f"{name}: expected the pair (hs_enc, hs_dec), got {type(inp).__name__}"
            )
        enc, dec = inp
        check_ndim(name, enc, 3, "hs_enc (N, S, H)")
        check_ndim(name, dec, 3, "hs_dec (N, T, H)")
        check_dtype(name, dec, enc.dtype, "hs_dec")
        if enc.shape[0] != dec.shape[0] or enc.shape[2] != dec.shape[2]:
            raise ValueError(
                f"{name}: hs_enc {tuple(enc.shape)} and hs_dec {tuple(dec.shape)} must share N "
                "and H"
            )
        xp = namespace(enc, dec)
        a = softmax(dec @ xp.swapaxes(enc, 1, 2))  # (N, T, S)
        c = a @ enc
        return ((c, a) if return_weights else c), (enc, dec, a)

    def backward(cache, dout, *, need_dx=True):
        enc, dec, a = cache
        xp = namespace(enc, dec, a)
        dc, da_in = dout if return_weights else (dout, None)
        check_dout(name, dc, dec.shape, dec.dtype)
        da = dc @ xp.swapaxes(enc, 1, 2)
        if da_in is not None:
            check_dout(name, da_in, a.shape, a.dtype)
            da = da + da_in
        ds = a * (da - (a * da).sum(axis=-1, keepdims=True))
        d_enc = xp.swapaxes(a, 1, 2) @ dc + xp.swapaxes(ds, 1, 2) @ dec
        return (), (d_enc, ds @ enc)

    return Layer(name, init, forward, backward)


__all__ = ["Attention"]
