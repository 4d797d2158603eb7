"""``funcnet check``: every built-in layer, loss and graph node against ``jax.vjp``, and
every forward against an independent reference (``_reference``).

The catalogue below is the one place that knows the built-in layers' code paths; the
checker (``funcnet.gradcheck``) knows only the protocol.  It reaches every path: each layer
on NumPy and on JAX arrays (the two run different kernels), train and eval modes, Conv's
whole and per-offset input gradient, its im2col in chunks, non-square and overlapping
pooling windows, unequal height and width padding, pools over more offsets than an int8
arg holds, MaxPool's ties and an infinite gradient, the residual and concat combinators
around stateful layers, soft cross-entropy targets, and the losses' refusal of non-finite
input.  A new built-in layer adds its cases here and its reference to ``_reference``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .. import core, gpt, gradcheck, graph, losses
from ..core import pipeline
from ..layers import _conv_numpy, activations, conv, dropout, linear, normalization
from ..layers import transformer as tf
from . import _reference


class Case(NamedTuple):
    """One check: ``make()`` builds the layer (at check time, from its module, so a patched
    module is what gets checked) and it runs on an input of ``shape``."""

    kind: str  # the layer family, for running a part of the catalogue
    make: Callable[[], Any]
    shape: tuple
    forward_kwargs: dict | None = None
    only: str | None = None  # "numpy" or "jax": the only array type the case is run on
    ties: bool = False  # small integers as input: MaxPool windows with equal maxima
    cotangent: Callable | None = None
    note: str = ""
    # jax.vjp of lax.reduce_window (a pool's) instead of the layer's own JAX code: for
    # NumPy-only cases whose JAX forward takes XLA long to compile.
    vjp_of_reference: bool = False
    # The composition spelled out, for a layer whose name does not say it (a named block):
    # what its independent reference is built from.
    spelled: str | None = None


def _inf_cotangent(rng, shape):
    g = rng.standard_normal(shape)
    g.reshape(-1)[:: max(1, g.size // 3)] = np.inf
    return g


def layer_cases() -> list[Case]:
    """Every layer case; each is run on NumPy arrays and again on JAX arrays."""
    return _dense_cases() + _conv_cases() + _composite_cases() + _transformer_cases()


def _dense_cases() -> list[Case]:
    """Dense and friends, the activations, Dropout and BatchNorm."""
    lin, act = linear, activations
    train = {"train": True}
    return [
        Case("linear", lambda: lin.Dense(7), (5, 4)),
        Case("linear", lambda: lin.Dense(3), (1, 2, 5)),
        Case("linear", lambda: lin.MatMul(6), (3, 4)),
        Case("linear", lambda: lin.Bias(), (4, 3)),
        Case("linear", lambda: lin.Flatten(), (3, 2, 5)),
        Case("activation", lambda: act.Relu(), (4, 6)),
        Case("activation", lambda: act.Sigmoid(), (4, 6)),
        Case("activation", lambda: act.Tanh(), (4, 6)),
        Case("activation", lambda: act.Softmax(), (4, 6)),
        Case("dropout", lambda: dropout.Dropout(0.4), (4, 6), {"train": True, "rng": 3}),
        Case("dropout", lambda: dropout.Dropout(0.4), (4, 6), note="eval"),
        Case("dropout", lambda: dropout.Dropout(0.4, scale_at="eval"), (4, 6), {**train, "rng": 3}),
        Case("dropout", lambda: dropout.Dropout(0.4, scale_at="eval"), (4, 6), note="eval"),
        Case("batchnorm", lambda: normalization.BatchNorm(), (5, 4), train),
        Case("batchnorm", lambda: normalization.BatchNorm(), (3, 2, 4, 4), train),
        Case("batchnorm", lambda: normalization.BatchNorm(), (2, 3), note="eval"),
        Case("batchnorm", lambda: normalization.BatchNorm(), (2, 3, 2, 2), note="eval"),
    ]


def _conv_cases() -> list[Case]:
    """Conv on every kernel path, and the pools."""
    cv = conv
    eight = _conv_numpy.DX_AS_CONV_MIN_CHANNELS
    return [
        Case("conv", lambda: cv.Conv(4, 3, padding=1), (2, 3, 6, 6)),
        Case("conv", lambda: cv.Conv(2, (3, 2), stride=2), (1, 2, 7, 6)),
        Case(
            "conv",
            lambda: cv.Conv(3, 3, padding=1, bias=False),
            (2, eight, 5, 5),
            note="dx as conv",
        ),
        Case(
            "conv",
            lambda: cv.Conv(3, (2, 3), stride=2, padding=1),
            (2, eight + 1, 6, 7),
            note="dx as conv",
        ),
        Case(
            "conv",
            lambda: cv.Conv(4, 3, padding=1, chunk_bytes=1),  # one sample's im2col at a time
            (3, 3, 6, 6),
            only="numpy",  # JAX never chunks: the same case without a budget is above
            note="chunks",
        ),
        Case(
            "conv",
            lambda: cv.Conv(3, 3, stride=2, chunk_bytes=1),
            (3, eight, 7, 7),
            only="numpy",
            note="chunks, dx as conv",
        ),
        # On NumPy, algorithm="xla" runs the NumPy kernels, checked above.
        Case("conv", lambda: cv.Conv(4, 3, padding=1, algorithm="xla"), (2, 3, 6, 6), only="jax"),
        Case(
            "conv",
            lambda: cv.Conv(3, 3, stride=2, padding=1, algorithm="xla"),
            (2, 2, 7, 7),
            only="jax",
        ),
        Case(
            "conv",
            lambda: cv.Conv(3, 3, padding=2, algorithm="xla"),
            (2, 2, 5, 5),
            only="jax",
            note="padding above (k-1)/2",
        ),
        Case("pool", lambda: cv.MaxPool(2), (2, 3, 6, 6)),
        Case("pool", lambda: cv.MaxPool((2, 3), stride=1), (2, 2, 5, 6)),
        Case("pool", lambda: cv.MaxPool(3, stride=2, padding=1), (2, 2, 7, 7)),
        Case("pool", lambda: cv.MaxPool((3, 2), stride=1), (2, 2, 5, 5), ties=True, note="ties"),
        Case(
            "pool", lambda: cv.MaxPool(2), (2, 2, 4, 4), cotangent=_inf_cotangent, note="inf dout"
        ),
        Case("pool", lambda: cv.AvgPool(2), (2, 3, 6, 6)),
        Case("pool", lambda: cv.AvgPool(3, stride=1, padding=1), (2, 2, 5, 5)),
        Case("pool", lambda: cv.AvgPool((2, 3), stride=(2, 1)), (1, 2, 6, 6)),
    ]


def _composite_cases() -> list[Case]:
    """Pipelines and the combinators around the layers above."""
    lin, act, cv = linear, activations, conv
    train = {"train": True}
    return [
        Case(
            "pipeline",
            lambda: pipeline(lin.Flatten(), lin.Dense(8), act.Relu(), lin.Dense(3)),
            (4, 2, 3),
        ),
        Case(
            "pipeline",
            lambda: pipeline(cv.Conv(3, 3), act.Relu(), cv.MaxPool(2), lin.Flatten()),
            (2, 1, 6, 6),
        ),
        Case(
            "pipeline",
            lambda: pipeline(lin.Dense(5), act.Tanh(), normalization.BatchNorm()),
            (4, 3),
            train,
        ),
        Case(
            "combinator",
            lambda: core.residual(pipeline(lin.MatMul(4), normalization.BatchNorm(), act.Relu())),
            (5, 4),
            train,
        ),
        Case(
            "combinator",
            lambda: core.residual(pipeline(cv.Conv(3, 3, padding=1), act.Tanh())),
            (2, 3, 4, 4),
        ),
        Case(
            "combinator",
            lambda: core.concat(lin.Dense(2), pipeline(lin.Dense(3), act.Sigmoid()), lin.Bias()),
            (4, 5),
        ),
        Case(
            "combinator",
            lambda: core.concat(
                cv.Conv(2, 1),
                pipeline(cv.Conv(3, 3, padding=1, bias=False), normalization.BatchNorm()),
            ),
            (2, 2, 4, 4),
            train,
        ),
    ]


def _transformer_cases() -> list[Case]:
    """The transformer's layers: one head and one position included; a position
    embedding longer than the input (rows with no gradient); with and without biases; a
    whole pre-norm block of each kind (GPT-2's: biases, tanh GELU; nanoGPT's: none, erf)."""
    lin = linear
    from ..layers import embedding

    return [
        Case("transformer", lambda: tf.LayerNorm(), (5, 4)),
        Case("transformer", lambda: tf.LayerNorm(), (2, 3, 6)),
        Case("transformer", lambda: tf.LayerNorm(bias=False), (2, 3, 6), note="no bias"),
        Case("transformer", lambda: tf.Gelu(), (3, 4, 5)),
        Case("transformer", lambda: tf.Gelu(approximate=False), (3, 4, 5)),
        Case("transformer", lambda: tf.PositionalEmbedding(5), (2, 3, 4), note="T < context"),
        Case("transformer", lambda: tf.PositionalEmbedding(), (2, 3, 4)),
        Case("transformer", lambda: tf.CausalSelfAttention(1), (2, 4, 3), note="one head"),
        Case("transformer", lambda: tf.CausalSelfAttention(2), (2, 5, 6)),
        Case("transformer", lambda: tf.CausalSelfAttention(2), (3, 1, 4), note="one position"),
        Case(
            "transformer", lambda: tf.CausalSelfAttention(2, bias=False), (2, 5, 6), note="no bias"
        ),
        Case(
            "transformer",
            lambda: pipeline(
                core.residual(pipeline(tf.LayerNorm(), tf.CausalSelfAttention(2))),
                core.residual(pipeline(tf.LayerNorm(), lin.Dense(16), tf.Gelu(), lin.Dense(4))),
                name="block",
            ),
            (2, 3, 4),
            note="pre-norm block",
            spelled="pipeline(residual(pipeline(LayerNorm, CausalSelfAttention(2))), "
            "residual(pipeline(LayerNorm, Dense(16), Gelu, Dense(4))))",
        ),
        Case(
            "transformer",
            lambda: gpt.block(4, 2, 2),
            (2, 3, 4),
            note="nanoGPT's block",
            spelled="pipeline(residual(pipeline(LayerNorm(bias=False), "
            "CausalSelfAttention(2, bias=False))), residual(pipeline(LayerNorm(bias=False), "
            "MatMul(16), Gelu(erf), MatMul(4))))",
        ),
        # Layers on ids, reached from float input through ids(vocab), of zero gradient: the
        # untied GPT's token embedding (layers.Embedding) and weight tying.
        Case(
            "transformer",
            lambda: pipeline(gpt._ids_of_floats(5), embedding.Embedding(5, 3, W_init=0.02)),
            (2, 4),
            note="token embedding",
        ),
        Case(
            "transformer",
            lambda: pipeline(
                gpt._ids_of_floats(6), gpt.tied(6, 4, pipeline(tf.LayerNorm(), lin.Dense(4)))
            ),
            (3, 4),
            note="weight tying",
        ),
    ]


def edge_cases() -> list[Case]:
    """Cases at the edges of the kernels' choices: dx by convolution and by col2im with
    unequal height and width padding, pools whose window has more offsets than an int8 arg
    holds (both NumPy maxpool paths: with and without the running maxima) or unequal
    padding, and a Dropout large enough that its keep rate is measured."""
    cv, eight = conv, _conv_numpy.DX_AS_CONV_MIN_CHANNELS
    train = {"train": True, "rng": 5}
    return [
        Case("conv", lambda: cv.Conv(3, 3, padding=(0, 1), bias=False), (2, eight, 5, 6),
             note="dx as conv"),
        Case("conv", lambda: cv.Conv(2, (3, 2), stride=(2, 1), padding=(1, 0)),
             (2, eight + 1, 7, 6), note="dx as conv"),
        Case("conv", lambda: cv.Conv(3, 3, padding=(1, 0)), (2, 3, 5, 6)),
        Case("conv", lambda: cv.Conv(3, (2, 3), stride=(1, 2), padding=(0, 1), algorithm="xla"),
             (2, 2, 5, 7), only="jax"),
        # NumPy's arg dtype is the point here, and the JAX max-pool over 144 offsets takes
        # XLA over a minute to compile: JAX differentiates lax.reduce_window instead.
        # Windows enough that some maxima sit at offsets 128-143.
        Case("pool", lambda: cv.MaxPool(12), (2, 8, 36, 12), only="numpy", note="144 offsets",
             vjp_of_reference=True),
        Case("pool", lambda: cv.MaxPool(12, stride=1), (2, 8, 14, 12), only="numpy",
             note="144 offsets", vjp_of_reference=True),
        Case("pool", lambda: cv.AvgPool(12), (1, 2, 12, 12), note="144 offsets"),
        Case("pool", lambda: cv.MaxPool(3, stride=1, padding=(0, 1)), (2, 2, 5, 5)),
        Case("pool", lambda: cv.AvgPool(3, stride=1, padding=(0, 1)), (2, 2, 5, 5)),
        Case("pool", lambda: cv.AvgPool((2, 3), stride=(1, 2), padding=(1, 0)), (1, 2, 5, 5)),
        Case("dropout", lambda: dropout.Dropout(0.4), (40, 50), train, note="keep rate"),
        Case("dropout", lambda: dropout.Dropout(0.4, scale_at="eval"), (40, 50), train,
             note="keep rate"),
    ]  # fmt: skip


def _random_params(params, rng):
    """Random (not zero) values: a zero parameter can hide a missing gradient term.  A
    running variance must stay positive."""
    import jax

    def draw(path, a):
        last = getattr(path[-1], "key", None) if path else None
        return rng.random(a.shape) + 0.5 if last == "var" else rng.standard_normal(a.shape)

    return jax.tree_util.tree_map_with_path(draw, params)


def _label(case: Case, layer) -> str:
    tags = [
        t for t in ("train" if (case.forward_kwargs or {}).get("train") else "", case.note) if t
    ]
    return f"{layer.name}{' (' + ', '.join(tags) + ')' if tags else ''}"


def _run_layer_case(i: int, case: Case, layer, arrays: str, seed: int) -> gradcheck.Report:
    rng = np.random.default_rng([seed, i])
    _, params = layer.init(seed + i, (-1, *case.shape[1:]), dtype=np.float64)
    params = _random_params(params, rng)
    if case.ties:
        x = rng.integers(-2, 3, case.shape).astype(np.float64)
    else:
        x = rng.standard_normal(case.shape)
    kw = case.forward_kwargs or {}
    reference = _reference.reference(case.spelled or layer.name, bool(kw.get("train")))
    jax_forward = None
    if case.vjp_of_reference:
        pool = _reference.lax_pool(layer.name)
        jax_forward = lambda p, x: pool(x)  # noqa: E731
    return gradcheck.check_layer(
        layer,
        params,
        x,
        seed=seed + i,
        forward_kwargs=kw,
        raise_on_failure=False,
        arrays=arrays,
        # Differences add nothing at a kink (ties) or with an infinite cotangent, and the
        # JAX run checks the other kernels against the same exact reference.
        numerical=arrays == "numpy" and not case.ties and case.cotangent is None,
        cotangent=case.cotangent,
        reference=reference,
        jax_forward=jax_forward,
    )


def _guarded(label: str, run: Callable[[str], Any]) -> Callable[[str], Any]:
    """``run``, with an exception turned into a failed report: one broken path must not
    hide the rest of the catalogue."""

    def guarded(arrays):
        try:
            return run(arrays)
        except Exception as e:  # reported as the case's failure
            problem = f"raised {type(e).__name__}: {(str(e) or '-').splitlines()[0]}"
            row = gradcheck.Row("run", (), None, None, None, None, False, problem, "protocol")
            return gradcheck.Report(label, "", [row])

    return guarded


def _catalogue(seed: int) -> list[tuple[str, str, Callable[[str], gradcheck.Report]]]:
    """Every entry as (kind, label, run(arrays) -> report)."""
    out = []
    for i, case in enumerate(layer_cases() + edge_cases()):
        layer = case.make()

        def run(arrays, i=i, case=case, layer=layer):
            if case.only not in (None, arrays):
                return None
            return _run_layer_case(i, case, layer, arrays, seed)

        out.append((case.kind, _label(case, layer), run))
    out += _loss_and_node_entries(seed) + refusal_entries()
    return [(kind, label, _guarded(label, run)) for kind, label, run in out]


def _loss_and_node_entries(seed: int) -> list[tuple[str, str, Callable]]:
    out = []
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((5, 4)) * 3
    labels = rng.integers(0, 4, 5)
    soft = rng.random((5, 4))
    soft /= soft.sum(axis=1, keepdims=True)
    loss_cases = [
        ("softmax_cross_entropy", z, labels, "labels"),
        ("softmax_cross_entropy", z, np.eye(4)[labels], "one-hot"),
        ("softmax_cross_entropy", z, soft, "soft targets"),
        ("mean_squared_error", z, rng.standard_normal(z.shape), ""),
    ]
    for name, y, t, note in loss_cases:

        def run(arrays, name=name, y=y, t=t):
            return gradcheck.check_loss(
                getattr(losses, name), y, t, seed=seed, raise_on_failure=False, arrays=arrays,
                numerical=arrays == "numpy", reference=_reference.LOSSES[name],
            )  # fmt: skip

        out.append(("loss", f"{name}{' (' + note + ')' if note else ''}", run))
    node_inputs = {
        "mul": {"x": rng.standard_normal((3, 4)), "y": rng.standard_normal(4)},
        "add": {"x": rng.standard_normal((3, 1)), "y": rng.standard_normal((1, 4))},
    }
    for name, primals in node_inputs.items():

        def run(arrays, name=name, primals=primals):
            node = getattr(graph, name)
            return gradcheck.check_vjp(
                node.name, node.forward, node.backward, primals, seed=seed,
                raise_on_failure=False, arrays=arrays, numerical=arrays == "numpy",
                reference=_reference.NODES[name],
            )  # fmt: skip

        out.append(("node", f"{name} (broadcast)", run))
    out.extend(sequence_entries(seed))
    return out


# --------------------------------------------------------------------------- sequences


def _flat_vjp_case(label, layer, params, inputs: tuple, *, ids=None, tuple_in=False, names=()):
    """``run(arrays)`` checking ``layer`` on ``inputs`` (or on the int ``ids``, which get no
    gradient) when its input or output is a tuple: the outputs are flattened into one vector
    for the checker, and its cotangent is split back into the layer's output structure."""
    x_np = ids if ids is not None else (tuple(inputs) if tuple_in else inputs[0])
    out = layer.forward(params, x_np)[0]
    shapes = [o.shape for o in out] if isinstance(out, tuple) else None

    def forward(p, *xs):
        x = ids if ids is not None else (tuple(xs) if tuple_in else xs[0])
        y, cache = layer.forward(p, x)
        parts = y if shapes is not None else (y,)
        return core.namespace(*parts).concatenate([o.reshape(-1) for o in parts]), cache

    def backward(cache, g):
        if shapes is None:
            dout = g.reshape(out.shape)
        else:
            bounds = np.cumsum([int(np.prod(s)) for s in shapes])[:-1].tolist()
            dout = tuple(
                d.reshape(s)
                for d, s in zip(core.namespace(g).split(g, bounds), shapes, strict=True)
            )
        dp, dx = layer.backward(cache, dout)
        if ids is not None:
            return (dp,)
        return (dp, *dx) if tuple_in else (dp, dx)

    names = names or ([f"x{i}" for i in range(len(inputs))] if len(inputs) > 1 else ["x"])
    primals = {"params": params, **dict(zip(names, inputs if ids is None else (), strict=False))}
    expected = _reference.reference(layer.name)

    def reference(params, **xs):  # the independent forward, flattened as ``forward``'s
        given = tuple(xs[k] for k in names[: len(inputs)])  # xs comes in sorted order
        x = ids if ids is not None else (given if tuple_in else given[0])
        y = expected(params, x, None)
        return np.concatenate([np.reshape(o, -1) for o in (y if shapes is not None else (y,))])

    def run(arrays, seed=0):
        return gradcheck.check_vjp(
            label, forward, backward, primals, seed=seed, raise_on_failure=False,
            arrays=arrays, numerical=arrays == "numpy",
            reference=None if expected is None else reference,
        )  # fmt: skip

    return run


