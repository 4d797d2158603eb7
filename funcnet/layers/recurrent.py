"""Recurrent layers through time: ``RNN``, ``LSTM``, ``GRU`` and ``Bidirectional``.

Each maps ``(N, T, D)`` to the hidden states ``(N, T, H)``.  Params are the book's (*Deep
Learning from Scratch 2*, ``common/time_layers.py``): ``Wx (D, kH)``, ``Wh (H, kH)``,
``b (kH,)`` with the gates side by side in its order (LSTM: f, g, i, o; GRU: z, r, h̃), so
the book's weights load unchanged.

**State in and out, purely.**  The input is ``x`` or a tuple ``(x, h0)`` (LSTM: ``(x, h0,
c0)``); a missing state is zeros.  With ``return_state=True`` the output is ``(hs, h_T)``
(LSTM: ``(hs, h_T, c_T)``) and ``backward`` takes a cotangent of that structure.  The input
gradient has the input's structure: ``dx`` or ``(dx, dh0[, dc0])``.  Truncated BPTT (the
book's ``stateful=True``) feeds each block's final state to the next block's call; an
encoder's final state starts a decoder.

**Backpropagation through time.**  The input's share of every gate, a_t = x_t·Wx + b, is
one matrix product over all steps; the recurrence a_t + h_{t−1}·Wh runs step by step.  The
backward runs the steps in reverse and returns each step's gate gradient dA_t (the carry is
∂L/∂h_{t−1}, and ∂L/∂c_{t−1}); then ∂L/∂Wx = Σ_t x_tᵀ·dA_t, ∂L/∂b = Σ_t dA_t and
∂L/∂Wh = Σ_t h_{t−1}ᵀ·dA_t are each one product over all steps, ∂L/∂x_t = dA_t·Wxᵀ.  On
NumPy arrays the steps are a Python loop; on JAX arrays one ``lax.scan`` forward and one
reverse ``lax.scan`` backward, so nothing under ``jit`` loops over T in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .. import initializers
from .._arrays import iadd, imul, namespace, split_rng
from .._checks import check_dout, check_dtype, check_ndim, shape_str
from ..core import Layer

UNROLL_STEPS = 8  # the longest scan unrolled under jit (compile time grows with it)


def scan(step: Callable, carry, xs: tuple, *, reverse: bool = False, stack: bool = True):
    """``jax.lax.scan(step, carry, xs, reverse=reverse)`` on JAX arrays; the same loop in
    Python on NumPy arrays.  ``xs`` is a tuple of arrays with time on axis 0 (on NumPy also
    tuples of per-step arrays); ``step`` returns ``(carry, ys)`` with ``ys`` a tuple of
    arrays, stacked along axis 0 (on NumPy, with ``stack=False``, each a tuple of the
    per-step arrays: a copy of every step's output saved where only steps read them).
    Under ``jit`` a scan of at most ``UNROLL_STEPS`` steps is unrolled: XLA:CPU's loop
    fills a zeroed buffer per stacked output and pays per iteration, a fifth of a short
    sequence's pass (the addition task's 7 + 4 steps)."""
    arrays = [
        a for a in (*xs, *(carry if isinstance(carry, tuple) else (carry,))) if hasattr(a, "shape")
    ]
    if namespace(*arrays) is not np:
        import jax

        unroll = len(xs[0]) <= UNROLL_STEPS
        return jax.lax.scan(step, carry, xs, reverse=reverse, unroll=unroll)
    steps = len(xs[0])
    outs: list = [None] * steps
    for t in range(steps - 1, -1, -1) if reverse else range(steps):
        carry, outs[t] = step(carry, tuple(a[t] for a in xs))
    parts = zip(*outs, strict=True)
    return carry, tuple(np.stack(p) if stack else tuple(p) for p in parts)


class Cell(NamedTuple):
    """One recurrent cell: ``k`` gate blocks and ``n_state`` state arrays (h, or h and c).

    ``step(P, state, a_t) -> (state, saved_t)`` with P = Wh, or, when ``sigmoid_blocks`` names
    the σ blocks, (Wh, m, k) with those columns of Wh and a_t scaled by m = ½ and k = ½ there
    (0 and m = 1 elsewhere): σ(x) = ½ + ½·tanh(x/2).  saved_t[0] is h_t, the rest what the
    backward of the step needs; ``back(Wh, dstate, (dh_t, *saved_t)) -> (dstate_prev,
    (dA_t,))``; ``dWh(h0, hs, saved, dA)`` sums every step's share of ∂L/∂Wh.
    """

    name: str
    k: int
    n_state: int
    step: Callable
    back: Callable
    dWh: Callable
    sigmoid_blocks: tuple = ()
    back_into: Callable | None = None  # NumPy: ``back`` writing dA_t into a given row


def _dWh_plain(h0, hs, saved, dA):
    """∂L/∂Wh = Σ_t h_{t−1}ᵀ·dA_t: h0ᵀ·dA_0 (none when ``h0`` is None, a zero start) plus
    one product over the other steps, which read h_0 … h_{T−2} where they lie (time-major:
    no copy)."""
    if dA.shape[0] == 1:
        dWh = namespace(dA).zeros((hs.shape[-1], dA.shape[-1]), dA.dtype)
    else:
        dWh = _flat(hs[:-1]).T @ _flat(dA[1:])
    return dWh if h0 is None else iadd(dWh, h0.T @ dA[0])


def _flat(a):
    return a.reshape(-1, a.shape[-1])


def _itanh(fresh):
    """tanh, written into ``fresh`` on NumPy (an array the caller just made)."""
    return np.tanh(fresh, out=fresh) if type(fresh) is np.ndarray else namespace(fresh).tanh(fresh)


def _rnn_step(Wh, state, a):
    (h,) = state
    h = namespace(a).tanh(a + h @ Wh)
    return (h,), (h,)


def _rnn_back(Wh, dstate, inputs):
    """h_t = tanh(A_t), A_t = a_t + h_{t−1}·Wh: dA = ∂L/∂h_t ⊙ (1 − h_t²),
    ∂L/∂h_{t−1} = dA·Whᵀ."""
    dh, h = inputs
    dA = (dh + dstate[0]) * (1 - h * h)
    return (dA @ Wh.T,), (dA,)


def _lstm_step(P, state, a):
    """One step; ``P`` = (Wh, m, k) with the σ blocks' columns of Wh (and of ``a``) scaled by
    m = ½ (``_recurrent``): one tanh over all four blocks then gives σ(x) = ½ + ½·tanh(x/2)
    for f, i, o (k = ½) and tanh for g (m = 1, k = 0), half the passes over memory of a
    separate σ, and finite for any x."""
    Wh, m, k = P
    h, c = state
    H = h.shape[-1]
    s = iadd(imul(_itanh(iadd(h @ Wh, a)), m), k)
    c = iadd(s[:, :H] * c, s[:, H : 2 * H] * s[:, 2 * H : 3 * H])
    tc = namespace(c).tanh(c)
    h = s[:, 3 * H :] * tc
    return (h, c), (h, state[1], s, tc)  # c_{t−1}, not c_t: what the backward reads


def _lstm_back(Wh, dstate, inputs):
    """c_t = f⊙c_{t−1} + g⊙i, h_t = o⊙tanh(c_t).  With δh = ∂L/∂h_t (from above and from
    step t+1) and δc = ∂L/∂c_t + δh⊙o⊙(1 − tanh²c_t): ∂L/∂c_{t−1} = δc⊙f and
    dA = [δc⊙c_{t−1}⊙f(1−f), δc⊙i⊙(1−g²), δc⊙g⊙i(1−i), δh⊙tanh c_t⊙o(1−o)]."""
    dh_out, _h, c_prev, s, tc = inputs
    dh_next, dc_next = dstate
    xp, H = namespace(s), tc.shape[-1]
    f, g, i, o = s[:, :H], s[:, H : 2 * H], s[:, 2 * H : 3 * H], s[:, 3 * H :]
    if xp is np:
        return _lstm_back_numpy(Wh, dh_out + dh_next, dc_next, c_prev, s, tc)
    dh = dh_out + dh_next
    dc = dc_next + dh * o * (1 - tc * tc)
    dA = xp.concatenate(
        [
            dc * c_prev * f * (1 - f),
            dc * i * (1 - g * g),
            dc * g * i * (1 - i),
            dh * tc * o * (1 - o),
        ],
        axis=-1,
    )
    return (dA @ Wh.T, dc * f), (dA,)


def _lstm_back_into(Wh, dstate, inputs, out):
    """``_lstm_back`` on NumPy with dA_t written into ``out``; -> ∂L/∂(h, c)_{t−1}."""
    dh_out, _h, c_prev, s, tc = inputs
    return _lstm_back_numpy(Wh, dh_out + dstate[0], dstate[1], c_prev, s, tc, out)[0]


def _lstm_back_numpy(Wh, dh, dc_next, c_prev, s, tc, out=None):
    """``_lstm_back`` on NumPy: the same arithmetic written into three arrays made here
    (δc, dA and ∂L/∂h_{t−1}), for a step's dozens of small operations cost more in
    allocations than in arithmetic.  dA starts as σ' = s(1 − s) over all four blocks (the g
    block then 1 − g²) and is multiplied block by block by its other factors."""
    H = tc.shape[-1]
    f, g, i, o = s[:, :H], s[:, H : 2 * H], s[:, 2 * H : 3 * H], s[:, 3 * H :]
    dc = np.multiply(tc, tc)
    np.subtract(1, dc, out=dc)
    dc *= o
    dc *= dh
    dc += dc_next
    dA = np.subtract(1, s, out=out)
    dA *= s
    dg = dA[:, H : 2 * H]
    np.multiply(g, g, out=dg)
    np.subtract(1, dg, out=dg)
    for block, factor, by in ((0, c_prev, dc), (1, i, dc), (2, g, dc), (3, tc, dh)):
        part = dA[:, block * H : (block + 1) * H]
        part *= factor
        part *= by
    dc *= f
    return (dA @ Wh.T, dc), (dA,)


def _gru_step(P, state, a):
    """One step; ``P`` = (Wh, m, k), the z and r columns scaled by ½ as ``_lstm_step``'s."""
    Wh, m, k = P
    (h,) = state
    xp, H = namespace(a), h.shape[-1]
    zr = iadd(imul(xp.tanh(iadd(h @ Wh[:, : 2 * H], a[:, : 2 * H])), m[: 2 * H]), k[: 2 * H])
    z, r = zr[:, :H], zr[:, H:]
    hh = xp.tanh(iadd((r * h) @ Wh[:, 2 * H :], a[:, 2 * H :]))
    h_new = h + z * (hh - h)  # (1 − z)⊙h_{t−1} + z⊙h̃
    return (h_new,), (h_new, zr, hh, h)


