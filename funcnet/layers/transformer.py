"""The transformer's layers: ``LayerNorm``, ``Gelu``, ``PositionalEmbedding`` and
``CausalSelfAttention``, each with its backward written out (``docs/transformer.md`` derives
them).  They act on ``(N, T, C)`` activations: N sequences of T positions of C features
(``LayerNorm`` and ``Gelu`` on any ``(N, ..., C)``).
"""

from __future__ import annotations

import math

import numpy as np

from .. import initializers
from .._arrays import iadd, imul, namespace, split_rng
from .._checks import check_dout, check_dtype, check_float, check_no_params, shape_str
from ..core import Layer
from .activations import softmax
from .linear import _check_features, _unpack

_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_A = 0.044715
# Past |x| = 20, tanh(√(2/π)(x + 0.044715x³)) and erf(x/√2) are ±1 in float64 and
# x·e^{−x²/2} is below 1e-85: clipping the argument there changes no value beyond that and
# keeps x³ and x² from overflowing (and NumPy from warning) on extreme inputs.
_GELU_CLIP = 20.0


def LayerNorm(eps: float = 1e-5, *, bias: bool = True, name: str | None = None) -> Layer:
    """Layer normalization over the last axis, per row (each position of each sequence).

    μ, σ² = mean and (biased) variance of the row's C values; x̂ = (x − μ)/√(σ² + ε);
    y = γ ⊙ x̂ + β.  ∂L/∂γ = Σ_rows ∂L/∂y ⊙ x̂, ∂L/∂β = Σ_rows ∂L/∂y, and with g = γ ⊙ ∂L/∂y,
    ∂L/∂x = (g − mean(g) − x̂ ⊙ mean(g ⊙ x̂)) / √(σ² + ε) (means over the row): BatchNorm's
    formula with the roles of the axes swapped.  Params ``{"gamma", "beta"}``, (C,) each;
    ``bias=False`` (nanoGPT's default): no β (y = γ ⊙ x̂), params ``{"gamma"}``.
    """
    name = name or ("LayerNorm" if bias else "LayerNorm(bias=False)")
    keys = ("gamma", "beta") if bias else ("gamma",)
    if not eps > 0:
        raise ValueError(f"{name}: eps must be > 0, got {eps}")

    def init(rng, in_shape, dtype=np.float32):
        if len(in_shape) < 2 or in_shape[-1] < 1:
            raise ValueError(
                f"{name}: expected an input shape (N, ..., C), got {shape_str(in_shape)}"
            )
        c = int(in_shape[-1])
        params = {"gamma": np.ones(c, dtype), "beta": np.zeros(c, dtype)}
        return tuple(in_shape), {k: params[k] for k in keys}

    def forward(params, x, *, train=False, rng=None):
        gamma, *beta = _unpack(name, params, *keys)
        _check_features(name, x, gamma, gamma.shape[0])
        xp = namespace(x)
        xc = x - x.mean(axis=-1, keepdims=True)
        rstd = 1 / xp.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)
        xn = imul(xc, rstd)
        y = xn * gamma
        return (iadd(y, beta[0]) if bias else y), (xn, rstd, gamma)

    def backward(cache, dout, *, need_dx=True):
        xn, rstd, gamma = cache
        check_dout(name, dout, xn.shape, xn.dtype)
        c = xn.shape[-1]
        d2, x2 = dout.reshape(-1, c), xn.reshape(-1, c)
        if bias:
            dparams = {"gamma": (d2 * x2).sum(axis=0), "beta": d2.sum(axis=0)}
        else:
            dparams = {"gamma": (d2 * x2).sum(axis=0)}
        if not need_dx:
            return dparams, None
        g = dout * gamma
        dx = g - g.mean(axis=-1, keepdims=True)
        dx = dx - xn * (g * xn).mean(axis=-1, keepdims=True)
        return dparams, imul(dx, rstd)

    return Layer(name, init, forward, backward)


def _erf(x):
    xp = namespace(x)
    if xp is np:
        try:  # SciPy comes with JAX, which funcnet depends on
            from scipy.special import erf
        except ImportError:  # pragma: no cover - a NumPy-only install
            erf = np.vectorize(math.erf, otypes=[x.dtype])
        return erf(x).astype(x.dtype, copy=False)
    import jax

    return jax.scipy.special.erf(x)


