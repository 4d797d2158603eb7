"""``funcnet eval``: saved models on the MNIST test set: accuracy, confusion matrix, the
digits it got wrong; several files are also scored as an ensemble (mean softmax).  With
``--task`` another task (addition, date): one file saved by ``funcnet train --save``, whose
metadata names the model, its settings and the vocabulary, scored on that task's test set
with the task's examples shown."""

from __future__ import annotations

import sys

import numpy as np

from ._flags import (
    DATA_DIR,
    HIDDEN,
    LOAD,
    MODEL,
    NO_COLOR,
    NO_PLOT,
    SAVE,
    SHOW,
    TASK,
    UsageError,
    add_command,
    default_task_setting,
)
from ._process import one_line

# Saved models are scored on the default task's test set, MNIST.


def _models() -> tuple[str, ...]:
    from ..tasks import DEFAULT_TASK, TASKS

    return TASKS[DEFAULT_TASK].models


def _tasks() -> tuple[str, ...]:
    """The tasks whose runs ``train.fit`` scores by epoch (not those with a trainer of their
    own): their metrics score a saved model as they scored it in training."""
    from ..tasks import TASKS

    return tuple(n for n, t in TASKS.items() if getattr(t, "train", None) is None)


FLAGS = (
    LOAD,
    TASK.but(help="the test set to score on; for a task other than mnist the file names its "
             "model and settings", choices=_tasks),
    MODEL.but(help="mnist: the network the files were saved from", choices=_models,
              default=default_task_setting("model"), per_task=False),
    HIDDEN.but(help="mnist: mlp hidden units", default=default_task_setting("hidden"),
               per_task=False),
    DATA_DIR.but(help="mnist: folder with the four MNIST files; addition, date: the folder "
                 "holding its file, or the file (default: as funcnet train finds it)"),
    SHOW,
    NO_PLOT,
    NO_COLOR,
)  # fmt: skip


def add_parser(subparsers) -> None:
    add_command(subparsers, "eval", FLAGS).set_defaults(run=run)


def run(args) -> int:
    from .. import models, plot
    from .._checks import unusable_params
    from ..checkpoints import load_params
    from ..data import load_mnist_test
    from ..tasks import DEFAULT_TASK, TASKS
    from ..train import probabilities

    if args.task != DEFAULT_TASK:
        return _run_self_described(args, TASKS[args.task])
    net, shape = models.by_name(args.model, hidden=args.hidden)
    like = net.init(0, (-1, *shape))[1]
    loaded = []
    for path in args.load:  # every file is read before any work
        try:
            loaded.append(load_params(path, like))
        except ValueError as e:
            other = _saved_task(path)
            if other:
                return _fail(f"{path} was saved from {TASK} {other}: add {TASK} {other}")
            print(f"funcnet eval: {e} (is it a {MODEL} {args.model} checkpoint?)", file=sys.stderr)
            return 1
        if why := unusable_params(path, loaded[-1], "score"):
            return _fail(why)
    try:  # the test files only: scoring reads nothing else
        x_test, t_test = load_mnist_test(args.data_dir, flatten=len(shape) == 1)
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


def _saved_task(path: str) -> str | None:
    """The task a ``funcnet train --save`` file with metadata names, or None."""
    from ..checkpoints import run_info

    try:
        return run_info(path)[1].get("task")
    except ValueError:
        return None


def _fail(message: str, code: int = 1) -> int:
    print(f"funcnet eval: {message}", file=sys.stderr)
    return code


def _run_self_described(args, task) -> int:
    """One file of a task whose net is built from its data: the file's metadata (written by
    ``funcnet train --save``) rebuilds the net; scored with the task's metrics."""
    from ..checkpoints import load_run, run_info
    from ..models import MODELS

    if len(args.load) > 1:
        raise UsageError(f"{LOAD} takes one file with {TASK} {task.name} (no ensemble)")
    path = args.load[0]
    try:
        _, meta = run_info(path)
    except ValueError:
        meta = {}
    if meta.get("saved") != "params" or meta.get("task") != task.name:
        then = f" (it was saved from {TASK} {meta['task']})" if meta.get("task") else ""
        return _fail(f"{path} holds no {task.name} model saved by funcnet train {SAVE}{then}")
    try:
        data = task.load({**meta, "data_dir": args.data_dir})
    except ValueError as e:  # missing or malformed files: the message says what to do
        return _fail(one_line(e), 2)
    for key in ("chars", "question_len"):
        if data.model_args.get(key) != meta.get(key):
            return _fail(f"{path} was trained on other data: its {key} is {meta.get(key)!r}, "
                         f"the data's {data.model_args.get(key)!r}")  # fmt: skip
    model = MODELS[meta["model"]]
    net = model.build(**{k: {**meta, **data.model_args}[k] for k in model.options})
    x, t = data.test
    try:
        params = load_run(path, net.init(0, (-1, *x.shape[1:]))[1], ()).params
    except ValueError as e:
        return _fail(str(e))
    from .._checks import unusable_params

    if why := unusable_params(path, params, "score"):
        return _fail(why)
    print(net.name)
    for name, metric in task.metrics.items():
        value = metric(net, params, x, t)
        shown = f"{100 * value:.2f}% on all {len(x)} test {task.unit}"
        print(f"{path}: test {name} {shown if name == 'accuracy' else f'{value:.4f}'}")
    if not args.no_plot and task.show is not None and args.show:
        color = False if args.no_color else None
        print()
        print(task.show(net, params, data.test, partial=False, color=color,
                        model_args=data.model_args, count=args.show))  # fmt: skip
    return 0