def _gru_back(Wh, dstate, inputs):
    """h_t = (1−z)⊙h_{t−1} + z⊙h̃, h̃ = tanh(a_h + (r⊙h_{t−1})·Wh_h).  With δ = ∂L/∂h_t:
    dA_h = δ⊙z⊙(1 − h̃²), dA_z = δ⊙(h̃ − h_{t−1})⊙z(1−z), dA_r = (dA_h·Wh_hᵀ)⊙h_{t−1}⊙r(1−r),
    ∂L/∂h_{t−1} = δ⊙(1−z) + (dA_h·Wh_hᵀ)⊙r + [dA_z, dA_r]·Wh_zrᵀ."""
    dh_out, _h, zr, hh, h_prev = inputs
    xp, H = namespace(zr), hh.shape[-1]
    z, r = zr[:, :H], zr[:, H:]
    dh = dh_out + dstate[0]
    dAh = dh * z * (1 - hh * hh)
    drh = dAh @ Wh[:, 2 * H :].T
    dAzr = xp.concatenate([dh * (hh - h_prev) * z * (1 - z), drh * h_prev * r * (1 - r)], axis=-1)
    dh_prev = dh * (1 - z) + drh * r + dAzr @ Wh[:, : 2 * H].T
    return (dh_prev,), (xp.concatenate([dAzr, dAh], axis=-1),)