def Gelu(*, approximate: bool = True, name: str | None = None) -> Layer:
    """GELU, y = x·Φ(x), Φ the standard normal CDF.

    ``approximate=True`` (GPT-2's): y = ½x(1 + t), t = tanh(u), u = √(2/π)(x + 0.044715x³);
      ∂y/∂x = ½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²).
    ``approximate=False`` (exact): y = ½x(1 + erf(x/√2)); ∂y/∂x = Φ(x) + x·φ(x),
      φ(x) = e^{−x²/2}/√(2π).
    ∂L/∂x = ∂L/∂y ⊙ ∂y/∂x.
    """
    name = name or ("Gelu" if approximate else "Gelu(erf)")

    def init(rng, in_shape, dtype=np.float32):
        return tuple(in_shape), ()

    def forward(params, x, *, train=False, rng=None):
        check_no_params(name, params)
        check_float(name, x)
        xp = namespace(x)
        xc = xp.clip(x, -_GELU_CLIP, _GELU_CLIP)
        if approximate:
            t = xp.tanh(_SQRT_2_OVER_PI * (xc + _GELU_A * (xc * xc * xc)))
        else:
            t = _erf(xc * (1 / math.sqrt(2)))
        return imul(x * 0.5, 1 + t), (x, t)

    def backward(cache, dout, *, need_dx=True):
        x, t = cache
        check_dout(name, dout, x.shape, x.dtype)
        if not need_dx:
            return (), None
        xp = namespace(x)
        xc = xp.clip(x, -_GELU_CLIP, _GELU_CLIP)
        if approximate:
            slope = (1 - t * t) * (_SQRT_2_OVER_PI * (1 + 3 * _GELU_A * (xc * xc)))
        else:
            slope = xp.exp(-0.5 * (xc * xc)) * (2 / math.sqrt(2 * math.pi))
        # ½(1 + t) + ½x·slope: both forms, with slope = 2φ(x) for the exact one.
        return (), imul(iadd(xc * slope, 1 + t), dout * 0.5)

    return Layer(name, init, forward, backward)


def PositionalEmbedding(
    context: int | None = None, *, W_init=0.02, name: str | None = None
) -> Layer:
    """A learned position vector added to each position: y[n, t] = x[n, t] + P[t].

    P is (context, C); an input of T ≤ context positions uses its first T rows.
    ∂L/∂P[t] = Σ_n ∂L/∂y[n, t] for t < T (0 for the rows not used), ∂L/∂x = ∂L/∂y.
    ``context`` defaults to the T of the shape ``init`` gets.  P ~ N(0, 0.02²) (GPT-2's).
    """
    label = name or ("PositionalEmbedding" + (f"({context})" if context else ""))
    w_init = initializers.get(W_init)
    if context is not None and not (isinstance(context, int) and context >= 1):
        raise ValueError(f"{label}: context must be a positive int, got {context!r}")

    def init(rng, in_shape, dtype=np.float32):
        if len(in_shape) != 3 or in_shape[1] < 1 or in_shape[2] < 1:
            raise ValueError(
                f"{label}: expected an input shape (N, T, C), got {shape_str(in_shape)}"
            )
        n_pos = context or int(in_shape[1])
        if in_shape[1] > n_pos:
            raise ValueError(
                f"{label}: input of {in_shape[1]} positions exceeds the context {n_pos}"
            )
        c = int(in_shape[2])
        return tuple(in_shape), {"W": w_init(rng, (n_pos, c), dtype, fan_in=n_pos, fan_out=c)}

    def forward(params, x, *, train=False, rng=None):
        (W,) = _unpack(label, params, "W")
        check_dtype(label, x, W.dtype)
        if x.ndim != 3 or x.shape[2] != W.shape[1] or x.shape[1] > W.shape[0]:
            raise ValueError(
                f"{label}: expected input shape (N, T ≤ {W.shape[0]}, {W.shape[1]}), "
                f"got {tuple(x.shape)}"
            )
        return x + W[: x.shape[1]], (x, W)

    def backward(cache, dout, *, need_dx=True):
        x, W = cache
        check_dout(label, dout, x.shape, x.dtype)
        xp = namespace(dout)
        dW = dout.sum(axis=0)
        if dW.shape[0] < W.shape[0]:
            rest = xp.zeros((W.shape[0] - dW.shape[0], W.shape[1]), dtype=dW.dtype)
            dW = xp.concatenate([dW, rest], axis=0)
        return {"W": dW}, (dout if need_dx else None)

    return Layer(label, init, forward, backward)


