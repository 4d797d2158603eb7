"""The character GPT: its hand-written gradients (the embedding, weight tying, the whole
model with and without biases, either GELU) against jax.vjp, the model against the same
model written in jax.numpy, the loss, nanoGPT's optimizer and schedule against optax and
nanoGPT's formula, the corpus, the windows, the sampler and a short training run."""

from __future__ import annotations

import math

import gpt_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnet as fn
from funcnet import gpt, optim, shakespeare


def _ids(rng, shape, vocab):
    return rng.integers(0, vocab, shape).astype(np.int32)


def _randomize(params, rng, scale=0.3):
    """Random values everywhere (LayerNorm's γ and β too): a zero or a one can hide a term."""
    return jax.tree_util.tree_map(lambda a: rng.standard_normal(a.shape) * scale, params)


def _check_params_vjp(layer, params, ids, arrays, seed=0):
    def forward(p):
        return layer.forward(p["params"], ids)

    def backward(cache, g):
        return ({"params": layer.backward(cache, g)[0]},)

    # Inside a dict: the report prints np.shape of each primal, which a tuple of dicts lacks.
    return fn.check_vjp(
        layer.name, forward, backward, {"p": {"params": params}}, seed=seed, arrays=arrays,
        numerical=arrays == "numpy",
    )  # fmt: skip


@pytest.mark.parametrize("arrays", ["numpy", "jax"])
def test_the_untied_embedding_sums_repeated_ids(arrays):
    """The untied model's token embedding is layers.Embedding at GPT-2's 0.02."""
    rng = np.random.default_rng(0)
    layer = fn.Embedding(5, 3, W_init=0.02)
    _, p = layer.init(0, (-1, 4), dtype=np.float64)
    ids = np.array([[0, 1, 1, 4], [4, 4, 2, 1]], dtype=np.int32)  # repeats; id 3 unused
    _check_params_vjp(layer, _randomize(p, rng), ids, arrays)
    y, cache = layer.forward(p, ids)
    dp, dx = layer.backward(cache, np.ones_like(y))
    assert dx is None
    np.testing.assert_array_equal(dp["W"][:, 0], [1, 3, 1, 0, 3])


VARIANTS = [(True, False, "erf"), (False, False, "erf"), (True, True, "tanh"), (False, True, "erf")]


@pytest.mark.parametrize("arrays", ["numpy", "jax"])
@pytest.mark.parametrize(("tie", "bias", "gelu"), VARIANTS)
def test_the_whole_model_backward_matches_jax_vjp(tie, bias, gelu, arrays):
    """Every layer at once, weight tying's two uses of one matrix included; one head."""
    rng = np.random.default_rng(1)
    net = gpt.gpt(
        7, layers=2, heads=1 if tie else 2, width=4, context=5, tie=tie, bias=bias, gelu=gelu
    )
    _, p = net.init(0, (-1, 5), dtype=np.float64)
    _check_params_vjp(net, _randomize(p, rng), _ids(rng, (2, 4), 7), arrays)


def test_the_tied_gradient_is_the_sum_of_both_uses():
    rng = np.random.default_rng(2)
    body = fn.pipeline(fn.LayerNorm())
    net = gpt.tied(6, 4, body)
    _, p = net.init(0, (-1, 3), dtype=np.float64)
    ids = _ids(rng, (2, 3), 6)
    g = rng.standard_normal((2, 3, 6))
    _, cache = net.forward(p, ids)
    dW = net.backward(cache, g)[0]["wte"]
    emb, out = fn.Embedding(6, 4), fn.MatMul(6)
    h, c_h = body.forward(p["body"], p["wte"][ids])
    d_out, dh = out.backward(out.forward({"W": p["wte"].T}, h)[1], g)
    _, de = body.backward(c_h, dh)
    d_emb, _ = emb.backward(emb.forward({"W": p["wte"]}, ids)[1], de)
    np.testing.assert_allclose(dW, d_out["W"].T + d_emb["W"], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("tie", "bias", "gelu"), VARIANTS)
