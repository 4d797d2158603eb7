"""``fit``: the training loop over epochs, whatever runs the steps (``runners``).

What ``fit`` does around the steps:

- **Checks before any work**: the data's lengths, ``batch_size``, ``train_acc_samples``,
  the resumed epoch, the metrics, the mesh, that ``scan=True`` has JAX params, and every
  target on the host (the loss's own checks on all of them: under ``jit`` the loss cannot
  look at values, and a label out of range would train silently).
- **Batches**: a new permutation of the training set from ``seed`` each epoch; batches
  that do not fill ``batch_size`` at the end are dropped, as the book's iteration count
  does.  Random layers get a fresh stream each step, derived from ``seed``: ``(seed,
  epoch, step)`` on NumPy, a ``jax.random`` key on JAX.  A resumed run (``Resume``) runs
  epochs ``epoch + 1 .. epochs`` on the batches and keys they had in the whole run.
- **Execution**: NumPy ``params`` run the step eagerly; JAX ``params`` jit it, and
  ``scan=True`` runs the whole epoch as one ``lax.scan`` program.  ``mesh``
  (``parallel.data_mesh(...)``) runs data parallel: every batch split along the mesh's
  ``"data"`` axis, params and optimizer state replicated, the same batches and keys as on
  one device (``batch_size`` must divide by the device count), the 1-device results up to
  float32 summation order; with several processes each one calls ``fit`` with the same
  arguments and places only its own rows of every batch.
- **Divergence**: the losses are checked once per epoch; a non-finite one raises
  ``FloatingPointError`` on every backend (``stop_if_diverged=False`` trains on, as the
  book's experiments do with a net that diverges; the NumPy loss still refuses NaN logits).
- **Scoring**: after every epoch each metric on the training set (its first
  ``train_acc_samples`` only, when given: the book's chapter-8 trainer scores 1,000) and
  on the test set, with the net's eval forward compiled once per run on JAX.  With an
  optimizer wrapped in ``optim.with_average`` the scores are the averaged params'; the
  returned ``params`` are always the last iterate, from which training continues.
- **Ctrl-C** raises ``Interrupted``, which carries the params, optimizer state and history
  of the last finished epoch.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from .. import optim
from .._arrays import tree_namespace
from .._progress import ProgressBar
from ..core import Layer, Loss, trainable
from ..losses import softmax_cross_entropy
from .metrics import Metric, accuracy, check_metrics, evaluate, scored_params, scoring_net
from .runners import make_runner
from .step import make_step


class History(NamedTuple):
    """What ``fit`` saw: the loss of every step, each epoch's mean loss and seconds, and per
    metric its value after every epoch on the training set (``train[name]``) and the test
    set (``test[name]``, empty without one)."""

    step_loss: list[float]
    epoch_loss: list[float]
    epoch_time: list[float]
    train: dict[str, list[float]]
    test: dict[str, list[float]]

    @property
    def train_acc(self) -> list[float]:
        """``train["accuracy"]``."""
        return self._metric(self.train, "train")

    @property
    def test_acc(self) -> list[float]:
        """``test["accuracy"]``."""
        return self._metric(self.test, "test")

    def _metric(self, values: dict, where: str) -> list[float]:
        if "accuracy" not in values:
            raise KeyError(f"History: no 'accuracy' among the metrics {sorted(values)} ({where})")
        return values["accuracy"]


class Resume(NamedTuple):
    """Where a resumed run starts: ``epoch`` epochs done and the optimizer state they left
    (``None``: a fresh one).  A ``checkpoints.Run`` has both and can be passed as it is."""

    epoch: int
    opt_state: Any = None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during ``fit``: carries what the last finished epoch left, so nothing finished
    is lost.  ``epochs_done`` counts from the run's start (a resumed run's epoch included);
    when no epoch finished it is the resumed epoch (0 for a new run) and ``params`` are the
    ones ``fit`` got."""

    def __init__(self, params, opt_state, history, epochs_done: int):
        super().__init__(f"fit interrupted after {epochs_done} finished epoch(s)")
        self.params, self.opt_state = params, opt_state
        self.history, self.epochs_done = history, epochs_done