def _causal_mask(t: int) -> np.ndarray:
    """(T, T) booleans, True where position i may attend to position j (j ≤ i)."""
    return np.tril(np.ones((t, t), dtype=bool))


def _split_heads(a, n: int, t: int, parts: int, heads: int):
    """(N, T, parts·C) → (parts, N, heads, T, C/heads): heads contiguous along C, as nanoGPT
    splits them (q, k, v in that order along the 3C axis)."""
    return a.reshape(n, t, parts, heads, -1).transpose(2, 0, 3, 1, 4)


def _merge_heads(a):
    """(parts, N, heads, T, d) → (N, T, parts·heads·d), the inverse of ``_split_heads``."""
    parts, n, heads, t, d = a.shape
    return a.transpose(1, 3, 0, 2, 4).reshape(n, t, parts * heads * d)


def _attention_forward(x, W_qkv, b_qkv, W_o, b_o, heads: int):
    """The forward of ``CausalSelfAttention``: (out, cache); ``b_qkv``, ``b_o`` None: no
    biases."""
    xp = namespace(x)
    n, t, c = x.shape
    qkv = x @ W_qkv
    q, k, v = _split_heads(qkv if b_qkv is None else iadd(qkv, b_qkv), n, t, 3, heads)
    scale = 1 / math.sqrt(c // heads)
    s = (q @ k.swapaxes(-1, -2)) * xp.asarray(scale, dtype=x.dtype)
    # −∞ above the diagonal: e^{−∞} = 0 exactly, so masked weights are 0 in the softmax, and
    # every row keeps its diagonal, so no row is all −∞.
    p = softmax(xp.where(_causal_mask(t), s, xp.asarray(-np.inf, dtype=x.dtype)))
    y = _merge_heads((p @ v)[None])
    out = y @ W_o
    return (out if b_o is None else iadd(out, b_o)), (x, W_qkv, q, k, v, p, y, W_o)


def _attention_backward(cache, dout, heads: int, need_dx: bool, bias: bool = True):
    """The backward of ``CausalSelfAttention``: (dparams, dx); the math is in its docstring.
    Without ``bias`` the bias gradients are left out, and not computed."""
    x, W_qkv, q, k, v, p, y, W_o = cache
    xp = namespace(dout)
    n, t, c = x.shape
    d2 = dout.reshape(-1, c)
    dparams = {"W_o": y.reshape(-1, c).T @ d2}
    (dy,) = _split_heads(dout @ W_o.T, n, t, 1, heads)
    dv = p.swapaxes(-1, -2) @ dy
    dp = dy @ v.swapaxes(-1, -2)
    # softmax backward; p = 0 where masked, so the mask's entries get no gradient.
    ds = imul(dp - (dp * p).sum(axis=-1, keepdims=True), p)
    ds = imul(ds, xp.asarray(1 / math.sqrt(c // heads), dtype=ds.dtype))
    dq, dk = ds @ k, ds.swapaxes(-1, -2) @ q
    dqkv = _merge_heads(xp.stack([dq, dk, dv]))
    d3 = dqkv.reshape(-1, 3 * c)
    dparams["W_qkv"] = x.reshape(-1, c).T @ d3
    if bias:
        dparams["b_qkv"], dparams["b_o"] = d3.sum(axis=0), d2.sum(axis=0)
    return dparams, (dqkv @ W_qkv.T if need_dx else None)


def CausalSelfAttention(
    heads: int = 1, *, bias: bool = True, W_init=0.02, out_init=0.02, name: str | None = None
) -> Layer:
    """Multi-head causal self-attention on (N, T, C), C = heads·d.

    [q | k | v] = x·W_qkv + b_qkv, each split into heads of d features; per head
    S = q·kᵀ/√d, S_ij = −∞ for j > i (the causal mask), P = softmax(S) over j, Y = P·v; the
    heads concatenated back to C give y, and out = y·W_o + b_o.
    Backward, per head: ∂L/∂y = ∂L/∂out·W_oᵀ (∂L/∂W_o = yᵀ·∂L/∂out, ∂L/∂b_o = Σ ∂L/∂out);
    ∂L/∂v = Pᵀ·∂L/∂Y, ∂L/∂P = ∂L/∂Y·vᵀ; ∂L/∂S = P ⊙ (∂L/∂P − rowsum(∂L/∂P ⊙ P)) (0 where
    masked, since P is); ∂L/∂q = ∂L/∂S·k/√d, ∂L/∂k = ∂L/∂Sᵀ·q/√d; then ∂L/∂W_qkv = xᵀ·∂L/∂[q|k|v],
    ∂L/∂b_qkv = Σ ∂L/∂[q|k|v], ∂L/∂x = ∂L/∂[q|k|v]·W_qkvᵀ.
    Params ``W_qkv`` (C, 3C), ``b_qkv`` (3C,), ``W_o`` (C, C), ``b_o`` (C,): q, k, v in that
    order along 3C and heads contiguous along C, nanoGPT's ``c_attn`` and ``c_proj``
    transposed.  Weights N(0, 0.02²), ``out_init`` for W_o (GPT-2 scales it down), biases 0.
    ``bias=False`` (nanoGPT's default): b_qkv = b_o = 0 and not params, only ``W_qkv``, ``W_o``.
    """
    label = name or f"CausalSelfAttention({heads}{'' if bias else ', bias=False'})"
    keys = ("W_qkv", "b_qkv", "W_o", "b_o") if bias else ("W_qkv", "W_o")
    if not (isinstance(heads, int) and heads >= 1):
        raise ValueError(f"{label}: heads must be a positive int, got {heads!r}")
    w_init, o_init = initializers.get(W_init), initializers.get(out_init)

    def init(rng, in_shape, dtype=np.float32):
        if len(in_shape) != 3 or in_shape[2] < 1 or in_shape[2] % heads:
            raise ValueError(
                f"{label}: expected an input shape (N, T, C) with C a multiple of {heads} "
                f"heads, got {shape_str(in_shape)}"
            )
        c = int(in_shape[2])
        r_qkv, r_o = split_rng(rng, 2)
        params = {
            "W_qkv": w_init(r_qkv, (c, 3 * c), dtype),
            "b_qkv": np.zeros(3 * c, dtype),
            "W_o": o_init(r_o, (c, c), dtype),
            "b_o": np.zeros(c, dtype),
        }
        return tuple(in_shape), {k: params[k] for k in keys}

    def forward(params, x, *, train=False, rng=None):
        p = dict(zip(keys, _unpack(label, params, *keys), strict=True))
        W_qkv, W_o = p["W_qkv"], p["W_o"]
        b_qkv, b_o = p.get("b_qkv"), p.get("b_o")
        check_dtype(label, x, W_qkv.dtype)
        c = W_qkv.shape[0]
        if x.ndim != 3 or x.shape[2] != c:
            raise ValueError(f"{label}: expected input shape (N, T, {c}), got {tuple(x.shape)}")
        want = {"W_qkv": (c, 3 * c), "b_qkv": (3 * c,), "W_o": (c, c), "b_o": (c,)}
        if any(tuple(a.shape) != want[k] for k, a in p.items()):
            raise ValueError(
                f"{label}: expected params "
                + ", ".join(f"{k} {want[k]}" for k in keys)
                + ", got "
                + ", ".join(f"{k} {tuple(a.shape)}" for k, a in p.items())
            )
        return _attention_forward(x, W_qkv, b_qkv, W_o, b_o, heads)

    def backward(cache, dout, *, need_dx=True):
        check_dout(label, dout, cache[0].shape, cache[0].dtype)
        return _attention_backward(cache, dout, heads, need_dx, bias)

    return Layer(label, init, forward, backward)


__all__ = [
    "CausalSelfAttention",
    "Gelu",
    "LayerNorm",
    "PositionalEmbedding",
]
