"""Encoder–decoder models of the second book (ch. 7–8): ``Seq2seq``, peeky, attention.

A model is a ``Layer`` whose input is one int array ``[question | decoder input]`` of shape
``(N, Tq + Td)`` (``text.teacher_forcing`` builds it: the decoder input is the answer
without its last character, ``_`` first) and whose output is the decoder's scores
``(N, Td, V)`` under teacher forcing; the targets are the answers without ``_``, and the
loss is ``losses.time_softmax_cross_entropy``.  So ``train.make_step`` and ``fit`` train it
as any other layer.  ``question_len`` (Tq) is fixed when the model is built.

The encoder (Embedding, LSTM) reads the question; its last hidden state h starts the
decoder's LSTM (c starts at 0, as the book's).  The decoder embeds its input and scores
every step with a Dense layer over
  * ``seq2seq``: its hidden state;
  * ``peeky``: [h, its hidden state], with h also fed beside every input embedding;
  * ``attention``: [context, its hidden state], the context being ``layers.Attention``
    over all the encoder's states (``attention_seq2seq``).

``model.generate(params, questions, start_ids, length)`` is the greedy answer (the book's
``generate``): each step feeds the previous step's argmax; pure and jit-compilable, with
``length`` static (one ``lax.scan`` on JAX arrays).  ``exact_match`` scores whole answers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._arrays import iadd, leaves, namespace, split_rng
from ._checks import check_dout
from .core import Layer
from .layers.attention import Attention
from .layers.embedding import Embedding
from .layers.linear import Dense
from .layers.recurrent import (
    LSTM,
    LSTM_CELL,
    _check_params,
    _flat,
    back_through_time,
    input_scale,
    scan,
    through_time,
)

KINDS = ("plain", "peeky", "attention")


class Seq2seq(Layer):
    """A ``Layer`` (the teacher-forced scores) that also answers: ``generate(params,
    questions, start_ids, length[, weights=False]) -> ids (N, length)`` (with ``weights``,
    also the attention weights ``(N, length, Tq)`` of an attention model).  ``question_len``
    is Tq; ``_replace`` keeps both."""

    def __new__(cls, name, init, forward, backward, generate=None, question_len=0):
        self = super().__new__(cls, name, init, forward, backward)
        self.generate, self.question_len = generate, question_len
        return self

    def _replace(self, **fields):
        parts = tuple(fields.pop(f, getattr(self, f)) for f in Layer._fields)
        if fields:
            raise ValueError(f"Seq2seq._replace: unknown fields {sorted(fields)}")
        return Seq2seq(*parts, self.generate, self.question_len)


def build(vocab, wordvec: int, hidden: int, kind: str, question_len: int) -> Seq2seq:
    """The model of ``kind`` (one of ``KINDS``) over a vocabulary of ``vocab`` (a size or a
    mapping) with embeddings of ``wordvec`` and LSTMs of ``hidden`` units."""
    V = vocab if isinstance(vocab, int | np.integer) else len(vocab)
    D, H, Tq = wordvec, hidden, question_len
    if kind not in KINDS:
        raise ValueError(f"seq2seq: kind must be one of {KINDS}, got {kind!r}")
    if not (isinstance(Tq, int | np.integer) and Tq >= 1):
        raise ValueError(f"seq2seq: question_len must be a positive int, got {Tq!r}")
    label = {"plain": "seq2seq", "peeky": "peeky_seq2seq", "attention": "attention_seq2seq"}
    name = f"{label[kind]}(vocab={V}, wordvec={D}, hidden={H}, question_len={Tq})"
    parts = {
        "enc_embed": Embedding(V, D),
        "enc_lstm": LSTM(H),
        "dec_embed": Embedding(V, D),
        "dec_lstm": LSTM(H),
        "affine": Dense(V, W_init="xavier"),
        "peeky_lstm": _peeky_lstm(H),  # forward and backward only: params as dec_lstm's
        "peeky_affine": _peeky_affine(),  # and affine's
    }
    att = Attention()

    def init(rng, in_shape, dtype=np.float32):
        if len(in_shape) != 2 or in_shape[1] <= Tq:
            raise ValueError(
                f"{name}: expected an input shape (N, {Tq} + decoder steps), got {tuple(in_shape)}"
            )
        Td = in_shape[1] - Tq
        dec_in = D + H if kind == "peeky" else D
        out_in = H if kind == "plain" else 2 * H
        shapes = {
            "enc_embed": (-1, Tq),
            "enc_lstm": (-1, Tq, D),
            "dec_embed": (-1, Td),
            "dec_lstm": (-1, Td, dec_in),
            "affine": (-1, Td, out_in),
        }
        rngs = dict(zip(shapes, split_rng(rng, len(shapes)), strict=True))
        params = {k: parts[k].init(rngs[k], s, dtype)[1] for k, s in shapes.items()}
        return (-1, Td, V), params

    def forward(params, x, *, train=False, rng=None):
        ids = x if hasattr(x, "dtype") else np.asarray(x)
        if ids.ndim != 2 or ids.shape[1] <= Tq:
            raise ValueError(
                f"{name}: expected input ids (N, {Tq} + decoder steps), got {tuple(ids.shape)}"
            )
        hs_enc, enc_cache = _encode(parts, params, ids[:, :Tq])
        scores, dec_cache = _decode(parts, att, kind, params, ids[:, Tq:], hs_enc)
        return scores, (enc_cache, dec_cache)

    def backward(cache, dout, *, need_dx=True):
        enc_cache, dec_cache = cache
        grads, dhs_enc = _decode_backward(parts, att, kind, dec_cache, dout)
        return {**grads, **_encode_backward(parts, enc_cache, dhs_enc)}, None

    def generate(params, questions, start_ids, length: int, *, weights: bool = False):
        return _generate(parts, att, kind, params, questions, start_ids, length, weights)

    return Seq2seq(name, init, forward, backward, generate, Tq)


def _encode(parts, params, q):
    e, c_embed = parts["enc_embed"].forward(params["enc_embed"], q)
    hs, c_lstm = parts["enc_lstm"].forward(params["enc_lstm"], e)
    return hs, (c_embed, c_lstm)


def _encode_backward(parts, cache, dhs):
    c_embed, c_lstm = cache
    g_lstm, de = parts["enc_lstm"].backward(c_lstm, dhs)
    g_embed, _ = parts["enc_embed"].backward(c_embed, de, need_dx=False)
    return {"enc_embed": g_embed, "enc_lstm": g_lstm}


def _sum_over_time(a):
    """Σ_t a_t of a time-major (T, N, K) array, as the product 1ᵀ·a over its (T, N·K) view:
    XLA:CPU reduces the leading axis of such an array some fifty times slower than a sum
    (2.5 ms against 0.05 for (4, 128, 512)), and folds a reshape back into that reduce."""
    xp, steps = namespace(a), a.shape[0]
    return (xp.ones((1, steps), a.dtype) @ a.reshape(steps, -1)).reshape(a.shape[1:])


def _peeky_lstm(hidden: int) -> Layer:
    """The peeky decoder's LSTM: input (e (N, T, D), h (N, H)), h both its start state (c
    at 0) and beside every step's input, [h, e_t] (Wx's first H rows read h, as the book's).
    [h, e_t]·Wx = h·Wx[:H] + e_t·Wx[H:], h's share the same at every step: one product per
    sequence.  Backward, with S = Σ_t dA_t: ∂L/∂Wx = [hᵀ·S; Σ_t e_tᵀ·dA_t], ∂L/∂e_t =
    dA_t·Wx[H:]ᵀ, ∂L/∂h = ∂L/∂h_0 (BPTT's) + S·Wx[:H]ᵀ."""
    name, H = f"peeky LSTM({hidden})", hidden

    def forward(params, inp, *, train=False, rng=None):
        e, h = inp
        Wx, Wh, b = _check_params(name, params, H, 4)
        if Wx.shape[0] != H + e.shape[-1]:
            raise ValueError(f"{name}: expected Wx of shape ({H + e.shape[-1]}, {4 * H}), got "
                             f"{tuple(Wx.shape)}")  # fmt: skip
        steps, n = e.shape[1], e.shape[0]
        et = e.transpose(1, 0, 2)
        m = namespace(Wx).asarray(input_scale(LSTM_CELL, H, Wx.dtype))
        Wx_m = Wx * m
        a = (_flat(et) @ Wx_m[H:]).reshape(steps, n, 4 * H)
        a = iadd(a, iadd(h @ Wx_m[:H], b * m))  # h's share, broadcast over the steps
        hs_t, _, saved = through_time(LSTM_CELL, Wh, a, (h, namespace(h).zeros_like(h)))
        cache = {"e": et, "h": h, "Wx": Wx, "Wh": Wh, "hs": hs_t, "saved": saved}
        return hs_t.transpose(1, 0, 2), cache

    def backward(cache, dhs, *, need_dx=True):
        et, h, Wx, Wh, hs_t = (cache[k] for k in ("e", "h", "Wx", "Wh", "hs"))
        check_dout(name, dhs, (h.shape[0], et.shape[0], H), h.dtype)
        zeros = namespace(h).zeros_like(h)
        (dh0, _), dA = back_through_time(LSTM_CELL, Wh, cache["saved"], dhs.transpose(1, 0, 2),
                                         (zeros, zeros))  # fmt: skip
        dA2, S = _flat(dA), _sum_over_time(dA)
        xp = namespace(dA)
        grads = {
            "Wx": xp.concatenate([h.T @ S, _flat(et).T @ dA2], axis=0),
            "Wh": LSTM_CELL.dWh(h, hs_t, cache["saved"], dA),
            "b": S.sum(axis=0),
        }
        de = (dA2 @ Wx[H:].T).reshape(*et.shape).transpose(1, 0, 2)
        return grads, (de, iadd(S @ Wx[:H].T, dh0))

    return Layer(name, None, forward, backward)


def _peeky_affine() -> Layer:
    """The peeky decoder's scores: input (h (N, H), hs (N, T, H)), [h, hs_t]·W + b =
    hs_t·W[H:] + (h·W[:H] + b), h's share once per sequence.  Backward, with G = Σ_t g_t:
    ∂L/∂W = [hᵀ·G; Σ_t hs_tᵀ·g_t], ∂L/∂b = Σ G, ∂L/∂h = G·W[:H]ᵀ, ∂L/∂hs_t = g_t·W[H:]ᵀ."""
    name = "peeky affine"

    def forward(params, inp, *, train=False, rng=None):
        h, hs = inp
        W, b = params["W"], params["b"]
        H = h.shape[-1]
        if tuple(W.shape) != (2 * H, b.shape[0]):
            raise ValueError(f"{name}: expected W of shape ({2 * H}, V), got {tuple(W.shape)}")
        out = iadd(hs @ W[H:], iadd(h @ W[:H], b)[:, None, :])
        return out, (h, hs, W)

    def backward(cache, g, *, need_dx=True):
        h, hs, W = cache
        H = h.shape[-1]
        check_dout(name, g, (*hs.shape[:2], W.shape[1]), h.dtype)
        G = g.sum(axis=1)
        dW = namespace(g).concatenate([h.T @ G, _flat(hs).T @ _flat(g)], axis=0)
        return {"W": dW, "b": G.sum(axis=0)}, (G @ W[:H].T, g @ W[H:].T)

    return Layer(name, None, forward, backward)


def _decode(parts, att, kind, params, d, hs_enc):
    """Teacher forcing: scores (N, Td, V) for decoder input ids ``d`` (N, Td)."""
    xp = namespace(hs_enc)
    h = hs_enc[:, -1]
    e, c_embed = parts["dec_embed"].forward(params["dec_embed"], d)
    peeky = kind == "peeky"  # h beside every input and every state: those layers take h
    inp = (e, h) if peeky else (e, h, xp.zeros_like(h))
    hs, c_lstm = parts["peeky_lstm" if peeky else "dec_lstm"].forward(params["dec_lstm"], inp)
    c_att = ()
    if kind == "attention":
        ctx, c_att = att.forward((), (hs_enc, hs))
        hs = xp.concatenate([ctx, hs], axis=-1)
    affine = parts["peeky_affine" if peeky else "affine"]
    scores, c_affine = affine.forward(params["affine"], (h, hs) if peeky else hs)
    return scores, (c_embed, c_lstm, c_att, c_affine, hs_enc[:, :, :0])


def _decode_backward(parts, att, kind, cache, dscores):
    """-> (the decoder's grads, ∂L/∂hs_enc): the start state h = hs_enc[:, −1] gets the
    LSTM's ∂L/∂h0 (and, peeky, every step's share of the peeked h)."""
    c_embed, c_lstm, c_att, c_affine, enc_shape = cache
    xp = namespace(dscores)
    peeky = kind == "peeky"
    g_affine, dhs = parts["peeky_affine" if peeky else "affine"].backward(c_affine, dscores)
    n, steps_enc = enc_shape.shape[:2]
    dpeek = 0
    if peeky:  # the scores' share of ∂L/∂h, summed over the steps; the LSTM adds its own
        dpeek, dhs = dhs
    H = dhs.shape[-1] // (2 if kind == "attention" else 1)
    dhs_enc = xp.zeros((n, steps_enc, H), dscores.dtype)
    if kind == "attention":
        dhs_enc, dhs_att = att.backward(c_att, dhs[..., :H])[1]
        dhs = dhs[..., H:] + dhs_att
    g_lstm, (de, dh0, *_) = parts["peeky_lstm" if peeky else "dec_lstm"].backward(c_lstm, dhs)
    g_embed, _ = parts["dec_embed"].backward(c_embed, de, need_dx=False)
    dlast = dh0 + dpeek
    if xp is np:  # dhs_enc is this function's own array
        dhs_enc[:, -1] += dlast
    else:
        dhs_enc = dhs_enc.at[:, -1].add(dlast)
    return {"dec_embed": g_embed, "dec_lstm": g_lstm, "affine": g_affine}, dhs_enc


def _generate(parts, att, kind, params, questions, start_ids, length, weights):
    """Greedy decoding for ``length`` steps from ``start_ids`` (an int or (N,) ids)."""
    hs_enc, _ = _encode(parts, params, questions)
    xp = namespace(hs_enc)
    n, h = hs_enc.shape[0], hs_enc[:, -1]
    lstm = LSTM(h.shape[-1], return_state=True)
    first = xp.broadcast_to(xp.asarray(start_ids, dtype=questions.dtype), (n,))

    def step(carry, _):
        h_prev, c_prev, ids = carry
        e, _ = parts["dec_embed"].forward(params["dec_embed"], ids[:, None])
        if kind == "peeky":
            e = xp.concatenate([hs_enc[:, -1:], e], axis=-1)
        (out, h_new, c_new), _ = lstm.forward(params["dec_lstm"], (e, h_prev, c_prev))
        a = xp.zeros((n, 1, hs_enc.shape[1]), h.dtype)
        if kind == "peeky":
            out = xp.concatenate([hs_enc[:, -1:], out], axis=-1)
        elif kind == "attention":
            (ctx, a), _ = Attention(return_weights=True).forward((), (hs_enc, out))
            out = xp.concatenate([ctx, out], axis=-1)
        scores, _ = parts["affine"].forward(params["affine"], out)
        nxt = scores[:, 0].argmax(axis=-1).astype(ids.dtype)
        return (h_new, c_new, nxt), (nxt, a[:, 0])

    steps = xp.zeros((length, 0), h.dtype)
    _, (ids, a) = scan(step, (h, xp.zeros_like(h), first), (steps,))
    ids, a = xp.swapaxes(ids, 0, 1), xp.swapaxes(a, 0, 1)
    return (ids, a) if weights else ids


_GENERATORS: dict = {}  # jitted generators, by model: exact_match scores every epoch with one


def _generator(net: Seq2seq, params) -> Callable:
    if namespace(*leaves(params)) is np:
        return net.generate
    hit = _GENERATORS.get(id(net))
    if hit is None or hit[0] is not net:  # the entry holds net, so its id is not reused
        import jax

        if len(_GENERATORS) >= 8:
            _GENERATORS.pop(next(iter(_GENERATORS)))
        hit = _GENERATORS[id(net)] = (net, jax.jit(net.generate, static_argnums=(3,)))
    return hit[1]


def exact_match(net: Seq2seq, params, x, t, batch_size: int = 1000) -> float:
    """The fraction of whole answers the greedy decoder gets right (the book's
    ``eval_seq2seq``): ``x`` and ``t`` as ``text.teacher_forcing`` makes them; the decoder
    starts from each row's first decoder input (``_``) and writes ``t.shape[1]`` ids."""
    x, t = np.asarray(x), np.asarray(t)
    if not isinstance(net, Seq2seq) or net.generate is None:
        raise TypeError(f"exact_match: expected a seq2seq model, got {type(net).__name__}")
    Tq, gen = net.question_len, _generator(net, params)
    right = 0
    for i in range(0, len(x), batch_size):
        xb, tb = x[i : i + batch_size], t[i : i + batch_size]
        guess = np.asarray(gen(params, xb[:, :Tq], xb[:, Tq], tb.shape[1]))
        right += int(np.all(guess == tb, axis=1).sum())
    return right / max(len(x), 1)


# --------------------------------------------------------------------------- shown answers


def _on_host(params):
    """``params`` as NumPy arrays: a few answers are quicker eager than compiled."""
    if namespace(*leaves(params)) is np:
        return params
    import jax

    return jax.tree_util.tree_map(np.asarray, params)


def _question(ids, chars: str, reverse: bool) -> str:
    """A question as it was written (read back the right way round when ``reverse``)."""
    q = "".join(chars[int(i)] for i in ids)
    return q[::-1] if reverse else q


def marked_answers(net: Seq2seq, params, x, t, chars: str, reverse: bool = False, *,
                   count: int = 10, color: bool | None = None) -> str:  # fmt: skip
    """The first ``count`` questions of ``x``, each as the book's ``eval_seq2seq`` prints
    it: ``Q question  T true answer  ☑ answer`` (☒ when the greedy answer is wrong).
    ``chars``: the vocabulary in id order; ``reverse``: ``x`` holds reversed questions."""
    from .plot import colored

    x, t = np.asarray(x[:count]), np.asarray(t[:count])
    Tq = net.question_len
    guess = np.asarray(net.generate(_on_host(params), x[:, :Tq], x[:, Tq], t.shape[1]))
    width = Tq + 1
    lines = []
    for q, truth, got in zip(x[:, :Tq], t, guess, strict=True):
        right = np.array_equal(truth, got)
        mark = colored("☑" if right else "☒", "green" if right else "red", color)
        answer, true = (_question(a, chars, False).rstrip() for a in (got, truth))
        lines.append(f"Q {_question(q, chars, reverse):<{width}} T {true:<{t.shape[1]}} {mark} "
                     f"{answer}")  # fmt: skip
    return "\n".join(lines)


def attention_maps(
    net: Seq2seq,
    params,
    x,
    chars: str,
    reverse: bool = False,
    *,
    count: int = 3,
    color: bool | None = None,
) -> str:
    """The attention weights of an attention model's greedy answers to the first ``count``
    questions of ``x``, each a heatmap (the book's figure 8-26): a row per character
    written, a column per character of the question as written."""
    from .plot import heatmap

    x = np.asarray(x[:count])
    Tq = net.question_len
    length = int(x.shape[1] - Tq)  # as many as it reads under teacher forcing
    ids, weights = net.generate(_on_host(params), x[:, :Tq], x[:, Tq], length, weights=True)
    maps = []
    for q, answer, a in zip(x[:, :Tq], np.asarray(ids), np.asarray(weights), strict=True):
        a = a[:, ::-1] if reverse else a  # columns in the question's own order
        cols = _question(q, chars, reverse).replace(" ", "·")
        rows = [chars[int(i)].replace(" ", "·") for i in answer]
        maps.append(heatmap(a, rows, cols, top=1.0, color=color))  # a row's weights sum to 1
    return "\n\n".join(maps)


__all__ = ["KINDS", "Seq2seq", "attention_maps", "build", "exact_match", "marked_answers"]
