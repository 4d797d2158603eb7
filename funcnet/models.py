"""The book's networks, built from funcnet layers.

Every builder takes ``wrap``, a function applied to each layer before they are put in a
pipeline (``profile.Timer.wrap`` times each layer this way); by default none.
``MODELS`` names the ones the command line offers: a new model is a builder here and one
entry there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from .core import Layer, pipeline
from .layers import BatchNorm, Conv, Dense, Dropout, Flatten, MaxPool, Relu

Wrap = Callable[[Layer], Layer] | None


def _net(layers: Sequence[Layer], wrap: Wrap, name: str | None = None) -> Layer:
    return pipeline(*(layers if wrap is None else map(wrap, layers)), name=name)


def two_layer_net(
    hidden: int = 100, weight_std: float = 0.01, classes: int = 10, *, wrap: Wrap = None
) -> Layer:
    """Chapter 5's TwoLayerNet: Dense(hidden) – Relu – Dense(classes), weights N(0, std²)."""
    layers = [Dense(hidden, W_init=weight_std), Relu(), Dense(classes, W_init=weight_std)]
    return _net(layers, wrap)


def multilayer_net(
    hidden: Sequence[int] = (100, 100, 100, 100),
    W_init="he_normal",
    *,
    batchnorm: bool = False,
    dropout: float = 0.0,
    dropout_scale_at: str = "train",
    classes: int = 10,
    wrap: Wrap = None,
) -> Layer:
    """Chapter 6's MultiLayerNet(Extend): per hidden size Dense [– BatchNorm] – Relu
    [– Dropout], then Dense(classes)."""
    layers: list[Layer] = []
    for n in hidden:
        layers.append(Dense(n, W_init=W_init))
        if batchnorm:
            layers.append(BatchNorm())
        layers.append(Relu())
        if dropout:
            layers.append(Dropout(dropout, scale_at=dropout_scale_at))
    return _net([*layers, Dense(classes, W_init=W_init)], wrap)


def dense_weights(params) -> list:
    """The ``W`` of every Dense layer of a flat pipeline's params, in order."""
    return [p["W"] for p in params if isinstance(p, dict) and "W" in p]


def with_dense_weights(params, weights) -> tuple:
    """A flat pipeline's ``params`` with its Dense weights replaced, in order, by ``weights``:
    gives nets of different lengths (with and without BatchNorm or Dropout) the same start."""
    it = iter(weights)
    return tuple({**p, "W": next(it)} if isinstance(p, dict) and "W" in p else p for p in params)


def simple_convnet(
    filters: int = 30,
    kernel: int = 5,
    hidden: int = 100,
    classes: int = 10,
    W_init=0.01,
    *,
    wrap: Wrap = None,
) -> Layer:
    """Chapter 7's SimpleConvNet on (N, 1, 28, 28):
    Conv(30, 5×5) – Relu – MaxPool 2×2 – Flatten – Dense(100) – Relu – Dense(10).

    Weights N(0, 0.01²) as in the book; ``docs/conv.md`` gives the accuracies measured.
    """
    layers = [
        Conv(filters, kernel, W_init=W_init),
        Relu(),
        MaxPool(2),
        Flatten(),
        Dense(hidden, W_init=W_init),
        Relu(),
        Dense(classes, W_init=W_init),
    ]
    return _net(layers, wrap)


def deep_convnet(
    hidden: int = 50, classes: int = 10, dropout: float = 0.5, *, wrap: Wrap = None
) -> Layer:
    """Chapter 8's DeepConvNet on (N, 1, 28, 28), the book's layout (``ch08/deep_convnet.py``):

    conv 3×3 16 – Relu – conv 3×3 16 – Relu – max-pool 2 –
    conv 3×3 32 – Relu – conv 3×3 32 (padding 2) – Relu – max-pool 2 –
    conv 3×3 64 – Relu – conv 3×3 64 – Relu – max-pool 2 –
    Dense(50) – Relu – Dropout(0.5) – Dense(10) – Dropout(0.5).

    Every conv has padding 1 but the fourth (padding 2, so 14×14 becomes 16×16 and the
    pools give 8×8, then 4×4: 64·4·4 = 1024 features).  He initialization N(0, 2/fan_in)
    with fan_in = C·3·3 for the convs and the input width for Dense, as the book's
    ``pre_node_nums``.  Dropout is the book's: keep without scaling in training, scale by
    1 − ratio at evaluation (``scale_at="eval"``).  Train it with Adam 0.001, batch 100.
    """

    def conv(filters: int, padding: int = 1) -> list[Layer]:
        return [Conv(filters, 3, padding=padding, W_init="he_normal"), Relu()]

    layers = [
        *conv(16), *conv(16), MaxPool(2),
        *conv(32), *conv(32, padding=2), MaxPool(2),
        *conv(64), *conv(64), MaxPool(2),
        Flatten(),
        Dense(hidden, W_init="he_normal"), Relu(), Dropout(dropout, scale_at="eval"),
        Dense(classes, W_init="he_normal"), Dropout(dropout, scale_at="eval"),
    ]  # fmt: skip
    return _net(layers, wrap, name="deep_convnet")


class Model(NamedTuple):
    """An entry of :data:`MODELS`: ``build(**options, wrap=None)`` makes the net from the
    settings named in ``options`` (each the command line's flag of that name, e.g.
    ``hidden`` for ``--hidden``) and what a task's data adds (``tasks.Data.model_args``);
    ``input_shape`` is one example's shape (None: given by the data)."""

    build: Callable[..., Layer]
    input_shape: tuple[int, ...] | None
    description: str
    options: tuple[str, ...] = ()