def _gru_dWh(h0, hs, saved, dA):
    """∂L/∂Wh: h_{t−1}ᵀ·dA for the z and r blocks, (r⊙h_{t−1})ᵀ·dA for the h̃ block."""
    xp, H = namespace(dA), dA.shape[-1] // 3
    h_prev, zr = (xp.stack(a) if isinstance(a, tuple) else a for a in (saved[3], saved[1]))
    r = zr[..., H:]
    return xp.concatenate(
        [_flat(h_prev).T @ _flat(dA[..., : 2 * H]), _flat(r * h_prev).T @ _flat(dA[..., 2 * H :])],
        axis=1,
    )


RNN_CELL = Cell("RNN", 1, 1, _rnn_step, _rnn_back, _dWh_plain)
LSTM_CELL = Cell("LSTM", 4, 2, _lstm_step, _lstm_back, _dWh_plain, (0, 2, 3), _lstm_back_into)
GRU_CELL = Cell("GRU", 3, 1, _gru_step, _gru_back, _gru_dWh, (0, 1))


def input_scale(cell: Cell, hidden: int, dtype):
    """The column scale m of ``Cell``'s docstring (½ on the σ blocks, 1 elsewhere) as a
    NumPy array, or None for a cell without σ blocks: ``through_time`` takes the input's
    share of the pre-activations scaled by it, x·(Wx⊙m) + b⊙m, scaled once in the small
    weights rather than in every step's (N, kH) rows."""
    if not cell.sigmoid_blocks:
        return None
    half = np.isin(np.arange(cell.k * hidden) // hidden, cell.sigmoid_blocks)
    return np.where(half, 0.5, 1.0).astype(dtype)


def through_time(cell: Cell, Wh, a, state0: tuple):
    """The recurrence over time-major pre-activations ``a`` (T, N, kH), each step's
    x_t·Wx + b (or any other input share) with its columns scaled by ``input_scale``:
    -> (hs (T, N, H), the final state, what the backward reads)."""
    xp, H = namespace(a), Wh.shape[0]
    m = input_scale(cell, H, a.dtype)
    P = Wh
    if m is not None:
        P = (Wh * xp.asarray(m), xp.asarray(m), xp.asarray((m == 0.5) * m))  # k = ½ on σ
    final, saved = scan(
        lambda s, at: cell.step(P, s, at[0]), tuple(state0), (a,), stack=xp is not np
    )
    return (xp.stack(saved[0]) if xp is np else saved[0]), final, saved


def back_through_time(cell: Cell, Wh, saved, dhs, dfinal: tuple):
    """BPTT from ``through_time``'s ``saved`` and the time-major ∂L/∂hs (T, N, H) and
    ∂L/∂(final state): -> (∂L/∂(start state), every step's gate gradient dA (T, N, kH)).
    On NumPy a cell with ``back_into`` writes each dA_t straight into the (T, N, kH)
    array returned, not into T arrays stacked after."""
    if cell.back_into is not None and namespace(dhs, *dfinal) is np:
        dA = np.empty((*dhs.shape[:2], Wh.shape[1]), dhs.dtype)
        dstate = tuple(dfinal)
        for t in range(dhs.shape[0] - 1, -1, -1):
            dstate = cell.back_into(Wh, dstate, (dhs[t], *(s[t] for s in saved)), dA[t])
        return dstate, dA
    dstate0, (dA,) = scan(
        lambda d, inputs: cell.back(Wh, d, inputs), tuple(dfinal), (dhs, *saved), reverse=True
    )
    return dstate0, dA


def _split_input(name: str, cell: Cell, inp):
    """``x`` or ``(x, h0[, c0])`` -> (x, the states given or None)."""
    if isinstance(inp, tuple | list):
        if len(inp) != 1 + cell.n_state:
            want = "(x, h0, c0)" if cell.n_state == 2 else "(x, h0)"
            raise ValueError(f"{name}: expected x or a tuple {want}, got a tuple of {len(inp)}")
        return inp[0], tuple(inp[1:])
    return inp, None


def _check_input(name: str, x, states, Wx, hidden: int) -> None:
    check_ndim(name, x, 3, "input (N, T, D)")
    check_dtype(name, x, Wx.dtype)
    n, steps, d = x.shape
    if d != Wx.shape[0]:
        raise ValueError(
            f"{name}: expected input shape (N, T, {Wx.shape[0]}), got {tuple(x.shape)}"
        )
    if steps < 1:
        raise ValueError(f"{name}: expected at least one time step, got shape {tuple(x.shape)}")
    for which, s in zip(("h0", "c0"), states or (), strict=False):
        check_dtype(name, s, Wx.dtype, which)
        if tuple(s.shape) != (n, hidden):
            raise ValueError(
                f"{name}: expected {which} of shape {(n, hidden)}, got {tuple(s.shape)}"
            )


def _check_params(name: str, params, hidden: int, k: int):
    try:
        Wx, Wh, b = params["Wx"], params["Wh"], params["b"]
    except (KeyError, TypeError):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(
            f"{name}: expected params with keys ['Wh', 'Wx', 'b'], got {got}"
        ) from None
    want = {"Wh": (hidden, k * hidden), "b": (k * hidden,)}
    for key, arr in (("Wh", Wh), ("b", b)):
        if tuple(arr.shape) != want[key]:
            raise ValueError(f"{name}: expected {key} of shape {want[key]}, got {tuple(arr.shape)}")
    if Wx.ndim != 2 or Wx.shape[1] != k * hidden:
        raise ValueError(f"{name}: expected Wx of shape (D, {k * hidden}), got {tuple(Wx.shape)}")
    return Wx, Wh, b


def _recurrent(cell: Cell, hidden: int, return_state: bool, Wx_init, Wh_init, name: str | None):
    name = name or f"{cell.name}({hidden}{', return_state=True' if return_state else ''})"
    if not (isinstance(hidden, int) and hidden >= 1):
        raise ValueError(f"{name}: hidden must be a positive int, got {hidden!r}")
    wx_init, wh_init = initializers.get(Wx_init), initializers.get(Wh_init)
    k, H = cell.k, hidden

    def init(rng, in_shape, dtype=np.float32):
        x_shape = in_shape[0] if in_shape and isinstance(in_shape[0], tuple | list) else in_shape
        if len(x_shape) != 3 or x_shape[-1] < 1:
            raise ValueError(f"{name}: expected an input shape (N, T, D), got {shape_str(x_shape)}")
        r_x, r_h = split_rng(rng, 2)
        d = int(x_shape[-1])
        params = {
            "Wx": wx_init(r_x, (d, k * H), dtype, fan_in=d, fan_out=k * H),
            "Wh": wh_init(r_h, (H, k * H), dtype, fan_in=H, fan_out=k * H),
            "b": np.zeros(k * H, dtype),
        }
        hs = (x_shape[0], x_shape[1], H)
        return ((hs, *[(x_shape[0], H)] * cell.n_state) if return_state else hs), params

    def forward(params, inp, *, train=False, rng=None):
        Wx, Wh, b = _check_params(name, params, H, k)
        x, given = _split_input(name, cell, inp)
        _check_input(name, x, given, Wx, H)
        xp = namespace(x, Wx)
        n, steps, _ = x.shape
        state0 = given if given is not None else (xp.zeros((n, H), x.dtype),) * cell.n_state
        xt = x.transpose(1, 0, 2)  # time-major: every step reads contiguous rows
        m = input_scale(cell, H, x.dtype)
        Wx_m, b_m = (Wx, b) if m is None else (Wx * xp.asarray(m), b * xp.asarray(m))
        a = iadd(_flat(xt) @ Wx_m, b_m).reshape(steps, n, k * H)
        hs_t, final, saved = through_time(cell, Wh, a, state0)
        # A zero start state is None here: ∂L/∂Wh then skips h0ᵀ·dA_0, a product of zeros.
        cache = {"x": xt, "Wx": Wx, "Wh": Wh, "hs": hs_t, "saved": saved}
        cache["state0"] = tuple(state0) if given is not None else (None,) * cell.n_state
        hs = hs_t.transpose(1, 0, 2)
        if given is not None:  # the input gradient then has the input's structure
            cache["given"] = xp.zeros((0,), x.dtype)
        return ((hs, *final) if return_state else hs), cache

    def backward(cache, dout, *, need_dx=True):
        xt, Wx, Wh, state0, saved = (cache[key] for key in ("x", "Wx", "Wh", "state0", "saved"))
        steps, n, _ = xt.shape
        xp = namespace(xt, *saved)
        dhs, dfinal = (dout[0], tuple(dout[1:])) if return_state else (dout, None)
        check_dout(name, dhs, (n, steps, H), xt.dtype)
        for ds in dfinal or ():
            check_dout(name, ds, (n, H), xt.dtype)
        if dfinal is None:
            dfinal = (xp.zeros((n, H), xt.dtype),) * cell.n_state
        dstate0, dA = back_through_time(cell, Wh, saved, dhs.transpose(1, 0, 2), dfinal)
        dA2 = _flat(dA)
        grads = {
            "Wx": _flat(xt).T @ dA2,
            "Wh": cell.dWh(state0[0], cache["hs"], saved, dA),
            "b": dA2.sum(axis=0),
        }
        if not need_dx:
            return grads, None
        dx = (dA @ Wx.T).transpose(1, 0, 2)
        return grads, ((dx, *dstate0) if "given" in cache else dx)

    return Layer(name, init, forward, backward)


def RNN(
    hidden: int,
    *,
    return_state: bool = False,
    Wx_init="xavier",
    Wh_init="xavier",
    name: str | None = None,
) -> Layer:
    """Elman RNN through time (the book's ``TimeRNN``): h_t = tanh(x_t·Wx + h_{t−1}·Wh + b).

    BPTT: dA_t = (∂L/∂h_t + dA_{t+1}·Whᵀ) ⊙ (1 − h_t²).  Input ``x`` or ``(x, h0)``;
    output ``hs`` or, with ``return_state``, ``(hs, h_T)`` (see the module docstring).
    Weights N(0, 1/fan_in) as the book's (``xavier``), b = 0.
    """
    return _recurrent(RNN_CELL, hidden, return_state, Wx_init, Wh_init, name)


def LSTM(
    hidden: int,
    *,
    return_state: bool = False,
    Wx_init="xavier",
    Wh_init="xavier",
    name: str | None = None,
) -> Layer:
    """LSTM through time (the book's ``TimeLSTM``), gates in its order f, g, i, o:

    [f, g, i, o] = [σ, tanh, σ, σ](x_t·Wx + h_{t−1}·Wh + b), c_t = f⊙c_{t−1} + g⊙i,
    h_t = o⊙tanh(c_t).  The backward of one step is ``_lstm_back``'s docstring.  Input ``x``
    or ``(x, h0, c0)``; output ``hs`` or, with ``return_state``, ``(hs, h_T, c_T)``.
    """
    return _recurrent(LSTM_CELL, hidden, return_state, Wx_init, Wh_init, name)


def GRU(
    hidden: int,
    *,
    return_state: bool = False,
    Wx_init="xavier",
    Wh_init="xavier",
    name: str | None = None,
) -> Layer:
    """GRU through time (the book's ``TimeGRU``), blocks z, r, h̃:

    z = σ(x·Wx_z + h·Wh_z + b_z), r = σ(x·Wx_r + h·Wh_r + b_r),
    h̃ = tanh(x·Wx_h + (r⊙h)·Wh_h + b_h), h_t = (1 − z)⊙h_{t−1} + z⊙h̃.
    The backward of one step is ``_gru_back``'s docstring.  Input ``x`` or ``(x, h0)``;
    output ``hs`` or, with ``return_state``, ``(hs, h_T)``.
    """
    return _recurrent(GRU_CELL, hidden, return_state, Wx_init, Wh_init, name)


def Bidirectional(forward_layer: Layer, backward_layer: Layer | None = None, *, name=None):
    """Two recurrent layers over ``x`` and over ``x`` reversed in time, outputs concatenated
    (the book's ``TimeBiLSTM``): y = [f(x), rev(g(rev(x)))] along the features.

    ∂L/∂x = ∂L/∂x through f of the first half of ∂L/∂y + rev(∂L/∂x through g of the
    reversed second half).  ``backward_layer`` defaults to a layer like ``forward_layer``
    with params of its own.  Params ``(f's, g's)``.
    """
    f, g = forward_layer, backward_layer or forward_layer
    name = name or f"Bidirectional({f.name}{'' if backward_layer is None else ', ' + g.name})"

    def init(rng, in_shape, dtype=np.float32):
        r_f, r_g = split_rng(rng, 2)
        (s_f, p_f), (s_g, p_g) = f.init(r_f, in_shape, dtype), g.init(r_g, in_shape, dtype)
        if not (isinstance(s_f[0], int) and isinstance(s_g[0], int)):
            raise ValueError(f"{name}: the layers must output one array (no return_state)")
        return (*s_f[:-1], s_f[-1] + s_g[-1]), (p_f, p_g)

    def forward(params, x, *, train=False, rng=None):
        if not (isinstance(params, tuple) and len(params) == 2):
            raise ValueError(
                f"{name}: expected params (forward's, backward's), got {type(params).__name__}"
            )
        check_ndim(name, x, 3, "input (N, T, D)")
        y_f, c_f = f.forward(params[0], x, train=train)
        y_g, c_g = g.forward(params[1], x[:, ::-1], train=train)
        out = namespace(y_f).concatenate([y_f, y_g[:, ::-1]], axis=-1)
        return out, (c_f, c_g, namespace(y_f).zeros((0, y_f.shape[-1]), y_f.dtype))

    def backward(cache, dout, *, need_dx=True):
        c_f, c_g, width = cache
        h = width.shape[1]
        dp_f, dx_f = f.backward(c_f, dout[..., :h], need_dx=need_dx)
        dp_g, dx_g = g.backward(c_g, dout[:, ::-1, h:], need_dx=need_dx)
        return (dp_f, dp_g), (dx_f + dx_g[:, ::-1] if need_dx else None)

    return Layer(name, init, forward, backward)


def BiLSTM(hidden: int, *, name: str | None = None) -> Layer:
    """``Bidirectional(LSTM(hidden))``: (N, T, D) -> (N, T, 2·hidden) (the book's
    ``TimeBiLSTM``; params ``(forward LSTM's, backward LSTM's)``)."""
    return Bidirectional(LSTM(hidden), name=name or f"BiLSTM({hidden})")


__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "BiLSTM",
    "Bidirectional",
    "Cell",
    "back_through_time",
    "input_scale",
    "scan",
    "through_time",
]
