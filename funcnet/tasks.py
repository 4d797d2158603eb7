"""What ``funcnet train --task NAME`` trains: for each task its data loader, the models it
offers, its metrics and its default settings, in one place (:data:`TASKS`).

A new task is a loader and one entry in ``TASKS``: the command line offers it, resolves its
defaults with :meth:`Task.resolve` and prints its examples with ``show``.  Settings are
named as the command line's flags (``lr`` for ``--lr``, ``lr_schedule`` for
``--lr-schedule``); one not given (None) is the task's default, overridden by its model's,
and the learning rate is the chosen optimizer's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from . import losses, models

# A metric scores a net on examples: (net, params, x, t) -> float.
Metric = Callable[[Any, Any, Any, Any], float]


class Data(NamedTuple):
    """A task's examples: ``train`` and ``test`` as ``(inputs, targets)``; ``model_args``,
    what the model's builder needs from the data (e.g. a vocabulary's size)."""

    train: tuple[Any, Any]
    test: tuple[Any, Any]
    model_args: Mapping[str, Any] = {}


class Task(NamedTuple):
    """One entry of :data:`TASKS`.

    ``load(settings) -> Data`` reads the examples (``settings``: the run's, resolved, e.g.
    ``data_dir`` and ``model``); a problem with them is a ``ValueError`` in one message.
    ``models``: the names in ``models.MODELS`` this task trains.  ``defaults``: the settings
    of every run (``"model"`` is the default model); ``model_defaults``: per model, where it
    differs.  ``learning_rates``: the optimizers offered and each one's default rate.
    ``metrics``: named functions scored after every epoch, the first one the headline.
    ``unit``: what one example is called in printed lines.  ``show(net, params, test, *,
    partial, color) -> str``: what a run prints after its plots (``partial``: the test set
    was cut; ``model_args``: the data's ``Data.model_args``), or None.  ``train(settings,
    data, *, restore, on_eval, progress)``: the trainer of a task that trains by iterations
    (``gpt.train_gpt``'s contract: it returns a ``gpt.Result`` and raises
    ``gpt.Interrupted`` on Ctrl-C); None: epochs of ``train.fit``.  ``loss``: what a
    ``train.fit`` run trains the net's outputs on (None: ``losses.softmax_cross_entropy``).
    """

    name: str
    description: str
    load: Callable[[Mapping[str, Any]], Data]
    models: tuple[str, ...]
    defaults: Mapping[str, Any]
    model_defaults: Mapping[str, Mapping[str, Any]]
    learning_rates: Mapping[str, float]
    metrics: Mapping[str, Metric]
    unit: str = "examples"
    show: Callable[..., str] | None = None
    train: Callable[..., Any] | None = None
    loss: Any = None

    @property
    def loop(self) -> str:
        """How a run is counted: ``"iterations"`` with a trainer of its own, else
        ``"epochs"`` (``train.fit``)."""
        return "epochs" if self.train is None else "iterations"

    def setting(self, model: str, key: str) -> Any:
        """The default of setting ``key`` for a run of ``model`` (None: the task has none)."""
        return {**self.defaults, **self.model_defaults.get(model, {})}.get(key)

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """``given`` with each setting that is None (or missing) filled: from the model's
        defaults, then the task's; ``lr`` from ``learning_rates`` of the optimizer."""
        out = dict(given)
        if out.get("model") is None:
            out["model"] = self.defaults["model"]
        for key, value in {**self.defaults, **self.model_defaults.get(out["model"], {})}.items():
            if out.get(key) is None:
                out[key] = value
        if out.get("lr") is None:
            out["lr"] = self.learning_rates[out["optimizer"]]
        return out


def accuracy(net, params, x, t) -> float:
    """The fraction of ``x`` classified as ``t`` (``train.accuracy``, imported when first
    scored: reading the registry loads no JAX)."""
    from .train import accuracy

    return accuracy(net, params, x, t)


def _load_mnist(settings: Mapping[str, Any]) -> Data:
    from .data import load_mnist

    flat = len(models.MODELS[settings["model"]].input_shape) == 1
    train, test = load_mnist(settings.get("data_dir"), flatten=flat)
    return Data(train, test)


def _show_digits(net, params, test, *, partial: bool, color: bool | None = None, **_) -> str:
    """The misclassified test digits, as the book's chapter 8 draws them."""
    from . import plot
    from .train import predict

    x, t = test
    preds = predict(net, params, x)
    wrong = np.flatnonzero(preds != t)
    if not len(wrong):
        return f"{'the first' if partial else 'all'} {len(x)} test digits classified right"
    shown = wrong[:12]
    among = f" of the first {len(x)}" if partial else ""
    captions = [f"{preds[i]} (is {t[i]})" for i in shown]
    return (
        f"{len(wrong)}{among} test digits misclassified; the first {len(shown)}, as "
        f"prediction (is label):\n\n{plot.images(x[shown], captions)}"
    )