def _mlp(hidden: int = 100, weight_std: float = 0.01, *, wrap: Wrap = None) -> Layer:
    return two_layer_net(hidden, weight_std, wrap=wrap)


def _convnet(weight_std: float = 0.01, *, wrap: Wrap = None) -> Layer:
    return simple_convnet(W_init=weight_std, wrap=wrap)


def _deep(*, wrap: Wrap = None) -> Layer:
    return deep_convnet(wrap=wrap)


def _gpt(vocab: int, layers: int, heads: int, width: int, context: int, dropout: float = 0.0,
         *, wrap: Wrap = None) -> Layer:  # fmt: skip
    from .gpt import NANOGPT_CPU as r  # the model tasks.gpt_recipe trains

    net = gpt(vocab, layers, heads, width, context, dropout, bias=r.bias, gelu=r.gelu)
    return net if wrap is None else wrap(net)


def _seq2seq(kind: str) -> Callable[..., Layer]:
    """The builder of the second book's encoder–decoder ``kind`` (``seq2seq.KINDS``)."""

    def build(vocab: int, question_len: int, wordvec: int, hidden: int, *, wrap: Wrap = None):
        from . import seq2seq as s2s

        net = s2s.build(vocab, wordvec, hidden, kind, question_len)
        return net if wrap is None else wrap(net)

    return build


_SEQ2SEQ_OPTIONS = ("vocab", "question_len", "wordvec", "hidden")

# The networks the command line trains, by name: the one list its --model choices come from.
MODELS: dict[str, Model] = {
    "mlp": Model(_mlp, (784,), "784-H-10, chapter 5's two-layer net", ("hidden", "weight_std")),
    "convnet": Model(_convnet, (1, 28, 28), "chapter 7's SimpleConvNet", ("weight_std",)),
    "deep": Model(_deep, (1, 28, 28), "chapter 8's deep convnet (He init, Dropout)"),
    # Its input is (N, T) ids, T ≤ context: no fixed example shape.
    "gpt": Model(
        _gpt,
        None,
        "nanoGPT's character transformer (funcnet.gpt)",
        ("vocab", "layers", "heads", "width", "context", "dropout"),
    ),
    # Their input is [question | decoder input] ids: its shape comes from the data.
    "seq2seq": Model(
        _seq2seq("plain"), None, "book 2's seq2seq: LSTM encoder, LSTM decoder", _SEQ2SEQ_OPTIONS
    ),
    "peeky": Model(
        _seq2seq("peeky"),
        None,
        "seq2seq whose decoder sees the encoding at every step",
        _SEQ2SEQ_OPTIONS,
    ),
    "attention": Model(
        _seq2seq("attention"),
        None,
        "seq2seq with attention over the encoder's states (book 2, chapter 8)",
        _SEQ2SEQ_OPTIONS,
    ),
}


def build(name: str, *, wrap: Wrap = None, **options) -> Layer:
    """The registered model ``name``, built from the ``options`` it takes (others are
    ignored: a setting such as ``hidden`` means nothing to a convnet)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: use one of {', '.join(MODELS)}")
    model = MODELS[name]
    return model.build(**{k: v for k, v in options.items() if k in model.options}, wrap=wrap)


def by_name(
    name: str, *, hidden: int = 100, weight_std: float = 0.01, wrap: Wrap = None
) -> tuple[Layer, tuple[int, ...]]:
    """The command line's networks: ``(net, input shape of one example)``.  ``"mlp"``:
    ``two_layer_net(hidden, weight_std)`` on flat 784-vectors; ``"convnet"``:
    ``simple_convnet(W_init=weight_std)`` and ``"deep"``: ``deep_convnet()`` (He
    initialization, the book's) on (1, 28, 28) images."""
    net = build(name, wrap=wrap, hidden=hidden, weight_std=weight_std)
    return net, MODELS[name].input_shape


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
    """nanoGPT's character GPT, ids (N, T ≤ context) → logits (N, T, vocab), by default
    without biases and with the exact GELU as nanoGPT's: see ``funcnet.gpt.gpt``, which also
    holds its loss, optimizer, training loop and sampler."""
    from .gpt import gpt as build

    return build(vocab, layers, heads, width, context, dropout, tie=tie, bias=bias, gelu=gelu)


# --------------------------------------------------------------------------- seq2seq (book 2)


def seq2seq(
    vocab, wordvec: int = 16, hidden: int = 128, peeky: bool = False, *, question_len: int
) -> Layer:
    """The second book's ``Seq2seq`` (chapter 7), or ``PeekySeq2seq`` with ``peeky``:
    Embedding–LSTM encoder, Embedding–LSTM–Dense decoder.  ``vocab`` is the vocabulary's
    size (or the vocabulary); the input is ``[question | decoder input]`` of
    ``question_len + Td`` ids, the output the scores (N, Td, vocab), and
    ``model.generate`` answers greedily (``funcnet.seq2seq``)."""
    from . import seq2seq as s2s

    return s2s.build(vocab, wordvec, hidden, "peeky" if peeky else "plain", question_len)


def attention_seq2seq(vocab, wordvec: int = 16, hidden: int = 256, *, question_len: int) -> Layer:
    """The second book's ``AttentionSeq2seq`` (chapter 8): the decoder scores [attention
    context over all the encoder's states, its own state] (``funcnet.seq2seq``)."""
    from . import seq2seq as s2s

    return s2s.build(vocab, wordvec, hidden, "attention", question_len)


__all__ = [
    "MODELS",
    "Model",
    "attention_seq2seq",
    "build",
    "by_name",
    "deep_convnet",
    "dense_weights",
    "gpt",
    "multilayer_net",
    "seq2seq",
    "simple_convnet",
    "two_layer_net",
    "with_dense_weights",
]