def sequence_cases(seed: int, rng: np.random.Generator) -> list[tuple]:
    """The sequence layers' and models' cases, each ``(kind, layer, params, inputs, options
    of _flat_vjp_case, note)``, params and inputs drawn from ``rng``."""
    from .. import seq2seq
    from ..layers import attention, embedding, recurrent

    def params_of(layer, in_shape):
        return _random_params(layer.init(seed, in_shape, dtype=np.float64)[1], rng)

    cases = []
    for make, n_state in ((recurrent.RNN, 1), (recurrent.LSTM, 2), (recurrent.GRU, 1)):
        for steps in (1, 3):
            x = rng.standard_normal((2, steps, 3))
            layer = make(4)
            p = params_of(layer, (-1, steps, 3))
            cases.append(("recurrent", layer, p, (x,), {}, f"T={steps}"))
        layer = make(4, return_state=True)
        states = tuple(rng.standard_normal((2, 4)) for _ in range(n_state))
        inputs = (rng.standard_normal((2, 3, 3)), *states)
        p = params_of(layer, (-1, 3, 3))
        kw = {"tuple_in": True, "names": ("x", "h0", "c0")}
        cases.append(("recurrent", layer, p, inputs, kw, "state in, out"))
    for layer in (recurrent.BiLSTM(3), recurrent.Bidirectional(recurrent.GRU(2))):
        x = rng.standard_normal((2, 4, 3))
        cases.append(("recurrent", layer, params_of(layer, (-1, 4, 3)), (x,), {}, ""))
    emb = embedding.Embedding(5, 3)
    ids = np.array([[0, 4, 4, 1], [4, 0, 2, 4]])  # repeated ids: the scatter-add accumulates
    cases.append(("embedding", emb, params_of(emb, (-1, 4)), (), {"ids": ids}, "repeated ids"))
    pair = (rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 4, 3)))
    for att in (attention.Attention(), attention.Attention(return_weights=True)):
        kw = {"tuple_in": True, "names": ("hs_enc", "hs_dec")}
        cases.append(("attention", att, (), pair, kw, ""))
    q_ids = rng.integers(0, 6, (3, 9))
    for kind in seq2seq.KINDS:
        model = seq2seq.build(6, 3, 4, kind, 5)
        cases.append(
            ("seq2seq", model, params_of(model, (-1, 9)), (), {"ids": q_ids}, "teacher forcing")
        )
    return cases