def _load_shakespeare(settings: Mapping[str, Any]) -> Data:
    """The corpus as ids: ``train`` and ``test`` hold the training and validation splits
    (inputs; each window's targets are its inputs shifted by one), ``model_args`` the
    vocabulary."""
    import os

    from . import shakespeare

    given = settings.get("data_dir")
    if given and not os.path.exists(given):  # not quietly the corpus found elsewhere
        raise ValueError(f"shakespeare: {given} does not exist")
    try:
        corpus = shakespeare.load(given)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None
    return Data(
        (corpus.train, None), (corpus.val, None), {"vocab": corpus.vocab, "chars": corpus.chars}
    )


def gpt_recipe(settings: Mapping[str, Any]):
    """``gpt.Recipe`` of a run's settings: nanoGPT's, with the learning rate decayed along a
    cosine to lr/10 at the last iteration after a warm-up of 100 (fewer in a shorter run)."""
    from .gpt import NANOGPT_CPU

    iters = settings["iters"]
    names = ("layers", "heads", "width", "context", "dropout", "batch", "iters", "lr")
    return NANOGPT_CPU._replace(
        **{k: settings[k] for k in names}, min_lr=settings["lr"] / 10, decay_iters=iters,
        warmup=min(NANOGPT_CPU.warmup, iters - 1), eval_every=settings["eval_every"],
    )  # fmt: skip


def _train_shakespeare(settings: Mapping[str, Any], data: Data, **hooks):
    from . import gpt
    from .shakespeare import Corpus

    corpus = Corpus(data.model_args["chars"], data.train[0], data.test[0])
    recipe = gpt_recipe(settings)
    return gpt.train_gpt(
        corpus, recipe, seed=settings["seed"], backend=settings["backend"], **hooks
    )


def _val_loss(net, params, x, t) -> float:
    """The mean per-character loss over every window of ``x`` (``gpt.evaluate``)."""
    from .gpt import context_of, evaluate

    return evaluate(net, params, x, context_of(params))


def _seq2seq_loader(name: str) -> Callable[[Mapping[str, Any]], Data]:
    """The loader of the second book's set ``name`` (``text.load_seq2seq``: its split and
    vocabulary), as the seq2seq models train on it (``text.teacher_forcing``, the questions
    reversed with the setting ``reverse``).  ``model_args``: the vocabulary's size, the
    question length, the characters in id order and ``reverse``."""

    def load(settings: Mapping[str, Any]) -> Data:
        from pathlib import Path

        from . import text

        source: Any = name
        if settings.get("data_dir"):  # a folder holding NAME.txt, or a file of that format
            source = Path(settings["data_dir"])
            source = source / f"{name}.txt" if source.is_dir() else source
            if not source.is_file():
                raise ValueError(f"{name}: {source} does not exist")
        try:
            d = text.load_seq2seq(source)
        except FileNotFoundError as e:
            raise ValueError(str(e)) from None
        reverse = bool(settings.get("reverse"))
        train = text.teacher_forcing(d.x_train, d.t_train, reverse=reverse)
        test = text.teacher_forcing(d.x_test, d.t_test, reverse=reverse)
        chars = "".join(d.id_to_char[i] for i in range(d.vocab_size))
        args = {"vocab": d.vocab_size, "question_len": d.x_train.shape[1], "chars": chars}
        return Data(train, test, {**args, "reverse": reverse})

    return load


def exact_match(net, params, x, t) -> float:
    """The fraction of whole answers the greedy decoder writes right (``seq2seq.exact_match``,
    the book's ``eval_seq2seq``: each step fed the previous step's answer, not the truth)."""
    from .seq2seq import exact_match

    return exact_match(net, params, x, t)


def _show_answers(net, params, test, *, partial: bool, color: bool | None = None,
                  model_args: Mapping[str, Any], count: int = 10) -> str:  # fmt: skip
    """The first ``count`` test questions with the model's answers marked right or wrong,
    and for an attention model the attention weights of the first three as heatmaps."""
    from . import seq2seq

    chars, reverse = model_args["chars"], model_args["reverse"]
    text = (
        f"the first {min(count, len(test[0]))} test questions, the model's answer marked ☑ "
        f"right or ☒ wrong:\n\n"
        + seq2seq.marked_answers(net, params, *test, chars, reverse, count=count, color=color)
    )
    if net.name.startswith("attention"):
        maps = seq2seq.attention_maps(net, params, test[0], chars, reverse, color=color)
        text += f"\n\nattention while answering (rows: written, columns: read):\n\n{maps}"
    return text


