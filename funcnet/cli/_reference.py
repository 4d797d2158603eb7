"""Independent forwards for ``funcnet check``: each built-in layer's output from its
definition alone (a closed form in NumPy over explicit windows, or ``lax.reduce_window``),
never from its own code.

``jax.vjp`` of a layer's forward agrees with a backward written for the same wrong forward
(BatchNorm's ε outside the square root, Dropout keeping units with probability p): only a
second, independent forward catches those.  A reference is built from the layer's name,
which spells its configuration (``Conv(3, (2, 3), stride=2, padding=1)``), so it shares
nothing with the layer but its documented meaning.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable

import numpy as np

Reference = Callable[..., np.ndarray]  # (params, x, out) -> expected out

BATCHNORM_EPS = 1e-5  # BatchNorm's documented default ε


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _windows(x, kw: dict, fill: float):
    """Every window of the (symmetrically) padded x, as (N, C, OH, OW, kh, kw) views."""
    kh, kw_ = _pair(kw["size"])
    sh, sw = _pair(kw.get("stride") or kw["size"])
    ph, pw = _pair(kw.get("padding", 0))
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    return np.lib.stride_tricks.sliding_window_view(x, (kh, kw_), axis=(2, 3))[:, :, ::sh, ::sw]


def lax_pool(name: str):
    """The pooling layer called ``name`` as ``lax.reduce_window``, a function of x that
    ``jax.vjp`` differentiates; ``None`` for any other layer."""
    tree = ast.parse(name, mode="eval").body
    if not isinstance(tree, ast.Call) or getattr(tree.func, "id", "") not in ("MaxPool", "AvgPool"):
        return None
    from jax import lax

    args = [_value(a) for a in tree.args]
    kw = {"size": args[0], **({"stride": args[1]} if len(args) > 1 else {})}
    kw.update({k.arg: _value(k.value) for k in tree.keywords})
    (kh, kw_), (ph, pw) = _pair(kw["size"]), _pair(kw.get("padding", 0))
    sh, sw = _pair(kw.get("stride") or kw["size"])
    window, strides = (1, 1, kh, kw_), (1, 1, sh, sw)
    pads = ((0, 0), (0, 0), (ph, ph), (pw, pw))
    if tree.func.id == "MaxPool":
        return lambda x: lax.reduce_window(x, -np.inf, lax.max, window, strides, pads)
    return lambda x: lax.reduce_window(x, 0.0, lax.add, window, strides, pads) / (kh * kw_)


def _conv(kw: dict):
    """y[n,f,p,q] = b[f] + Σ_{c,i,j} W[f,c,i,j]·x_pad[n, c, sh·p + i, sw·q + j]."""

    def ref(p, x, out):
        kh, kw_ = p["W"].shape[2:]
        win = _windows(x, {**kw, "size": (kh, kw_), "stride": kw.get("stride", 1)}, 0.0)
        y = np.einsum("nchwij,fcij->nfhw", win, p["W"])
        return y + p["b"][None, :, None, None] if kw.get("bias", True) else y

    return ref


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _batchnorm(train: bool):
    def ref(p, x, out):
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
        if train:
            mean, var = x.mean(axis=axes), x.var(axis=axes)  # the biased batch variance
        else:
            mean, var = p["state"]["mean"], p["state"]["var"]
        xn = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + BATCHNORM_EPS)
        return p["gamma"].reshape(shape) * xn + p["beta"].reshape(shape)

    return ref


def _dropout(p: float, scale_at: str, train: bool):
    """Eval: x, or (1 − p)·x for the book's variant.  Train: every unit either dropped (0)
    or kept and scaled by 1/(1 − p) (by 1 for the book's), and the share kept within five
    standard deviations of 1 − p: a law, since which units drop is the rng's to say."""
    keep_scale = 1 / (1 - p) if scale_at == "train" else 1.0

    def ref(params, x, out):
        if not train:
            return x if scale_at == "train" else (1 - p) * x
        kept = np.asarray(out) != 0
        share, sd = kept.mean(), math.sqrt(p * (1 - p) / kept.size)
        if abs(share - (1 - p)) > 5 * sd:
            raise AssertionError(
                f"kept {share:.3f} of {kept.size} units, expected 1 - p = {1 - p:.3f} "
                f"(± {5 * sd:.3f})"
            )
        return np.where(kept, x * keep_scale, 0.0)

    return ref


def _layernorm(bias: bool):
    """(x − mean)/√(var + ε)·γ + β over the last axis, ε = 1e-5 (LayerNorm's default); no β
    without ``bias``."""

    def ref(p, x, out):
        mean, var = x.mean(axis=-1, keepdims=True), x.var(axis=-1, keepdims=True)
        y = (x - mean) / np.sqrt(var + BATCHNORM_EPS) * p["gamma"]
        return y + p["beta"] if bias else y

    return ref


def _gelu(exact: bool):
    erf = np.vectorize(math.erf)

    def ref(p, x, out):
        if exact:  # x·Φ(x)
            return 0.5 * x * (1 + erf(x / math.sqrt(2)))
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    return ref


def _attention(heads: int, bias: bool):
    """Per head h of width d = C/heads: q, k, v the h-th d columns of the first, second and
    third C columns of x·W_qkv + b_qkv; softmax over j ≤ i of q·kᵀ/√d; the heads' P·v side
    by side, times W_o, plus b_o (no b_qkv, b_o without ``bias``).  One head at a time, with
    explicit loops."""

    def ref(p, x, out):
        n, t, c = x.shape
        d = c // heads
        qkv = x @ p["W_qkv"] + (p["b_qkv"] if bias else 0)
        y = np.zeros((n, t, c))
        for h in range(heads):
            q, k, v = (qkv[..., part * c + h * d : part * c + (h + 1) * d] for part in range(3))
            for i in range(t):
                s = np.einsum("nd,njd->nj", q[:, i], k[:, : i + 1]) / math.sqrt(d)
                y[:, i, h * d : (h + 1) * d] = np.einsum("nj,njd->nd", _softmax(s), v[:, : i + 1])
        return y @ p["W_o"] + (p["b_o"] if bias else 0)

    return ref


def _transformer(head: str, args: list, kw: dict) -> Reference | None:
    bias = kw.get("bias", True)
    if head == "LayerNorm":
        return _layernorm(bias)
    if head == "Gelu":
        return _gelu(exact=bool(args) and args[0] == "erf")
    if head == "PositionalEmbedding":
        return lambda p, x, out: x + p["W"][: x.shape[1]]
    if head == "CausalSelfAttention":
        return _attention(args[0] if args else 1, bias)
    if head == "ids":  # floats to ids: ⌊|x|·vocab⌋ mod vocab
        return lambda p, x, out: (np.floor(np.abs(x) * args[0]) % args[0]).astype(np.int64)
    return None


def _simple(head: str, args: list, kw: dict, train: bool) -> Reference | None:
    elementwise = {
        "Relu": lambda x: np.maximum(x, 0.0),
        "Sigmoid": lambda x: 1 / (1 + np.exp(-x)),
        "Tanh": np.tanh,
        "Softmax": _softmax,
        "Flatten": lambda x: x.reshape(len(x), -1),
    }
    if head in elementwise:
        return lambda p, x, out: elementwise[head](x)
    if head in ("MaxPool", "AvgPool") and args:
        kw = {**kw, "size": args[0], **({"stride": args[1]} if len(args) > 1 else {})}
    table = {
        "Dense": lambda p, x, out: x @ p["W"] + p["b"],
        "MatMul": lambda p, x, out: x @ p["W"],
        "Bias": lambda p, x, out: x + p["b"],
        "MaxPool": lambda p, x, out: _windows(x, kw, -np.inf).max(axis=(-2, -1)),
        "AvgPool": lambda p, x, out: _windows(x, kw, 0.0).mean(axis=(-2, -1)),
    }
    if head in table:
        return table[head]
    if head == "Conv":
        return _conv(kw)
    if head == "BatchNorm":
        return _batchnorm(train)
    if head == "Dropout":
        return _dropout(args[0], kw.get("scale_at", "train"), train)
    return _transformer(head, args, kw)


def _combinator(head: str, children: list, kw: dict) -> Reference | None:
    if any(c is None for c in children):
        return None
    if head == "pipeline":

        def ref(p, x, out):
            for child, q in zip(children, p, strict=True):
                x = child(q, x, None)
            return x

        return ref
    if head == "residual":
        return lambda p, x, out: x + children[0](p, x, None)
    if head == "concat":
        axis = kw.get("axis", 1)
        return lambda p, x, out: np.concatenate(
            [np.asarray(c(q, x, None)) for c, q in zip(children, p, strict=True)], axis=axis
        )
    return None


def _value(node):
    """A literal argument of a layer's name; a bare word (``scale_at=eval``) as its text."""
    if isinstance(node, ast.Name):
        return node.id
    return ast.literal_eval(node)


def _build(node, train: bool) -> Reference | None:
    if isinstance(node, ast.Name):
        if node.id in SEQUENCE_HEADS:
            return _sequence(node.id, node, train)
        return _simple(node.id, [], {}, train)
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        return None
    head = node.func.id
    kw = {k.arg: _value(k.value) for k in node.keywords}
    if head in ("pipeline", "residual", "concat"):
        return _combinator(head, [_build(a, train) for a in node.args], kw)
    if head in SEQUENCE_HEADS:
        return _sequence(head, node, train)
    if head == "tied":  # e = W[ids]; logits = body(e)·Wᵀ
        body = _build(node.args[2], train)
        if body is None:
            return None
        return lambda p, x, out: body(p["body"], p["wte"][x], None) @ p["wte"].T
    if train and head == "Dropout":
        return None  # inside a combinator: its law needs the dropout's own output
    return _simple(head, [_value(a) for a in node.args], kw, train)


def reference(name: str, train: bool = False) -> Reference | None:
    """The independent forward ``(params, x, out) -> y`` of the built-in layer called
    ``name``, in ``train`` mode or not; ``None`` for a layer it does not know (or a train-mode
    Dropout inside a combinator)."""
    try:
        tree = ast.parse(name, mode="eval").body
    except SyntaxError:
        return None
    if isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "Dropout":
        return _simple("Dropout", [_value(a) for a in tree.args],
                       {k.arg: _value(k.value) for k in tree.keywords}, train)  # fmt: skip
    try:
        return _build(tree, train)
    except (ValueError, TypeError, SyntaxError, KeyError, IndexError):
        return None


# --------------------------------------------------------------------------- sequences
# The second book's layers (ch. 5-8, common/time_layers.py), one time step at a time from
# their equations: no shared code with funcnet's time loops, gate tricks or batched products.


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def _cell(kind: str, p, xt, h, c):
    """One step of the book's RNN, LSTM (gates f, g, i, o) or GRU (z, r, h̃) -> (h, c)."""
    Wx, Wh, b = p["Wx"], p["Wh"], p["b"]
    H = Wh.shape[0]
    if kind == "RNN":  # h = tanh(x·Wx + h·Wh + b)
        return np.tanh(xt @ Wx + h @ Wh + b), c
    if kind == "LSTM":  # c = σ(f)⊙c + tanh(g)⊙σ(i), h = σ(o)⊙tanh(c)
        f, g, i, o = ((xt @ Wx + h @ Wh + b)[:, k * H : (k + 1) * H] for k in range(4))
        c = _sigmoid(f) * c + np.tanh(g) * _sigmoid(i)
        return _sigmoid(o) * np.tanh(c), c
    blocks = [slice(k * H, (k + 1) * H) for k in range(3)]
    z, r = (_sigmoid(xt @ Wx[:, s] + h @ Wh[:, s] + b[s]) for s in blocks[:2])
    h_hat = np.tanh(xt @ Wx[:, blocks[2]] + (r * h) @ Wh[:, blocks[2]] + b[blocks[2]])
    return (1 - z) * h + z * h_hat, c


def _through_time(kind: str, return_state: bool) -> Reference:
    """x or (x, h0[, c0]) -> hs, or (hs, h_T[, c_T]): a loop over t from zero states."""

    def ref(p, x, out):
        x, *state = x if isinstance(x, tuple | list) else (x,)
        n, steps, _ = x.shape
        H = p["Wh"].shape[0]
        h, c = (state[k] if len(state) > k else np.zeros((n, H)) for k in range(2))
        hs = np.zeros((n, steps, H))
        for t in range(steps):
            h, c = _cell(kind, p, x[:, t], h, c)
            hs[:, t] = h
        if not return_state:
            return hs
        return (hs, h, c) if kind == "LSTM" else (hs, h)

    return ref


def _bidirectional(f: Reference, g: Reference) -> Reference:
    """[f(x), g(x read backwards) read backwards] along the features."""
    return lambda p, x, out: np.concatenate([f(p[0], x, None), g(p[1], x[:, ::-1], None)[:, ::-1]],
                                            axis=-1)  # fmt: skip


def _embed(W, ids):
    """W[ids] as one-hot rows times W."""
    return np.eye(len(W))[np.asarray(ids)] @ W


def _dot_attention(weights: bool) -> Reference:
    """For each sample n and decoder step t: a = softmax_s(hs_enc[n, s]·hs_dec[n, t]), the
    context Σ_s a_s hs_enc[n, s]."""

    def ref(p, x, out):
        enc, dec = x
        a = np.zeros((*dec.shape[:2], enc.shape[1]))
        c = np.zeros(dec.shape)
        for n in range(dec.shape[0]):
            for t in range(dec.shape[1]):
                a[n, t] = _softmax(enc[n] @ dec[n, t])
                c[n, t] = a[n, t] @ enc[n]
        return (c, a) if weights else c

    return ref


def _seq2seq(kind: str, question_len: int) -> Reference:
    """The book's ``Seq2seq``, ``PeekySeq2seq`` and ``AttentionSeq2seq`` under teacher forcing
    on ids [question | decoder input]: the encoder LSTM's last h starts the decoder (c at 0);
    peeky feeds [h, embedding] in and scores [h, state]; attention scores [context, state]."""
    lstm, attend = _through_time("LSTM", True), _dot_attention(False)

    def ref(p, ids, out):
        q, d = ids[:, :question_len], ids[:, question_len:]
        hs_enc, h, _ = lstm(p["enc_lstm"], _embed(p["enc_embed"]["W"], q), None)
        e = _embed(p["dec_embed"]["W"], d)
        peek = np.repeat(h[:, None], d.shape[1], axis=1)
        if kind == "peeky":
            e = np.concatenate([peek, e], axis=-1)
        hs, _, _ = lstm(p["dec_lstm"], (e, h, np.zeros_like(h)), None)
        if kind == "peeky":
            hs = np.concatenate([peek, hs], axis=-1)
        elif kind == "attention":
            hs = np.concatenate([attend((), (hs_enc, hs), None), hs], axis=-1)
        return hs @ p["affine"]["W"] + p["affine"]["b"]

    return ref


SEQUENCE_HEADS = ("RNN", "LSTM", "GRU", "BiLSTM", "Bidirectional", "Embedding", "Attention",
                  "seq2seq", "peeky_seq2seq", "attention_seq2seq")  # fmt: skip


def _sequence(head: str, node, train: bool) -> Reference | None:
    kw = {k.arg: _value(k.value) for k in node.keywords} if isinstance(node, ast.Call) else {}
    if head in ("RNN", "LSTM", "GRU"):
        return _through_time(head, bool(kw.get("return_state")))
    if head == "BiLSTM":
        return _bidirectional(_through_time("LSTM", False), _through_time("LSTM", False))
    if head == "Bidirectional":
        f, *g = (_build(a, train) for a in node.args)
        return None if f is None or None in g else _bidirectional(f, g[0] if g else f)
    if head == "Embedding":
        return lambda p, ids, out: _embed(p["W"], ids)
    if head == "Attention":
        return _dot_attention(bool(kw.get("return_weights")))
    kind = {"seq2seq": "plain", "peeky_seq2seq": "peeky", "attention_seq2seq": "attention"}
    return _seq2seq(kind[head], kw["question_len"])


def time_cross_entropy(y, t, ignore_label: int = -1):
    """−(1/M) Σ log softmax(y_nt)_{t_nt} over the M positions whose label is not ignored."""
    total, count = 0.0, 0
    for n, row in enumerate(np.asarray(t)):
        for k, label in enumerate(row):
            if label != ignore_label:
                total -= float(np.log(_softmax(y[n, k]))[label])
                count += 1
    return total / max(count, 1)


def cross_entropy(y, t):
    """−(1/N) Σ_n Σ_c t_nc log softmax(y_n)_c, with integer labels as one-hot rows."""
    s = y - y.max(axis=-1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=-1, keepdims=True))
    t = np.eye(y.shape[1])[np.asarray(t, dtype=np.int64)] if np.ndim(t) == 1 else t
    return -(t * logp).sum() / len(y)


def mean_squared_error(y, t):
    """(1/M) Σ (y − t)² over every element."""
    return ((y - t) ** 2).mean()


LOSSES = {
    "softmax_cross_entropy": cross_entropy,
    "mean_squared_error": mean_squared_error,
    "time_softmax_cross_entropy": time_cross_entropy,
}
NODES = {"mul": lambda x, y: x * y, "add": lambda x, y: x + y}
