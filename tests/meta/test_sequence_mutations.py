"""``funcnet check`` catches a slightly wrong backward in the second book's sequence layers,
its time loss and the seq2seq decoders.

Each mutation (``ast_mutation``: ``old`` as the code reads today, every name a wildcard)
puts a factor 1.001, a dropped reversal or a wrong update into one term of a backward; one
of the sequence cases whose label contains ``catch`` must then fail.
"""

from __future__ import annotations

import pytest
from ast_mutation import Mutation as M
from catalogue import apply, failures

from funcnet import losses

REC = "funcnet.layers.recurrent"
EMB = "funcnet.layers.embedding"
ATT = "funcnet.layers.attention"
S2S = "funcnet.seq2seq"
# The kinds of check.sequence_entries: a catch label picks the same cases as there.
SEQUENCE = {"recurrent", "embedding", "attention", "seq2seq", "loss"}

LSTM_DA = """dA = xp.concatenate(
    [
        dc * c_prev * f * (1 - f),
        dc * i * (1 - g * g),
        dc * g * i * (1 - i),
        dh * tc * o * (%s - o),
    ],
    axis=-1,
)"""
GRU_DH = "dh_prev = dh * (1 - z) + %s + dAzr @ Wh[:, : 2 * H].T"
GRADS = """grads = {
    "Wx": _flat(xt).T @ dA2,
    "Wh": cell.dWh(state0[0], cache["hs"], saved, dA),
    "b": %s,
}"""
DX = 'return grads, (%s if "given" in cache else dx)'
TIME_LOSS = "d = d * (keep[:, None] * %s).astype(p.dtype)"
EMB_JAX = "dW = xp.zeros(W.shape, W.dtype).at[flat_ids].%s"

MUTATIONS = [
    M(REC, "dA = (dh + dstate[0]) * (1 - h * h)", "dA = (dh + dstate[0]) * (1.001 - h * h)", "RNN",
      "numpy"),
    M(REC, "return (dA @ Wh.T, dc * f), (dA,)", "return (dA @ Wh.T, dc * f * 1.001), (dA,)",
      "LSTM(4)", "jax"),
    M(REC, LSTM_DA % "1", LSTM_DA % "1.001", "LSTM(4)", "jax"),
    # On NumPy, δc⊙f is `dc *= f`, then returned: a factor there is a factor on the return
    # (the statement alone matches every in-place product of the function).
    M(REC, "return (dA @ Wh.T, dc), (dA,)", "return (dA @ Wh.T, 1.001 * dc), (dA,)",
      "LSTM(4)", "numpy"),
    M(REC, "(3, tc, dh)", "(3, tc, 1.001 * dh)", "LSTM(4)", "numpy"),
    # The g block's 1 − g² is g², then `np.subtract(1, dg, out=dg)` (as is δc's 1 − tanh²):
    # g² − 0.001 there makes it 1.001 − g².
    M(REC, "np.multiply(g, g, out=dg)", "np.subtract(np.multiply(g, g, out=dg), 0.001, out=dg)",
      "LSTM(4)", "numpy"),
    M(REC, GRU_DH % "drh * r", GRU_DH % "drh * r * 1.001", "GRU(4)", "numpy"),
    M(REC, "_flat(r * h_prev).T", "_flat(1.001 * r * h_prev).T", "GRU(4)", "numpy"),
    M(REC, GRADS % "dA2.sum(axis=0)", GRADS % "1.001 * dA2.sum(axis=0)", "RNN(4)", "numpy"),
    M(REC, DX % "(dx, *dstate0)", DX % "(dx, *(1.001 * s for s in dstate0))", "state", "numpy"),
    M(REC, "dx_f + dx_g[:, ::-1]", "dx_f + dx_g", "Bidirectional", "numpy"),
    # dW[flat_ids] += flat as an expression: a repeated id keeps one row, not the sum.
    M(EMB, "np.add.at(dW, flat_ids, flat)", "dW.__setitem__(flat_ids, dW[flat_ids] + flat)",
      "Embedding", "numpy"),
    M(EMB, EMB_JAX % "add(flat)", EMB_JAX % "set(flat)", "Embedding", "jax"),
    M(ATT, "da = da + da_in", "da = da + 1.001 * da_in", "return_weights", "numpy"),
    M(ATT, "d_enc = xp.swapaxes(a, 1, 2) @ dc + xp.swapaxes(ds, 1, 2) @ dec",
      "d_enc = xp.swapaxes(a, 1, 2) @ dc + 1.001 * xp.swapaxes(ds, 1, 2) @ dec", "Attention",
      "numpy"),
    M("funcnet.losses", TIME_LOSS % "(dloss / count)", TIME_LOSS % "(dloss / (count + 1))",
      "time_", "numpy"),
    M(S2S, "dlast = dh0 + dpeek", "dlast = dh0 + 1.001 * dpeek", "peeky", "numpy"),
    M(S2S, "dhs = dhs[..., H:] + dhs_att", "dhs = dhs[..., H:] + 1.001 * dhs_att", "atten",
      "numpy"),
    M(S2S, "dlast = dh0 + dpeek", "dlast = 1.001 * dh0 + dpeek", "seq2seq(", "numpy"),
    # The peeky decoder's once-per-sequence products: the encoder state's share of each.
    M(S2S, "xp.concatenate([h.T @ S, _flat(et).T @ dA2], axis=0)",
      "xp.concatenate([1.001 * (h.T @ S), _flat(et).T @ dA2], axis=0)", "peeky", "numpy"),
    M(S2S, "iadd(S @ Wx[:H].T, dh0)", "iadd(1.001 * (S @ Wx[:H].T), dh0)", "peeky", "numpy"),
    M(S2S, "namespace(g).concatenate([h.T @ G, _flat(hs).T @ _flat(g)], axis=0)",
      "namespace(g).concatenate([1.001 * (h.T @ G), _flat(hs).T @ _flat(g)], axis=0)", "peeky",
      "numpy"),
    M(S2S, "(G @ W[:H].T, g @ W[H:].T)", "(1.001 * (G @ W[:H].T), g @ W[H:].T)", "peeky",
      "numpy"),
]  # fmt: skip


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_a_slightly_wrong_backward_is_caught(monkeypatch, mutation):
    where = apply(monkeypatch, mutation)
    if where == "funcnet.losses.time_softmax_cross_entropy_with":
        # The module's loss was made at import, by the original: make it again.
        monkeypatch.setattr(
            losses, "time_softmax_cross_entropy", losses.time_softmax_cross_entropy_with(-1)
        )
    assert failures(mutation.catch, mutation.arrays, SEQUENCE), (
        f"{mutation.catch!r} missed {mutation.new!r} in {where}"
    )
