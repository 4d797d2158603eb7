"""The GPT of ``funcnet.gpt`` written directly in jax.numpy, from nanoGPT's ``model.py``: an
independent reference for the tests and the peer of ``benchmarks/gpt.py`` (a helper, not a
test file).  It shares no code with funcnet's layers; only ``flat`` knows funcnet's params
layout, to give both models the same numbers."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def flat(params, tie: bool = True) -> dict:
    """funcnet's GPT params (dropout 0) as nanoGPT-like names: wte, wpe, one dict per
    block, ln_f, and lm_head when the output layer is not tied.  A model without biases
    (``bias=False``) has no ``*_b`` / ``b_*`` entries."""
    if tie:
        wte, body, head = params["wte"], params["body"], None
    else:
        wte, body, head = params[0]["W"], params[1], params[2]["W"]
    blocks = []
    for (ln1, attn), (ln2, fc, _gelu, proj) in body[1:-1]:
        blk = {
            "ln1_g": ln1["gamma"], "ln1_b": ln1.get("beta"),
            "W_qkv": attn["W_qkv"], "b_qkv": attn.get("b_qkv"), "W_o": attn["W_o"],
            "b_o": attn.get("b_o"), "ln2_g": ln2["gamma"], "ln2_b": ln2.get("beta"),
            "W_fc": fc["W"], "b_fc": fc.get("b"), "W_proj": proj["W"], "b_proj": proj.get("b"),
        }  # fmt: skip
        blocks.append({k: v for k, v in blk.items() if v is not None})
    out = {"wte": wte, "wpe": body[0]["W"], "blocks": blocks}
    out["lnf_g"] = body[-1]["gamma"]
    if "beta" in body[-1]:
        out["lnf_b"] = body[-1]["beta"]
    if head is not None:
        out["lm_head"] = head
    return out


def _layer_norm(x, g, b=None, eps=1e-5):
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    y = (x - mu) * jax.lax.rsqrt(var + eps) * g
    return y if b is None else y + b


def _linear(x, W, b=None):
    return x @ W if b is None else x @ W + b


def _attention(x, blk, heads):
    n, t, c = x.shape
    q, k, v = jnp.split(_linear(x, blk["W_qkv"], blk.get("b_qkv")), 3, axis=-1)
    q, k, v = (a.reshape(n, t, heads, c // heads).transpose(0, 2, 1, 3) for a in (q, k, v))
    att = jnp.einsum("nhid,nhjd->nhij", q, k) / jnp.sqrt(jnp.asarray(c // heads, x.dtype))
    att = jnp.where(jnp.tril(jnp.ones((t, t), bool)), att, -jnp.inf)
    y = jnp.einsum("nhij,nhjd->nhid", jax.nn.softmax(att, axis=-1), v)
    return _linear(y.transpose(0, 2, 1, 3).reshape(n, t, c), blk["W_o"], blk.get("b_o"))


def logits(p: dict, ids, heads: int, gelu: str = "erf"):
    """(N, T) ids → (N, T, vocab) logits; ``gelu``: "erf" (exact, nanoGPT's) or "tanh"."""
    x = p["wte"][ids] + p["wpe"][: ids.shape[1]]
    for blk in p["blocks"]:
        x = x + _attention(_layer_norm(x, blk["ln1_g"], blk.get("ln1_b")), blk, heads)
        h = _linear(_layer_norm(x, blk["ln2_g"], blk.get("ln2_b")), blk["W_fc"], blk.get("b_fc"))
        h = jax.nn.gelu(h, approximate=gelu == "tanh")
        x = x + _linear(h, blk["W_proj"], blk.get("b_proj"))
    x = _layer_norm(x, p["lnf_g"], p.get("lnf_b"))
    return x @ (p["lm_head"] if "lm_head" in p else p["wte"].T)


def loss(p: dict, ids, targets, heads: int, gelu: str = "erf"):
    """Mean cross-entropy over every position."""
    z = logits(p, ids, heads, gelu)
    logp = jax.nn.log_softmax(z, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))