# The book's rates: 0.1 for plain and momentum SGD, 0.001 for Adam.
BOOK_RATES = {"sgd": 0.1, "momentum": 0.1, "adam": 0.001}

TASKS: dict[str, Task] = {
    "mnist": Task(
        name="mnist",
        description="MNIST digits, 60,000 training and 10,000 test images",
        load=_load_mnist,
        models=("mlp", "convnet", "deep"),
        defaults={
            "model": "mlp",
            "hidden": 100,
            "optimizer": "sgd",
            "epochs": 20,
            "batch": 100,
            "average": 0.0,
        },
        # Adam for the convnets, as the book; SimpleConvNet scores its averaged params.
        model_defaults={
            "convnet": {"optimizer": "adam", "average": 0.999},
            "deep": {"optimizer": "adam"},
        },
        learning_rates=BOOK_RATES,
        metrics={"accuracy": accuracy},
        unit="images",
        show=_show_digits,
    ),
    # nanoGPT's CPU recipe for shakespeare_char (its README: val loss about 1.88).
    "shakespeare": Task(
        name="shakespeare",
        description="tiny Shakespeare, characters: the first 90 % to train, the rest to score",
        load=_load_shakespeare,
        models=("gpt",),
        defaults={
            "model": "gpt",
            "optimizer": "adamw",
            "batch": 12,
            "iters": 2000,
            "eval_every": 250,
            "layers": 4,
            "heads": 4,
            "width": 128,
            "context": 64,
            "dropout": 0.0,
            "backend": "jax",
        },
        model_defaults={},
        learning_rates={"adamw": 1e-3},
        metrics={"val loss": _val_loss},
        unit="characters",
        train=_train_shakespeare,
    ),
    # The second book's chapter 7 (train_seq2seq.py) and 8 (train.py): Adam 0.001, batch 128,
    # gradients clipped to norm 5; the date questions read backwards, as the book's.
    "addition": Task(
        name="addition",
        description="the second book's addition.txt: 45,000 sums to learn, 5,000 to answer",
        load=_seq2seq_loader("addition"),
        models=("seq2seq", "peeky", "attention"),
        defaults={
            "model": "seq2seq", "wordvec": 16, "hidden": 128, "reverse": False,
            "optimizer": "adam", "clip": 5.0, "epochs": 25, "batch": 128, "average": 0.0,
        },
        model_defaults={"attention": {"hidden": 256}},
        learning_rates={"adam": 0.001},
        metrics={"accuracy": exact_match},
        unit="questions",
        show=_show_answers,
        loss=losses.time_softmax_cross_entropy,
    ),
    "date": Task(
        name="date",
        description="the second book's date.txt: 45,000 dates to rewrite as YYYY-MM-DD, 5,000 "
        "to answer",
        load=_seq2seq_loader("date"),
        models=("attention", "seq2seq", "peeky"),
        defaults={
            "model": "attention", "wordvec": 16, "hidden": 256, "reverse": True,
            "optimizer": "adam", "clip": 5.0, "epochs": 10, "batch": 128, "average": 0.0,
        },
        model_defaults={},
        learning_rates={"adam": 0.001},
        metrics={"accuracy": exact_match},
        unit="questions",
        show=_show_answers,
        loss=losses.time_softmax_cross_entropy,
    ),
}  # fmt: skip
DEFAULT_TASK = "mnist"


def _and(names: list[str]) -> str:
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def describe_default(key: str) -> str:
    """How each task fills setting ``key`` when it is not given, in words (for --help)."""
    parts = []
    for task in TASKS.values():
        if key == "lr":
            pairs = list(task.learning_rates.items())
        else:
            pairs = [(m, task.setting(m, key)) for m in task.models]
        if all(value is None for _, value in pairs):
            continue  # a setting this task does not have
        values: dict[Any, list[str]] = {}
        for name, value in pairs:
            values.setdefault(value, []).append(name)
        if len(values) == 1:
            text = str(next(iter(values)))
        else:
            text = ", ".join(f"{v} for {_and(names)}" for v, names in values.items())
        parts.append(f"{task.name}: {text}")
    return "; ".join(parts)


__all__ = [
    "BOOK_RATES",
    "DEFAULT_TASK",
    "TASKS",
    "Data",
    "Metric",
    "Task",
    "accuracy",
    "describe_default",
    "exact_match",
    "gpt_recipe",
]
