"""A character-level GPT built from funcnet's layers (nanoGPT's model), and what trains and
samples it: the per-token loss, AdamW with nanoGPT's weight-decay groups and schedule, a
loop over random windows, the validation loss and a jit-compilable sampler.

    net = gpt(vocab=65)                                 # ids (N, T ≤ 64) -> logits (N, T, 65)
    result = train_gpt(shakespeare.load(), NANOGPT_CPU)  # nanoGPT's CPU recipe
    text = sample(result.net, result.params, corpus, "ROMEO:", tokens=300, seed=0)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from . import optim
from ._arrays import namespace, split_rng
from ._checks import check_dout, check_float, shape_str
from .core import Layer, Loss, pipeline, residual
from .layers import Dense, Dropout, Embedding, MatMul, embedding
from .layers.transformer import CausalSelfAttention, Gelu, LayerNorm, PositionalEmbedding
from .losses import softmax_cross_entropy

# --------------------------------------------------------------------------- weight tying


def tied(vocab: int, dim: int, body: Layer, *, W_init=0.02, name: str | None = None) -> Layer:
    """Weight tying: one (vocab, dim) matrix W embeds the ids and projects out to logits.

    e = W[ids]; h = body(e); logits = h·Wᵀ.  W is used twice, so its gradient is the sum of
    both uses: ∂L/∂W = (∂L/∂logits)ᵀ·h + scatter-add of ∂L/∂e over the ids, where
    ∂L/∂h = ∂L/∂logits·W and ∂L/∂e is the body's input gradient.  The lookup and its
    scatter-add are ``layers.Embedding``'s (``embedding.lookup``, ``embedding.scatter_add``).
    Params ``{"wte": W, "body": body's params}``.
    """
    from . import initializers

    label = name or f"tied({vocab}, {dim}, {body.name})"
    w_init = initializers.get(W_init)

    def init(rng, in_shape, dtype=np.float32):
        if len(in_shape) != 2:
            raise ValueError(f"{label}: expected an input shape (N, T), got {shape_str(in_shape)}")
        r_w, r_body = split_rng(rng, 2)
        shape, p_body = body.init(r_body, (*tuple(in_shape), dim), dtype=dtype)
        if tuple(shape[-1:]) != (dim,):
            raise ValueError(f"{label}: the body must end with {dim} features, got {shape}")
        return (*tuple(shape[:-1]), vocab), {
            "wte": w_init(r_w, (vocab, dim), dtype),
            "body": p_body,
        }

    def forward(params, ids, *, train=False, rng=None):
        W = params["wte"]
        e, ids = embedding.lookup(label, W, ids)
        if ids.ndim != 2:
            raise ValueError(f"{label}: expected ids of shape (N, T), got {tuple(ids.shape)}")
        h, c_body = body.forward(params["body"], e, train=train, rng=rng)
        return h @ W.T, (ids, W, h, c_body)

    def backward(cache, dout, *, need_dx=True):
        ids, W, h, c_body = cache
        check_dout(label, dout, (*h.shape[:-1], vocab), W.dtype)
        d2 = dout.reshape(-1, vocab)
        dW = d2.T @ h.reshape(-1, dim)
        d_body, de = body.backward(c_body, dout @ W, need_dx=True)
        return {"wte": dW + embedding.scatter_add(ids, de, W), "body": d_body}, None

    return Layer(label, init, forward, backward)


def _ids_of_floats(vocab: int) -> Layer:
    """x (N, T) floats → ids ⌊|x|·vocab⌋ mod vocab, with zero gradient (the derivative of a
    step function almost everywhere): lets ``funcnet check``, whose cases take float input,
    reach the layers that take ids."""

    def init(rng, in_shape, dtype=np.float32):
        return tuple(in_shape), ()

    def forward(params, x, *, train=False, rng=None):
        xp = namespace(x)
        return (xp.floor(xp.abs(x) * vocab) % vocab).astype(xp.int32), (x,)

    def backward(cache, dout, *, need_dx=True):
        (x,) = cache
        return (), (namespace(x).zeros_like(x) if need_dx else None)

    return Layer(f"ids({vocab})", init, forward, backward)


# --------------------------------------------------------------------------- the model


GELUS = ("erf", "tanh")


def block(
    width: int, heads: int, layers: int, dropout: float = 0.0, *, bias: bool = False,
    gelu: str = "erf",
) -> Layer:  # fmt: skip
    """One pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x)), the MLP
    Dense(4·width) – Gelu – Dense(width).  Weights N(0, 0.02²); the two projections back
    into the residual stream N(0, (0.02/√(2·layers))²), GPT-2's; biases 0.  ``bias=False``
    (nanoGPT's default): no biases in the attention, the MLP (MatMul for Dense) and the
    LayerNorms (no β).  ``gelu``: "erf" the exact GELU (PyTorch's ``nn.GELU()``, nanoGPT's),
    "tanh" GPT-2's approximation."""
    if gelu not in GELUS:
        raise ValueError(f"block: gelu must be one of {', '.join(GELUS)}, got {gelu!r}")
    proj = 0.02 / math.sqrt(2 * layers)
    linear = Dense if bias else MatMul
    drop = [Dropout(dropout)] if dropout else []
    attn = pipeline(
        LayerNorm(bias=bias),
        CausalSelfAttention(heads, bias=bias, out_init=proj),
        *drop,
        name="attn",
    )
    mlp = pipeline(
        LayerNorm(bias=bias),
        linear(4 * width, W_init=0.02),
        Gelu(approximate=gelu == "tanh"),
        linear(width, W_init=proj),
        *drop,
        name="mlp",
    )
    return pipeline(residual(attn), residual(mlp), name=f"block({width}, {heads})")


def gpt(
    vocab: int,
    layers: int = 4,
    heads: int = 4,
    width: int = 128,
    context: int = 64,
    dropout: float = 0.0,
    *,
    tie: bool = True,
    bias: bool = False,
    gelu: str = "erf",
) -> Layer:
    """nanoGPT's GPT: ids (N, T ≤ context) → logits (N, T, vocab).

    token embedding + PositionalEmbedding(context) [– Dropout] – ``layers`` blocks (see
    ``block``, which takes ``bias`` and ``gelu``) – LayerNorm – output projection.
    ``tie=True`` (nanoGPT's) shares the token embedding with the output projection
    (``tied``); ``tie=False`` uses ``layers.Embedding`` and a MatMul(vocab) of its own.  The
    output projection has no bias either way, as nanoGPT's ``lm_head``.  Dropout (when > 0)
    follows the embeddings and each block's two branches; there is none on the attention
    weights.  The defaults are nanoGPT's: no biases, the exact (erf) GELU.
    """
    if width % heads:
        raise ValueError(f"gpt: width {width} is not a multiple of heads {heads}")
    drop = [Dropout(dropout)] if dropout else []
    body = pipeline(
        PositionalEmbedding(context),
        *drop,
        *(block(width, heads, layers, dropout, bias=bias, gelu=gelu) for _ in range(layers)),
        LayerNorm(bias=bias),
        name="body",
    )
    extra = ("" if not bias else ", bias=True") + ("" if gelu == "erf" else f", gelu={gelu!r}")
    label = (
        f"gpt(vocab={vocab}, layers={layers}, heads={heads}, width={width}, context={context}"
        f"{extra})"
    )
    if tie:
        return tied(vocab, width, body, name=label)
    emb = Embedding(vocab, width, W_init=0.02)
    return pipeline(emb, body, MatMul(vocab, W_init=0.02), name=label)


# --------------------------------------------------------------------------- loss, optimizer


def _tokens_forward(logits, t):
    """Mean cross-entropy over every position: L = −(1/(N·T)) Σ_{n,t} log softmax(z_nt)_{t_nt}.
    ∂L/∂z_nt = (softmax(z_nt) − onehot(t_nt))/(N·T)."""
    name = "token_cross_entropy"
    check_float(name, logits, "logits")
    if logits.ndim != 3 or tuple(getattr(t, "shape", ())) != tuple(logits.shape[:2]):
        raise ValueError(
            f"{name}: expected logits (N, T, V) and integer targets (N, T), got "
            f"{tuple(logits.shape)} and {tuple(getattr(t, 'shape', ()))}"
        )
    value, cache = softmax_cross_entropy.forward(
        logits.reshape(-1, logits.shape[-1]), t.reshape(-1)
    )
    return value, (cache, t)


def _tokens_backward(cache, dloss=1.0):
    inner, t = cache
    d = softmax_cross_entropy.backward(inner, dloss)
    return d.reshape(*t.shape, d.shape[-1])


token_cross_entropy = Loss("token_cross_entropy", _tokens_forward, _tokens_backward)


def decay_mask(params):
    """The weight-decay groups of ``gpt``'s params: decay the matmul weights (the 2-D params
    of the blocks, and the output projection when it is not tied), not the biases,
    LayerNorm's γ and β, nor the embeddings (the token embedding, tied or not, and the
    positional one): nanoGPT's groups for its CPU recipe, where ``lm_head`` stays out of the
    decayed set as the tied ``wte`` does.  Params keyed
    by nanoGPT's names (``wte``, ``wpe``, ..., as ``tests/gpt_reference.flat`` gives them) get
    the same groups."""
    import jax

    def matmuls(tree):
        return jax.tree_util.tree_map(lambda a: np.ndim(a) >= 2, tree)

    def body_mask(body):  # body[0]: the positional embedding
        return ({"W": False}, *matmuls(tuple(body[1:])))

    if isinstance(params, dict) and "body" not in params:  # keyed by nanoGPT's names
        return {k: False if k in ("wte", "wpe") else matmuls(v) for k, v in params.items()}
    if isinstance(params, dict):  # tied: {"wte", "body"}
        return {"wte": False, "body": body_mask(params["body"])}
    _, body, head = params  # the embedding, the body, the output projection
    return ({"W": False}, body_mask(body), matmuls(head))


class Recipe(NamedTuple):
    """A training run; the defaults are nanoGPT's CPU recipe for ``shakespeare_char``."""

    layers: int = 4
    heads: int = 4
    width: int = 128
    context: int = 64
    dropout: float = 0.0
    tie: bool = True
    bias: bool = False  # nanoGPT's default: no biases in the Linears and LayerNorms
    gelu: str = "erf"  # nanoGPT's nn.GELU(): the exact form
    batch: int = 12
    iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    decay_iters: int = 2000
    b1: float = 0.9
    b2: float = 0.99
    weight_decay: float = 0.1
    clip: float = 1.0
    eval_every: int = 0  # 0: the validation loss only at the end


NANOGPT_CPU = Recipe()  # nanoGPT's README: val loss 1.88 after 2000 iterations
# A lower loss within minutes on a 2-core CPU: nanoGPT's model and optimizer on 8/3 times the
# tokens per step (16 windows of 128: twice the context to read), 1.5 times the steps, and a
# 3 times larger learning rate, which this small model takes (cosine to a tenth of it, as
# the command line decays any rate).  What `funcnet train --task shakespeare --context 128
# --batch 16 --iters 3000 --lr 3e-3` runs.
FAST_CPU = NANOGPT_CPU._replace(
    context=128, batch=16, iters=3000, decay_iters=3000, lr=3e-3, min_lr=3e-4
)


def optimizer(recipe: Recipe = NANOGPT_CPU) -> optim.GradientTransformation:
    """Clipping of the global gradient norm, then AdamW (β1, β2, decay on ``decay_mask``)
    under ``optim.warmup_cosine``: nanoGPT's ``configure_optimizers`` and ``get_lr``."""
    schedule = optim.warmup_cosine(recipe.lr, recipe.warmup, recipe.decay_iters, recipe.min_lr)
    adamw = optim.adamw(
        schedule, recipe.b1, recipe.b2, 1e-8, weight_decay=recipe.weight_decay, mask=decay_mask
    )
    return optim.chain(optim.clip_by_global_norm(recipe.clip), adamw)


# --------------------------------------------------------------------------- data


def windows(data: np.ndarray, starts, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs data[s : s + context] and targets data[s + 1 : s + 1 + context], per start s."""
    idx = np.asarray(starts)[:, None] + np.arange(context + 1)
    w = data[idx]
    return w[:, :-1], w[:, 1:]


def random_starts(n: int, context: int, batch: int, rng: np.random.Generator) -> np.ndarray:
    """``batch`` uniform starts in [0, n − context), nanoGPT's ``get_batch``."""
    return rng.integers(0, n - context, batch)


def validation_starts(n: int, context: int) -> np.ndarray:
    """The fixed validation set: every non-overlapping window, starts 0, context, 2·context,
    ... while a target follows (⌊(n − 1)/context⌋ windows: 1,742 of 64 on the 111,540
    validation characters)."""
    return np.arange((n - 1) // context) * context


def evaluate(net: Layer, params, data: np.ndarray, context: int, batch: int = 256) -> float:
    """Mean per-token loss over ``validation_starts`` of ``data``, eval mode."""
    loss = _eval_loss(net)
    starts = validation_starts(len(data), context)
    total = 0.0
    for part in np.array_split(starts, max(1, math.ceil(len(starts) / batch))):
        x, t = windows(data, part, context)
        total += float(loss(params, x, t)) * len(part)
    return total / len(starts)


def estimate(
    net: Layer, params, data: np.ndarray, context: int, *, batches: int = 20, batch: int = 12,
    seed: int = 0,
) -> float:  # fmt: skip
    """nanoGPT's ``estimate_loss``: the mean of the per-token loss of ``batches`` batches of
    ``batch`` random windows of ``data`` (``random_starts``; its CPU recipe's ``eval_iters``
    is 20).  The same expected value as ``evaluate``'s fixed set, with sampling noise: for
    comparing with nanoGPT's printed figures, not a measure of its own."""
    loss, rng = _eval_loss(net), np.random.default_rng([seed, 2])
    values = []
    for _ in range(batches):
        x, t = windows(data, random_starts(len(data), context, batch, rng), context)
        values.append(float(loss(params, x, t)))
    return float(np.mean(values))


_EVAL: dict = {}


def _eval_loss(net: Layer) -> Callable:
    hit = _EVAL.get(id(net))
    if hit is None or hit[0] is not net:
        import jax

        def loss(params, x, t):
            return token_cross_entropy.forward(net.forward(params, x)[0], t)[0]

        hit = _EVAL[id(net)] = (net, jax.jit(loss))
    return hit[1]


# --------------------------------------------------------------------------- training


class Result(NamedTuple):
    """What ``train_gpt`` returns; ``history`` holds (iteration, mean training loss since the
    previous entry, validation loss) rows; ``losses`` the training loss of every iteration
    this call ran."""

    net: Layer
    params: Any
    history: list
    seconds: float
    losses: tuple | list = ()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during ``train_gpt``: what the last finished iteration left, so that nothing
    finished is lost.  ``iterations`` counts from the run's start (a resumed run's done ones
    included); when none finished in this call they are the ones it started from."""

    def __init__(self, iterations: int, params, opt_state, history: list, losses: list):
        super().__init__(f"train_gpt interrupted after {iterations} finished iteration(s)")
        self.iterations, self.params, self.opt_state = iterations, params, opt_state
        self.history, self.losses = history, losses


def _start(vocab: int, r: Recipe, seed: int, backend: str, restore):
    """``(net, step, params, opt_state, iterations done)``: fresh ones from ``seed``, or
    those ``restore(params, opt_state)`` returns for a resumed run."""
    import jax

    from . import train

    net = gpt(
        vocab, r.layers, r.heads, r.width, r.context, r.dropout, tie=r.tie, bias=r.bias,
        gelu=r.gelu,
    )  # fmt: skip
    _, params = net.init(seed, (-1, r.context))
    opt = optimizer(r)
    step = train.make_step(net, token_cross_entropy, opt)
    opt_state, done = opt.init(params), 0
    if restore is not None:
        params, opt_state, done = restore(params, opt_state)
        if not 0 <= done < r.iters:
            raise ValueError(f"train_gpt: {done} of {r.iters} iterations are done: none to run")
    if backend == "jax":
        (params, opt_state), step = jax.device_put((params, opt_state)), jax.jit(step)
    return net, step, params, opt_state, done


def _eval_point(net, params, corpus, r: Recipe, it: int, pending: list) -> tuple:
    """The history row at iteration ``it``, after checking the losses since the last one."""
    values = [float(v) for v in pending]  # one wait for the device per evaluation
    bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
    if bad is not None:
        raise FloatingPointError(
            f"train_gpt: the training loss is {values[bad]} at iteration "
            f"{it - len(values) + bad + 1}; the learning rate is probably too large"
        )
    return (it, float(np.mean(values)), evaluate(net, params, corpus.val, r.context)), values


def train_gpt(
    corpus,
    recipe: Recipe = NANOGPT_CPU,
    *,
    seed: int = 0,
    backend: str = "jax",
    log: Callable[[str], None] | None = None,
    restore: Callable | None = None,
    on_eval: Callable | None = None,
    progress: bool | None = False,
) -> Result:
    """Train ``gpt`` on ``corpus`` (``shakespeare.Corpus``) for ``recipe.iters`` steps of
    ``recipe.batch`` random windows, scoring ``evaluate`` on its validation split every
    ``recipe.eval_every`` iterations and after the last.

    ``seed`` fixes the initial params, the windows (a NumPy Generator, one draw per
    iteration) and dropout (a JAX key folded with the iteration); ``backend="jax"`` runs the
    step jitted, ``"numpy"`` eagerly.  ``restore(params, opt_state) -> (params, opt_state,
    done)`` resumes a run: the fresh params and state give the structures, and iterations
    ``done + 1 ..`` run on the windows and keys they had in the whole run (the finished
    ones' windows are drawn again and dropped), so the result is the uninterrupted run's.
    ``on_eval(row, params, opt_state)`` is called at every evaluation with its history row.
    A non-finite training loss raises ``FloatingPointError`` at the next evaluation; Ctrl-C
    raises ``Interrupted`` with the last finished iteration's params.  ``progress`` draws a
    bar on stderr between evaluations (None: when stderr is a terminal).  ``seconds`` is the
    wall time of the steps and the evaluations, compiles included.
    """
    import sys

    import jax

    from ._progress import ProgressBar

    r = recipe
    net, step, params, opt_state, done = _start(corpus.vocab, r, seed, backend, restore)
    rng = np.random.default_rng([seed, 1])
    for _ in range(done):
        random_starts(len(corpus.train), r.context, r.batch, rng)
    key = jax.random.PRNGKey(seed) if r.dropout else None
    bar = ProgressBar(sys.stderr, enabled=progress)
    history, losses, pending, start = [], [], [], time.perf_counter()
    last = (done, params, opt_state)
    try:
        for it in range(done + 1, r.iters + 1):
            starts = random_starts(len(corpus.train), r.context, r.batch, rng)
            x, t = windows(corpus.train, starts, r.context)
            step_rng = jax.random.fold_in(key, it) if key is not None else None
            params, opt_state, loss = step(params, opt_state, x, t, step_rng)
            last = (it, params, opt_state)  # one store: what a Ctrl-C keeps
            pending.append(loss)
            if it == r.iters or (r.eval_every and it % r.eval_every == 0):
                bar.clear()
                row, values = _eval_point(net, params, corpus, r, it, pending)
                history.append(row)
                losses += values
                pending = []
                if log is not None:
                    log(f"iter {it}: train loss {row[1]:.4f}, val loss {row[2]:.4f}")
                if on_eval is not None:
                    on_eval(row, params, opt_state)
            elif bar.enabled and it % max(1, r.iters // 100) == 0:
                bar.show(f"iter {it}/{r.iters}", it, r.iters, f"loss {float(loss):.4f}")
    except KeyboardInterrupt:
        bar.clear()
        raise Interrupted(*last, history, losses) from None
    return Result(net, params, history, time.perf_counter() - start, losses)


# --------------------------------------------------------------------------- sampling


def generate(net: Layer, params, prompt, key, *, tokens: int, context: int, temperature=1.0):
    """``prompt`` (1-D ids, at least one) followed by ``tokens`` sampled ids, as one JAX
    program (jit it with ``tokens`` and ``context`` static).

    Each new id is drawn from softmax(logits/temperature) at the last position of the last
    ``context`` ids (fewer at the start: the causal mask makes the rest of the window
    irrelevant), with ``jax.random.categorical`` under ``key`` split once per token: the same
    key gives the same ids.
    """
    import jax
    import jax.numpy as jnp

    p = prompt.shape[0]
    total = p + tokens
    buf = jnp.zeros(max(total, context), dtype=jnp.int32).at[:p].set(prompt.astype(jnp.int32))

    def body(i, carry):
        buf, key = carry
        n = p + i
        window = jax.lax.dynamic_slice(buf, (jnp.maximum(n - context, 0),), (context,))
        logits = net.forward(params, window[None])[0][0, jnp.minimum(n, context) - 1]
        key, sub = jax.random.split(key)
        nxt = jax.random.categorical(sub, logits / temperature)
        return buf.at[n].set(nxt.astype(jnp.int32)), key

    buf, _ = jax.lax.fori_loop(0, tokens, body, (buf, key))
    return buf[:total]


def sample(
    net: Layer,
    params,
    corpus,
    prompt: str = "\n",
    *,
    tokens: int = 300,
    temperature: float = 0.8,
    seed: int = 0,
    context: int | None = None,
) -> str:
    """The prompt and ``tokens`` characters sampled after it (``generate``, jitted); the same
    seed gives the same text.  ``context`` defaults to the rows of the model's positional
    embedding (``gpt``'s params, tied or not)."""
    import functools

    import jax

    if not prompt:
        raise ValueError("sample: the prompt needs at least one character")
    if not temperature > 0:
        raise ValueError(f"sample: temperature must be > 0, got {temperature}")
    context = context or context_of(params)
    run = jax.jit(functools.partial(generate, net, tokens=tokens, context=context))
    ids = run(params, corpus.encode(prompt), jax.random.PRNGKey(seed), temperature=temperature)
    return corpus.decode(np.asarray(ids))


def context_of(params) -> int:
    """The context length of ``gpt``'s params: the rows of its positional embedding."""
    body = params["body"] if isinstance(params, dict) else params[1]
    return int(body[0]["W"].shape[0])


__all__ = [
    "FAST_CPU",
    "NANOGPT_CPU",
    "Interrupted",
    "Recipe",
    "Result",
    "block",
    "context_of",
    "decay_mask",
    "estimate",
    "evaluate",
    "generate",
    "gpt",
    "optimizer",
    "random_starts",
    "sample",
    "tied",
    "token_cross_entropy",
    "train_gpt",
    "validation_starts",
    "windows",
]