def sequence_entries(seed: int) -> list[tuple[str, str, Callable[[str], gradcheck.Report]]]:
    """The second book's sequence layers, loss and models, where an input or an output is a
    tuple or integer ids: every recurrent cell at T = 1 and T > 1, with and without a state
    in and out, the bidirectional wrapper, Embedding with repeated ids, Attention with and
    without its weights as an output, the time loss with ignored positions, and the three
    seq2seq models' teacher-forced backward (plain, peeky, attention); each forward also
    against its independent reference (``_reference``)."""
    rng = np.random.default_rng([seed, 30])
    cases = sequence_cases(seed, rng)
    out = []
    for kind, layer, p, inputs, kw, note in cases:
        run = _flat_vjp_case(layer.name, layer, p, inputs, **kw)
        short = layer.name.split("(")[0] + "(6, 3, 4)" if kind == "seq2seq" else layer.name
        label = short + (f" ({note})" if note else "")
        out.append((kind, label, lambda arrays, run=run: run(arrays, seed)))
    y, t = rng.standard_normal((3, 4, 5)) * 3, rng.integers(0, 5, (3, 4))
    t[0, 1] = t[2, 0] = t[2, 3] = -1
    loss = losses.time_softmax_cross_entropy

    def run_loss(arrays):
        return gradcheck.check_loss(
            loss,
            y,
            t,
            seed=seed,
            raise_on_failure=False,
            arrays=arrays,
            numerical=arrays == "numpy",
            reference=_reference.LOSSES[loss.name],
        )

    out.append(("loss", f"{loss.name} (ignored positions)", run_loss))
    return out


