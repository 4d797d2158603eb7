"""``funcnet check`` catches a slightly wrong backward in the transformer's layers and in
the character GPT's token embedding (layers.Embedding) and weight tying.

Each mutation (``ast_mutation``: ``old`` as the code reads today, every name a wildcard)
puts a factor 1.001, a wrong axis or a wrong update into one term of a backward; the cases
whose label contains ``catch`` must then fail.
"""

from __future__ import annotations

import pytest
from ast_mutation import Mutation as M
from catalogue import apply, failures

TF = "funcnet.layers.transformer"
GPT = "funcnet.gpt"

ATTENTION_DPARAMS = 'dparams["b_qkv"], dparams["b_o"] = %s, d2.sum(axis=0)'
LAYERNORM_DPARAMS = 'dparams = {"gamma": %s, "beta": %s}'
GELU_TANH = "(%s - t * t) * (_SQRT_2_OVER_PI * (1 + 3 * _GELU_A * (xc * xc)))"

# Every one must be caught on NumPy and on JAX arrays, each on its own.
TRANSFORMER_MUTATIONS = [
    M(
        TF,
        "return dparams, imul(dx, rstd)",
        "return dparams, imul(1.001 * dx, rstd)",
        "LayerNorm",
        inside="LayerNorm",
    ),
    M(
        TF,
        LAYERNORM_DPARAMS % ("(d2 * x2).sum(axis=0)", "d2.sum(axis=0)"),
        LAYERNORM_DPARAMS % ("1.001 * (d2 * x2).sum(axis=0)", "d2.sum(axis=0)"),
        "LayerNorm",
    ),
    M(
        TF,
        LAYERNORM_DPARAMS % ("(d2 * x2).sum(axis=0)", "d2.sum(axis=0)"),
        LAYERNORM_DPARAMS % ("(d2 * x2).sum(axis=0)", "1.001 * d2.sum(axis=0)"),
        "LayerNorm",
    ),
    M(
        TF,
        "dx = dx - xn * (g * xn).mean(axis=-1, keepdims=True)",
        "dx = dx - 1.001 * xn * (g * xn).mean(axis=-1, keepdims=True)",
        "LayerNorm",
    ),
    M(TF, GELU_TANH % "1", GELU_TANH % "1.001", "Gelu"),
    M(
        TF,
        "xp.exp(-0.5 * (xc * xc)) * (2 / math.sqrt(2 * math.pi))",
        "xp.exp(-0.5 * (xc * xc)) * (2.002 / math.sqrt(2 * math.pi))",
        "Gelu(erf)",
    ),
    M(
        TF,
        "return (), imul(iadd(xc * slope, 1 + t), dout * 0.5)",
        "return (), imul(iadd(xc * slope, 1.001 + t), dout * 0.5)",
        "Gelu",
    ),
    M(
        TF,
        "dW = dout.sum(axis=0)",
        "dW = 1.001 * dout.sum(axis=0)",
        "PositionalEmbedding",
        inside="PositionalEmbedding",
    ),
    M(
        TF,
        'return {"W": dW}, (dout if need_dx else None)',
        'return {"W": dW}, (1.001 * dout if need_dx else None)',
        "PositionalEmbedding",
    ),
    M(
        TF,
        "dv = p.swapaxes(-1, -2) @ dy",
        "dv = 1.001 * p.swapaxes(-1, -2) @ dy",
        "one head",
        inside="_attention_backward",
    ),
    M(
        TF,
        "dp = dy @ v.swapaxes(-1, -2)",
        "dp = 1.001 * dy @ v.swapaxes(-1, -2)",
        "CausalSelfAttention(2)",
        inside="_attention_backward",
    ),
    M(
        TF,
        "ds = imul(dp - (dp * p).sum(axis=-1, keepdims=True), p)",
        "ds = imul(dp - (dp * p).sum(axis=-2, keepdims=True), p)",
        "CausalSelfAttention(2)",
    ),
    M(
        TF,
        "dq, dk = ds @ k, ds.swapaxes(-1, -2) @ q",
        "dq, dk = 1.001 * ds @ k, ds.swapaxes(-1, -2) @ q",
        "one head",
    ),
    M(
        TF,
        "dq, dk = ds @ k, ds.swapaxes(-1, -2) @ q",
        "dq, dk = ds @ k, 1.001 * ds.swapaxes(-1, -2) @ q",
        "CausalSelfAttention(2)",
    ),
    M(
        TF,
        "ds = imul(ds, xp.asarray(1 / math.sqrt(c // heads), dtype=ds.dtype))",
        "ds = imul(ds, xp.asarray(1 / math.sqrt(c / heads + 0.01), dtype=ds.dtype))",
        "CausalSelfAttention(2)",
    ),
    M(
        TF,
        ATTENTION_DPARAMS % "d3.sum(axis=0)",
        ATTENTION_DPARAMS % "1.001 * d3.sum(axis=0)",
        "one position",
    ),
    M(
        TF,
        'dparams = {"W_o": y.reshape(-1, c).T @ d2}',
        'dparams = {"W_o": 1.001 * y.reshape(-1, c).T @ d2}',
        "one position",
    ),
    M(
        TF,
        "return dparams, (dqkv @ W_qkv.T if need_dx else None)",
        "return dparams, (1.001 * dqkv @ W_qkv.T if need_dx else None)",
        "pre-norm block",
    ),
]