def test_forward_and_gradients_match_the_jax_numpy_model(tie, bias, gelu):
    rng = np.random.default_rng(3)
    net = gpt.gpt(11, layers=2, heads=2, width=8, context=6, tie=tie, bias=bias, gelu=gelu)
    _, p = net.init(0, (-1, 6), dtype=np.float64)
    p = _randomize(p, rng)
    ids, targets = _ids(rng, (3, 6), 11), _ids(rng, (3, 6), 11)
    z, cache = net.forward(p, ids)
    want_z = ref.logits(ref.flat(p, tie), ids, 2, gelu)
    np.testing.assert_allclose(z, want_z, rtol=1e-11, atol=1e-12)
    value, lcache = gpt.token_cross_entropy.forward(z, targets)
    dp, _ = net.backward(cache, gpt.token_cross_entropy.backward(lcache))
    want_value, want = jax.value_and_grad(ref.loss)(ref.flat(p, tie), ids, targets, 2, gelu)
    assert value == pytest.approx(float(want_value), rel=1e-12)
    for a, b in zip(
        jax.tree_util.tree_leaves(ref.flat(dp, tie)), jax.tree_util.tree_leaves(want), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("tie", [True, False])
def test_init_is_gpt2s(tie):
    """nanoGPT's model: no biases, N(0, 0.02) for every matmul weight and both embeddings,
    the two projections into the residual stream 0.02/√(2·layers); 804,096 params (nanoGPT
    prints 0.80M: it leaves out the positional embedding's 8,192)."""
    net = gpt.gpt(65, layers=4, heads=4, width=128, context=64, tie=tie)
    _, p = net.init(0, (-1, 64))
    f = ref.flat(p, tie)
    assert sum(a.size for a in jax.tree_util.tree_leaves(p)) == 804_096 + (not tie) * 65 * 128
    for w in ("wte", "wpe") + (() if tie else ("lm_head",)):
        assert np.std(f[w]) == pytest.approx(0.02, rel=0.05), w
    for key in ("W_qkv", "W_fc"):
        assert np.std(f["blocks"][0][key]) == pytest.approx(0.02, rel=0.05)
    for key in ("W_o", "W_proj"):
        assert np.std(f["blocks"][1][key]) == pytest.approx(0.02 / math.sqrt(8), rel=0.05)
    assert np.all(f["lnf_g"] == 1) and not any(k.startswith("b_") for k in f["blocks"][0])
    assert fn.models.gpt(65, tie=tie).name == net.name
    _, p = gpt.gpt(65, bias=True).init(0, (-1, 64))
    assert np.all(ref.flat(p)["blocks"][0]["b_qkv"] == 0) and np.all(ref.flat(p)["lnf_b"] == 0)


def test_token_cross_entropy():
    rng = np.random.default_rng(4)
    z, t = rng.standard_normal((2, 3, 5)) * 3, _ids(rng, (2, 3), 5)
    for arrays in ("numpy", "jax"):
        fn.check_loss(gpt.token_cross_entropy, z, t, arrays=arrays, numerical=arrays == "numpy")
    value = gpt.token_cross_entropy.forward(z, t)[0]
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    assert value == pytest.approx(-np.take_along_axis(logp, t[..., None], -1).mean(), rel=1e-12)
    with pytest.raises(ValueError, match=r"token_cross_entropy: expected logits \(N, T, V\)"):
        gpt.token_cross_entropy.forward(z, t[:, :2])


def test_warmup_cosine_is_nanogpts_get_lr():
    def get_lr(it, lr=1e-3, warmup=100, decay=2000, min_lr=1e-4):  # nanoGPT's train.py
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        if it > decay:
            return min_lr
        ratio = (it - warmup) / (decay - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    schedule = optim.warmup_cosine(1e-3, 100, 2000, 1e-4)
    for it in (0, 1, 50, 99, 100, 101, 1000, 1999, 2000, 2001, 5000):
        assert float(schedule(np.int32(it))) == pytest.approx(get_lr(it), rel=1e-12)
        assert float(schedule(jnp.int32(it))) == pytest.approx(get_lr(it), rel=1e-5)
    with pytest.raises(ValueError, match="warmup_cosine"):
        optim.warmup_cosine(1e-3, 10, 10)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("bias", [False, True])
def test_decay_mask_decays_the_matmul_weights_only(tie, bias):
    """No decay on biases, LayerNorm and the embeddings (the issue's groups)."""
    net = gpt.gpt(9, layers=2, heads=1, width=4, context=3, tie=tie, bias=bias, dropout=0.1)
    _, p = net.init(0, (-1, 3))
    mask = gpt.decay_mask(p)
    assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(p)
    decayed = {
        a.shape: (a.ndim == 2)
        for a, m in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(mask), strict=True)
        if m
    }
    # W_qkv, W_o, the MLP's two weights, and the output projection when untied
    assert set(decayed) == {(4, 12), (4, 4), (4, 16), (16, 4)} | ({(4, 9)} if not tie else set())
    n_decayed = sum(jax.tree_util.tree_leaves(mask))
    assert n_decayed == 2 * 4 + (not tie)
    if not bias:  # the same groups in nanoGPT's names (the jax.numpy model's layout)
        named = gpt.decay_mask(ref.flat(gpt.gpt(9, 2, 1, 4, 3, tie=tie).init(0, (-1, 3))[1], tie))
        assert not named["wte"] and not named["wpe"] and not named["lnf_g"]
        assert sum(jax.tree_util.tree_leaves(named)) == n_decayed


def test_the_command_lines_recipes_are_the_named_ones():
    """funcnet train's defaults are NANOGPT_CPU; the flags the README gives, FAST_CPU."""
    from funcnet import tasks

    base = {"layers": 4, "heads": 4, "width": 128, "context": 64, "dropout": 0.0, "batch": 12,
            "iters": 2000, "lr": 1e-3, "eval_every": 0}  # fmt: skip
    assert tasks.gpt_recipe(base) == gpt.NANOGPT_CPU
    fast = {**base, "context": 128, "batch": 16, "iters": 3000, "lr": 3e-3}
    assert tasks.gpt_recipe(fast) == gpt.FAST_CPU._replace(min_lr=pytest.approx(3e-4))
    assert (gpt.NANOGPT_CPU.bias, gpt.NANOGPT_CPU.gelu) == (False, "erf")
    assert (gpt.FAST_CPU.bias, gpt.FAST_CPU.gelu) == (False, "erf")


def test_the_first_updates_use_nanogpts_rates_from_iteration_0():
    """Adam's first step moves an undecayed parameter by lr·g/(|g| + ε): its size is the rate
    of that step, which must be get_lr(0) = 1e-3/101, then get_lr(1) = 2e-3/101, ..."""
    net = gpt.gpt(9, layers=1, heads=1, width=4, context=3)
    _, p = net.init(0, (-1, 3), dtype=np.float64)
    opt = gpt.optimizer(gpt.NANOGPT_CPU)
    state = opt.init(p)
    ones = jax.tree_util.tree_map(lambda a: np.full(a.shape, 1e-3), p)  # norm < clip: unclipped
    for it in range(3):
        updates, state = opt.update(ones, state, p)
        gamma = updates["body"][-1]["gamma"]  # LayerNorm's γ: not decayed
        # a constant gradient g keeps Adam's corrected m/√v at g/(g + ε)
        np.testing.assert_allclose(gamma, -1e-3 * (it + 1) / 101 * 1e-3 / (1e-3 + 1e-8), rtol=1e-9)


def test_the_optimizer_steps_as_optax_does():
    """Clipping, then AdamW with the decay mask under the schedule: optax's chain."""
    rng = np.random.default_rng(5)
    net = gpt.gpt(9, layers=1, heads=2, width=4, context=3)
    _, p = net.init(0, (-1, 3), dtype=np.float64)
    r = gpt.Recipe(warmup=2, decay_iters=6)
    mine = gpt.optimizer(r)
    schedule = optim.warmup_cosine(r.lr, r.warmup, r.decay_iters, r.min_lr)
    theirs = optax.chain(
        optax.clip_by_global_norm(r.clip),
        optax.adamw(schedule, r.b1, r.b2, 1e-8, weight_decay=r.weight_decay, mask=gpt.decay_mask),
    )
    s1, s2 = mine.init(p), theirs.init(p)
    for _ in range(4):
        g = jax.tree_util.tree_map(lambda a: rng.standard_normal(a.shape), p)
        u1, s1 = mine.update(g, s1, p)
        u2, s2 = theirs.update(g, s2, p)
        for a, b in zip(jax.tree_util.tree_leaves(u1), jax.tree_util.tree_leaves(u2), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-15)
        p = optim.apply_updates(p, u1)


# --------------------------------------------------------------------------- data


def test_split_windows_and_validation_set():
    c = shakespeare.split("abcabcabcd" * 10)
    assert c.chars == "abcd" and len(c.train) == 90 and len(c.val) == 10
    assert c.decode(c.encode("dcba")) == "dcba"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        c.encode("z")
    x, t = gpt.windows(c.train, np.array([0, 5]), 4)
    np.testing.assert_array_equal(x[1], c.train[5:9])
    np.testing.assert_array_equal(t[1], c.train[6:10])
    np.testing.assert_array_equal(gpt.validation_starts(10, 3), [0, 3, 6])
    np.testing.assert_array_equal(gpt.validation_starts(10, 4), [0, 4])
    starts = gpt.random_starts(20, 4, 1000, np.random.default_rng(0))
    assert starts.min() == 0 and starts.max() == 15
    assert len(gpt.validation_starts(111_540, 64)) == 1742


def test_the_corpus_is_nanogpts_shakespeare_char():
    if shakespeare.find() is None:
        pytest.skip("tiny Shakespeare not found: set FUNCNET_SHAKESPEARE")
    c = shakespeare.load()
    assert c.vocab == 65 and c.chars.startswith("\n !$&',-.3:;?AB")
    assert (len(c.train), len(c.val)) == (1_003_854, 111_540)
    assert c.decode(c.train[:14]) == "First Citizen:"


# --------------------------------------------------------------------------- sampling, training


def test_generate_is_deterministic_and_slides_its_window():
    rng = np.random.default_rng(6)
    net = gpt.gpt(7, layers=1, heads=2, width=8, context=4)
    _, p = net.init(0, (-1, 4))
    p = jax.device_put(_randomize(p, rng, 1.0))
    prompt, key = jnp.asarray([3, 1], jnp.int32), jax.random.PRNGKey(0)
    run = jax.jit(lambda p, prompt, key, temp: gpt.generate(
        net, p, prompt, key, tokens=6, context=4, temperature=temp))  # fmt: skip
    ids = np.asarray(run(p, prompt, key, 0.9))
    assert ids.shape == (8,) and list(ids[:2]) == [3, 1]
    np.testing.assert_array_equal(ids, np.asarray(run(p, prompt, key, 0.9)))
    # The same draws by hand: the last ≤ 4 ids each time, the key split once per token.
    seq, k = [3, 1], key
    for _ in range(6):
        z = np.asarray(net.forward(p, np.asarray([seq[-4:]], np.int32))[0])[0, -1]
        k, sub = jax.random.split(k)
        seq.append(int(jax.random.categorical(sub, jnp.asarray(z) / 0.9)))
    assert seq == list(ids)
    others = {tuple(np.asarray(run(p, prompt, jax.random.PRNGKey(s), 50.0))) for s in range(4)}
    assert len(others) > 1


def test_train_gpt_learns_a_small_text_and_samples_it():
    corpus = shakespeare.split("to be or not to be, that is the question. " * 40)
    # 90 steps: the bias-free model (nanoGPT's) needs more than 60 to pass 1.5 here.
    r = gpt.Recipe(layers=1, heads=2, width=16, context=8, batch=8, iters=90, lr=1e-2,
                   min_lr=1e-3, warmup=5, decay_iters=90, eval_every=45)  # fmt: skip
    lines = []
    result = gpt.train_gpt(corpus, r, seed=0, log=lines.append)
    assert [h[0] for h in result.history] == [45, 90] and len(lines) == 2
    assert result.history[-1][2] < 1.5 < math.log(corpus.vocab)
    text = gpt.sample(result.net, result.params, corpus, "to ", tokens=20, seed=1, context=8)
    assert text.startswith("to ") and len(text) == 23
    assert text == gpt.sample(
        result.net, result.params, corpus, "to ", tokens=20, seed=1, context=8
    )
    assert gpt.evaluate(result.net, result.params, corpus.val, 8) == pytest.approx(
        result.history[-1][2], rel=1e-6
    )
    # nanoGPT's estimate: random windows, the same seed the same figure, near the fixed set's
    est = [gpt.estimate(result.net, result.params, corpus.val, 8, seed=s) for s in (0, 0, 1)]
    assert est[0] == est[1] != est[2]
    assert est[0] == pytest.approx(result.history[-1][2], abs=0.3)