def fit(
    net: Layer, params, train: tuple[Any, Any], test: tuple[Any, Any] | None = None, *,
    loss: Loss = softmax_cross_entropy, optimizer=None, augment: Callable | None = None,
    epochs: int = 20, batch_size: int = 100, seed: int = 0,
    scan: bool = False, mesh=None, resume: Resume | None = None,
    metrics: Mapping[str, Metric] | None = None, train_acc_samples: int | None = None,
    stop_if_diverged: bool = True, progress: bool | None = None,
    on_epoch: Callable[[int, History], Any] | None = None,
    checkpoint: Callable[[int, Any, Any], Any] | None = None,
):  # fmt: skip
    """Train ``make_step(net, loss, optimizer, augment)`` (SGD 0.1 by default) on shuffled
    mini-batches of ``train`` = (x, t) for ``epochs`` epochs, scoring every metric on the
    training and ``test`` sets after each.  Returns ``(params, opt_state, History)``.

    The step runs as the params and ``scan``/``mesh`` say (``runners``); ``metrics`` maps
    names to ``metric(net, params, x, t) -> float`` (default ``{"accuracy": accuracy}``),
    ``train_acc_samples`` scores the training set's first that many samples only;
    ``resume=Resume(epoch, opt_state)`` (or a ``checkpoints.Run``) continues a run.
    ``on_epoch(epoch, history)`` and ``checkpoint(epoch, params, opt_state)`` are called
    after every finished epoch; ``progress`` draws a bar on stderr (default: when it is a
    terminal).  The module's docstring says what is checked, drawn, scored and kept.
    """
    start, opt_state = _resumed(resume, epochs)
    scored_train = _check_data(train, batch_size, train_acc_samples)
    metrics = check_metrics({"accuracy": accuracy} if metrics is None else metrics)
    params, on_jax = _checked(net, params, loss, train, test, batch_size, scan, mesh)
    opt = optimizer if optimizer is not None else optim.sgd(0.1)
    if opt_state is None:
        opt_state = opt.init(trainable(params))
    runner = make_runner(
        make_step(net, loss, opt, augment), train, batch_size, seed,
        on_jax=on_jax, scan=scan, mesh=mesh, start=start,
    )  # fmt: skip
    scorer = scoring_net(net, params)  # its eval forward compiled once for the whole run
    params, opt_state = runner.start(params, opt_state)
    hist = History([], [], [], {m: [] for m in metrics}, {m: [] for m in metrics})
    bar = ProgressBar(sys.stderr, enabled=progress)
    done, finished = runner.snapshot((params, opt_state)), start
    try:
        for epoch in range(start + 1, epochs + 1):
            clock, on_step = time.perf_counter(), _progress(bar, epoch, epochs, runner.steps)
            params, opt_state, losses = runner.epoch(params, opt_state, epoch, on_step)
            # One conversion at the end: a float() per step would make JAX wait for each.
            losses = np.asarray(losses, dtype=np.float64)
            if stop_if_diverged:
                _check_finite(losses, epoch)
            _record(hist, losses, time.perf_counter() - clock)
            scored = scored_params(*runner.local((params, opt_state)))
            for values, data in ((hist.train, scored_train), (hist.test, test)):
                if data is not None:
                    for name, value in evaluate(metrics, scorer, scored, *data).items():
                        values[name].append(value)
            bar.clear()
            done, finished = runner.snapshot((params, opt_state)), epoch
            if checkpoint is not None:
                checkpoint(epoch, params, opt_state)
            if on_epoch is not None:
                on_epoch(epoch, hist)
    except KeyboardInterrupt:
        bar.clear()
        raise Interrupted(*done, _first(hist, finished - start, runner.steps), finished) from None
    return params, opt_state, hist


def _record(hist: History, losses: np.ndarray, seconds: float) -> None:
    hist.epoch_time.append(seconds)
    hist.step_loss.extend(losses.tolist())
    hist.epoch_loss.append(float(np.mean(losses)))