def refusal_entries() -> list[tuple[str, str, Callable]]:
    """Inputs a loss must refuse rather than return a non-finite value for: a logit of
    −inf at the label (a loss of +inf), a NaN logit, an infinite prediction."""
    z = np.array([[0.5, -np.inf, 1.0], [1.0, 2.0, 3.0]])
    nan = np.array([[0.5, np.nan, 1.0], [1.0, 2.0, 3.0]])
    labels = np.array([1, 0])
    cases = [
        ("softmax_cross_entropy", z, labels, "-inf logit at the label"),
        ("softmax_cross_entropy", z, np.eye(3)[labels], "-inf logit at the label, one-hot"),
        ("softmax_cross_entropy", nan, labels, "NaN logit"),
        ("mean_squared_error", np.array([[np.inf, 1.0]]), np.zeros((1, 2)), "inf prediction"),
    ]
    out = []
    for name, y, t, note in cases:

        def run(arrays, name=name, y=y, t=t, note=note):
            import jax

            with jax.enable_x64(True):
                y_in = y if arrays == "numpy" else jax.device_put(y)
                return gradcheck.check_refuses(
                    name, f"{y.shape}, t {t.shape}",
                    lambda: getattr(losses, name).forward(y_in, t), raise_on_failure=False,
                )  # fmt: skip

        out.append(("loss", f"{name} (refuses: {note})", run))
    return out


