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
from .._checks import NonFiniteError, first_non_finite, non_finite_in
from .._progress import ProgressBar
from ..core import Layer, Loss, trainable
from ..losses import softmax_cross_entropy
from .metrics import (
    Metric,
    accuracy,
    accuracy_problem,
    check_metrics,
    evaluate,
    scored_params,
    scoring_net,
)
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
    _check_counts(epochs=epochs, batch_size=batch_size)
    start, opt_state = _resumed(resume, epochs)
    scored_train = _check_data(train, batch_size, train_acc_samples)
    inputs = _check_inputs(train, test)  # NaN, inf and the magnitude, before any work
    metrics = check_metrics({"accuracy": accuracy} if metrics is None else metrics)
    params, on_jax = _checked(net, params, loss, train, test, batch_size, scan, mesh, metrics)
    opt = optimizer if optimizer is not None else optim.sgd(0.1)
    if opt_state is None:
        opt_state = opt.init(trainable(params))
    step = make_step(net, loss, opt, augment)
    # NumPy sees a non-finite loss mid-epoch, in the loss's check: counted, it is named by
    # its step and diagnosed here (a compiled step returns its losses at the epoch's end).
    step = step if on_jax else _Counted(step)
    runner = make_runner(
        step, train, batch_size, seed, on_jax=on_jax, scan=scan, mesh=mesh, start=start
    )
    watch = _Watch(step, start, inputs, batch_size, stop_if_diverged)
    scorer = scoring_net(net, params)  # its eval forward compiled once for the whole run
    params, opt_state = runner.start(params, opt_state)
    hist = History([], [], [], {m: [] for m in metrics}, {m: [] for m in metrics})
    bar = ProgressBar(sys.stderr, enabled=progress)
    done, finished = runner.snapshot((params, opt_state)), start
    try:
        for epoch in range(start + 1, epochs + 1):
            clock, on_step = time.perf_counter(), _progress(bar, epoch, epochs, runner.steps)
            params, opt_state, losses = _run_epoch(runner, params, opt_state, epoch, on_step, watch)
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


def _checked(net, params, loss, train, test, batch_size, scan, mesh, metrics) -> tuple[Any, bool]:
    """(params on one device, whether the step runs on JAX), after the checks that need the
    net: the mesh, ``scan``'s JAX params, finite params, every target (the loss's own
    checks) and, when ``accuracy`` is a metric, that the targets are labels it can score."""
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
    if bad := first_non_finite(params):
        raise NonFiniteError(f"fit: {bad}: the params must be finite before training")
    outputs = _check_targets(net, params, loss, *train, "training")
    if test is not None:
        _check_targets(net, params, loss, *test, "test")
    scored = [name for name, metric in metrics.items() if metric is accuracy]
    for t, what in ((train[1], "training"), (None if test is None else test[1], "test")):
        if scored and t is not None and (problem := accuracy_problem((len(t), *outputs), t)):
            raise ValueError(f"fit: metric {scored[0]!r} on the {what} targets: {problem}")
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


def _check_targets(net: Layer, params, loss: Loss, x, t, what: str) -> tuple[int, ...]:
    """Validate every target once, on the host, before any step: under ``jit`` the loss
    cannot look at values, and a label out of range would train silently.  Returns the
    shape of one example's output."""
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
    return tuple(out.shape[1:])


class _Watch(NamedTuple):
    """What an epoch's failure is diagnosed with (``_run_epoch``)."""

    step: Callable
    start: int
    inputs: _Inputs
    batch_size: int
    stop_if_diverged: bool


def _run_epoch(runner, params, opt_state, epoch: int, on_step, watch: _Watch):
    """``runner.epoch``: (params, opt_state, the losses as float64); a non-finite loss (with
    ``stop_if_diverged``) or a MemoryError raised in one line that says what is true."""
    if isinstance(watch.step, _Counted):
        watch.step.reset()
    try:
        # A diverging run is reported below in one line; NumPy's warnings would only come
        # before it.
        with np.errstate(**(_QUIET if watch.stop_if_diverged else {})):
            params, opt_state, losses = runner.epoch(params, opt_state, epoch, on_step)
    except _StepFailed as e:
        where = f"step {e.step} of epoch {epoch}: {e.what}"
        raise _diverged(where, epoch, e.step, watch.start, watch.inputs) from None
    except MemoryError as e:
        raise MemoryError(
            f"fit: out of memory in epoch {epoch} with batch_size {watch.batch_size} ({e}): "
            "a smaller batch needs less"
        ) from None
    # One conversion at the end: a float() per step would make JAX wait for each.
    losses = np.asarray(losses, dtype=np.float64)
    if watch.stop_if_diverged:
        _check_finite(losses, epoch, watch.start, watch.inputs)
    return params, opt_state, losses