TIED_RETURN = 'return {"wte": dW + %s, "body": d_body}, None'
EMB = "funcnet.layers.embedding"
# Weight tying reads and scatters its rows through layers.Embedding's code: a wrong
# scatter-add there must be caught by the tying case as well as the embedding's.
SCATTER_JAX = "dW = xp.zeros(W.shape, W.dtype).at[flat_ids].%s"

GPT_MUTATIONS = [
    M(
        GPT,
        TIED_RETURN % "embedding.scatter_add(ids, de, W)",
        TIED_RETURN % "1.001 * embedding.scatter_add(ids, de, W)",
        "weight tying",
    ),
    M(
        GPT,
        "dW = d2.T @ h.reshape(-1, dim)",
        "dW = 1.001 * d2.T @ h.reshape(-1, dim)",
        "weight tying",
        inside="tied",
    ),
    M(
        GPT,
        "d_body, de = body.backward(c_body, dout @ W, need_dx=True)",
        "d_body, de = body.backward(c_body, 1.001 * dout @ W, need_dx=True)",
        "weight tying",
    ),
    *(
        m
        for catch in ("token embedding", "weight tying")
        for m in (
            M(EMB, "np.add.at(dW, flat_ids, flat)", "np.add.at(dW, flat_ids, 1.001 * flat)",
              catch, "numpy"),
            # dW[ids] = rows as an expression: a repeated id keeps one row, not the sum.
            M(EMB, "np.add.at(dW, flat_ids, flat)", "dW.__setitem__(flat_ids, flat)", catch,
              "numpy"),
            M(EMB, SCATTER_JAX % "add(flat)", SCATTER_JAX % "add(1.001 * flat)", catch, "jax"),
            M(EMB, SCATTER_JAX % "add(flat)", SCATTER_JAX % "set(flat)", catch, "jax"),
        )
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    "mutation", TRANSFORMER_MUTATIONS, ids=[m.id for m in TRANSFORMER_MUTATIONS]
)
def test_a_slightly_wrong_transformer_backward_is_caught(monkeypatch, mutation):
    where = apply(monkeypatch, mutation)
    for arrays in mutation.arrays.split():
        assert failures(mutation.catch, arrays), (
            f"{mutation.catch!r} on {arrays} missed {mutation.new!r} in {where}"
        )


@pytest.mark.parametrize(("catch", "arrays"), sorted({(m.catch, m.arrays) for m in GPT_MUTATIONS}))
def test_the_gpt_cases_pass(catch, arrays):
    assert not failures(catch, arrays)


@pytest.mark.parametrize("mutation", GPT_MUTATIONS, ids=[m.id for m in GPT_MUTATIONS])
def test_a_wrong_embedding_or_tying_backward_is_caught(monkeypatch, mutation):
    where = apply(monkeypatch, mutation)
    assert failures(mutation.catch, mutation.arrays), (
        f"{mutation.catch!r} missed {mutation.new!r} in {where}"
    )