def builtin_checks(
    seed: int = 0,
    kinds: set[str] | None = None,
    arrays: set[str] | None = None,
    match: str | None = None,
) -> list[gradcheck.Report]:
    """Run the whole catalogue on NumPy and on JAX arrays, one report per case and array
    type.  ``kinds`` (e.g. ``{"conv"}``), ``arrays`` (``{"numpy"}``) and ``match`` (a part
    of the case's label, e.g. ``"chunks"``) select a part of it."""
    reports = []
    entries = [
        e for e in _catalogue(seed) if (kinds is None or e[0] in kinds) and (match or "") in e[1]
    ]
    for where in [a for a in ("numpy", "jax") if arrays is None or a in arrays]:
        for _, label, run in entries:
            report = run(where)
            if report is not None:
                reports.append(report._replace(name=f"{label} [{where}]"))
    return reports


def _table(reports: list[gradcheck.Report]) -> str:
    """One line per report: its largest relative errors against JAX's gradients, the
    independent forward and central differences ("-" where that comparison did not run)."""
    width = max(len(r.name) for r in reports)

    def cell(v, w):
        return f"{'-':>{w}}" if v is None else f"{v:>{w}.2e}"

    head = (
        f"{'layer / loss / node':<{width}} {'input shape':<22} {'vs jax':>9} "
        f"{'vs reference':>12} {'vs numerical':>12}  result"
    )
    lines = [head, "-" * len(head)]
    for r in reports:
        lines.append(
            f"{r.name:<{width}} {r.in_shapes:<22} {cell(r.max_jax_rel, 9)} "
            f"{cell(r.max_ref_rel, 12)} {cell(r.max_num_rel, 12)}  {'pass' if r.ok else 'FAIL'}"
        )
    return "\n".join(lines)


def run(args) -> int:
    import jax

    # Every case is a tiny float64 program: XLA's optimizations would only cost compile
    # time, a quarter of this command's.  (gradcheck also compiles each with XLA:CPU's
    # older code generator: 12-13 s for this command against 21 s.)
    saved = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        reports = builtin_checks(args.seed)
    finally:
        jax.config.update("jax_disable_most_optimizations", saved)
    print(_table(reports))
    failed = [r for r in reports if not r.ok]
    for r in failed:
        print("\n" + str(r))
    print(f"\n{len(reports) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def add_parser(subparsers) -> None:
    from ._flags import SEED, add_command

    parser = add_command(subparsers, "check", [SEED.but(help="cotangents and samples")])
    parser.set_defaults(run=run)
