"""``funcnet eval``: saved models on the MNIST test set: accuracy, confusion matrix, the
digits it got wrong; several files are also scored as an ensemble (mean softmax)."""

from __future__ import annotations

import sys

import numpy as np

from . import one_line
from ._flags import (
    DATA_DIR,
    HIDDEN,
    LOAD,
    MODEL,
    NO_COLOR,
    NO_PLOT,
    SHOW,
    add_command,
    default_task_setting,
)

# Saved models are scored on the default task's test set, MNIST.


def _models() -> tuple[str, ...]:
    from ..tasks import DEFAULT_TASK, TASKS

    return TASKS[DEFAULT_TASK].models


FLAGS = (
    LOAD,
    MODEL.but(help="the network the files were saved from", choices=_models,
              default=default_task_setting("model"), per_task=False),
    HIDDEN.but(default=default_task_setting("hidden"), per_task=False),
    DATA_DIR.but(help="folder with the four MNIST files"),
    SHOW,
    NO_PLOT,
    NO_COLOR,
)  # fmt: skip


def add_parser(subparsers) -> None:
    add_command(subparsers, "eval", FLAGS).set_defaults(run=run)


def run(args) -> int:
    from .. import models, plot
    from ..checkpoints import load_params
    from ..tasks import DEFAULT_TASK, TASKS
    from ..train import probabilities

    net, shape = models.by_name(args.model, hidden=args.hidden)
    like = net.init(0, (-1, *shape))[1]
    loaded = []
    for path in args.load:  # every file is read before any work
        try:
            loaded.append(load_params(path, like))
        except ValueError as e:
            print(f"funcnet eval: {e} (is it a {MODEL} {args.model} checkpoint?)", file=sys.stderr)
            return 1
    try:
        _, (x_test, t_test), _ = TASKS[DEFAULT_TASK].load(vars(args))
    except ValueError as e:  # no MNIST files: the message says where it looked
        print(f"funcnet eval: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"{net.name}")
    # An ensemble averages the models' softmax outputs: p = (1/K) Σ_k softmax(f(x; θ_k)).
    mean = np.zeros((len(x_test), 10))
    for path, params in zip(args.load, loaded, strict=True):
        p = probabilities(net, params, x_test)
        mean += p / len(loaded)
        if len(loaded) > 1:
            acc = np.mean(p.argmax(axis=1) == t_test)
            print(f"{path}: test accuracy {100 * acc:.2f}%")
    preds = mean.argmax(axis=1)
    right = preds == t_test
    what = f"the ensemble of {len(loaded)} (mean softmax)" if len(loaded) > 1 else args.load[0]
    print(f"{what}: test accuracy {100 * right.mean():.2f}% on all {len(x_test)} test images")
    counts = np.zeros((10, 10), dtype=np.int64)
    np.add.at(counts, (t_test, preds), 1)
    color = False if args.no_color else None
    print("\nconfusion matrix (rows: true digit, columns: predicted):\n")
    print(plot.confusion(counts, color=color))
    wrong = np.flatnonzero(~right)
    if not args.no_plot and len(wrong):
        shown = wrong[: args.show]
        print(f"\n{len(wrong)} misclassified; the first {len(shown)}:\n")
        captions = [f"{preds[i]} (is {t_test[i]})" for i in shown]
        print(plot.images(x_test[shown], captions))
    return 0