def _checked(net, params, loss, train, test, batch_size, scan, mesh) -> tuple[Any, bool]:
    """(params on one device, whether the step runs on JAX), after the checks that need the
    net: the mesh, ``scan``'s JAX params, and every target (the loss's own checks)."""
    if mesh is not None:
        from .. import parallel

        parallel.check_mesh(mesh, batch_size)
        params = parallel.local_copy(params)  # the checks below run on one device
    on_jax = mesh is not None or tree_namespace(params) is not np
    if scan and not on_jax:
        raise ValueError(
            "fit: scan=True compiles the epoch with JAX and needs JAX params; pass "
            "jax.device_put(params)"
        )
    _check_targets(net, params, loss, *train, "training")
    if test is not None:
        _check_targets(net, params, loss, *test, "test")
    return params, on_jax


def _resumed(resume, epochs: int) -> tuple[int, Any]:
    """(epochs done, optimizer state) of ``resume``, checked against ``epochs``."""
    start, opt_state = (0, None) if resume is None else (resume.epoch, resume.opt_state)
    if not isinstance(start, int | np.integer) or not 0 <= start < epochs:
        raise ValueError(
            f"fit: resume.epoch must be in [0, {epochs - 1}] for epochs={epochs}, got {start!r}"
        )
    return int(start), opt_state


def _check_data(train, batch_size: int, train_acc_samples: int | None):
    """The training set's (x, t) to score, after checking the arguments that size it."""
    x, t = train
    if len(x) != len(t):
        raise ValueError(f"fit: {len(x)} training inputs but {len(t)} targets")
    if not 1 <= batch_size <= len(x):
        raise ValueError(f"fit: batch_size must be in [1, {len(x)}], got {batch_size}")
    if train_acc_samples is None:
        return x, t
    if (
        isinstance(train_acc_samples, bool)
        or not isinstance(train_acc_samples, int)
        or not 1 <= train_acc_samples <= len(x)
    ):
        raise ValueError(
            f"fit: train_acc_samples must be None or an int in [1, {len(x)}], got "
            f"{train_acc_samples!r}"
        )
    return x[:train_acc_samples], t[:train_acc_samples]


def _check_targets(net: Layer, params, loss: Loss, x, t, what: str) -> None:
    """Validate every target once, on the host, before any step: under ``jit`` the loss
    cannot look at values, and a label out of range would train silently."""
    if tree_namespace(params) is np:
        out = net.forward(params, x[:1])[0]
    else:  # its shape only: run op by op, the forward would compile each operation
        import jax

        out = jax.eval_shape(lambda p, xb: net.forward(p, xb)[0], params, x[:1])
    zeros = np.zeros((len(t), *out.shape[1:]), dtype=np.dtype(out.dtype))
    try:
        loss.forward(zeros, np.asarray(t))
    except (ValueError, TypeError) as e:
        raise type(e)(f"fit: {what} targets: {e}") from None


def _check_finite(losses, epoch: int) -> None:
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        raise FloatingPointError(
            f"fit: the loss is {losses[bad[0]]} from step {bad[0] + 1} of epoch {epoch} on; "
            "the learning rate is probably too large"
        )


def _progress(bar: ProgressBar, epoch: int, epochs: int, steps: int) -> Callable | None:
    """``on_step(i, loss)`` redrawing ``bar`` about 50 times an epoch, or None without one."""
    if not bar.enabled:
        return None
    every, label = max(1, steps // 50), f"epoch {epoch:>3}/{epochs}"

    def on_step(i: int, value) -> None:
        if i % every == 0:
            bar.show(label, i, steps, f"loss {float(value):.4f}")

    return on_step


def _first(hist: History, epochs: int, steps: int) -> History:
    """``hist`` cut to its first ``epochs`` epochs: what the finished epochs recorded."""
    return History(
        hist.step_loss[: epochs * steps],
        hist.epoch_loss[:epochs],
        hist.epoch_time[:epochs],
        {name: values[:epochs] for name, values in hist.train.items()},
        {name: values[:epochs] for name, values in hist.test.items()},
    )


__all__ = ["History", "Interrupted", "Resume", "fit"]