def _check_finite(losses, epoch: int, start: int, inputs: _Inputs) -> None:
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        step = int(bad[0]) + 1
        where = f"the loss is {losses[bad[0]]} from step {step} of epoch {epoch} on"
        raise _diverged(where, epoch, step, start, inputs)


_QUIET = {"over": "ignore", "invalid": "ignore"}

# Inputs beyond this magnitude make a step's update grow with |x|² past what floats hold at
# any usual learning rate; normalized data (images in [0, 1], standardized features) and
# even raw pixels (0..255) stay far below it.
_HUGE_INPUT = 1e6


class _Inputs(NamedTuple):
    """The training inputs' largest magnitude and where it is (``"x[7, 3]"``): what a
    divergence message blames when it is huge."""

    largest: float
    where: str


class _StepFailed(Exception):
    """A NumPy step's loss refused its non-finite input: the step's number in its epoch."""

    def __init__(self, step: int, what: str):
        super().__init__(what)
        self.step, self.what = step, what


class _Counted:
    """``step`` counting its calls in an epoch (``reset`` at each one's start) and raising
    ``_StepFailed`` for a non-finite loss (``NonFiniteError`` from the loss's checks)."""

    def __init__(self, step: Callable):
        self.step, self.calls = step, 0

    def reset(self) -> None:
        self.calls = 0

    def __call__(self, params, opt_state, x, t, rng=None):
        self.calls += 1
        try:
            return self.step(params, opt_state, x, t, rng=rng)
        except NonFiniteError as e:
            raise _StepFailed(self.calls, str(e)) from None


def _diverged(where: str, epoch: int, step: int, start: int, inputs: _Inputs) -> Exception:
    """The error for a non-finite loss at ``step`` of ``epoch``, blaming what is true: the
    first step of the run ran before any update (not the learning rate: the net overflows on
    these inputs); huge inputs overflow whatever the rate; else the rate is too large."""
    big = inputs.largest > _HUGE_INPUT
    scale = f"the training inputs reach |x| = {inputs.largest:.3g} (at {inputs.where})"
    if epoch == start + 1 and step == 1:
        cause = f"{scale}: scale them (e.g. to [0, 1])" if big else "the net overflows on them"
        return NonFiniteError(f"fit: {where}, before any update, so not the learning rate; {cause}")
    if big:
        return NonFiniteError(
            f"fit: {where}; {scale}, so large that the updates overflow: scale them (e.g. to "
            "[0, 1])"
        )
    return FloatingPointError(f"fit: {where}; the learning rate is probably too large")


def _check_counts(**counts) -> None:
    """``epochs`` and ``batch_size``: ints (a NumPy integer too; not a bool, a float or an
    array), at least 1."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            shown = f"{type(value).__name__} {value!r}"
            raise TypeError(f"fit: {name} must be an int, got {shown}")
        if value < 1:
            raise ValueError(f"fit: {name} must be >= 1, got {value}")


def _check_inputs(train, test) -> _Inputs:
    """Every floating-point input and target finite, else a ``NonFiniteError`` naming the
    array and its first bad index (one pass each: min and max); the training inputs'
    magnitude."""
    arrays = [("training inputs x", train[0]), ("training targets t", train[1])]
    if test is not None:
        arrays += [("test inputs x", test[0]), ("test targets t", test[1])]
    for name, a in arrays:
        if a is not None and (bad := non_finite_in(a, name.split()[-1])):
            raise NonFiniteError(f"fit: {name.rsplit(' ', 1)[0]}: {bad}: clean the data first")
    x = np.asarray(train[0])
    if x.dtype.kind != "f" or x.size == 0:
        return _Inputs(0.0, "")
    largest = max(abs(float(x.min())), abs(float(x.max())))
    if largest <= _HUGE_INPUT:
        return _Inputs(largest, "")
    at = np.unravel_index(int(np.argmax(np.abs(x))), x.shape)
    return _Inputs(largest, f"x[{', '.join(str(int(i)) for i in at)}]")


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
