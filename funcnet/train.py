"""Training: the pure step, the epoch, ``fit``, and ``predict``/``accuracy``.

The step is one function of arrays,

    params, opt_state, loss = step(params, opt_state, x, t, rng=None)

built from a layer's forward/backward, a loss and an optimizer.  The arrays decide how it
runs: on NumPy arrays eagerly; on JAX arrays (``jax.device_put(params)``) ``fit`` compiles
it with ``jax.jit`` (one XLA program per step) or, with ``scan=True``, the whole epoch as
one ``jax.lax.scan`` program.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from . import optim
from ._arrays import is_numpy_rng, tree_namespace
from ._checks import NonFiniteError
from ._progress import ProgressBar
from .core import Layer, Loss, _holds_update, trainable, update_state, with_trainable
from .losses import softmax_cross_entropy


def make_step(
    net: Layer, loss: Loss = softmax_cross_entropy, optimizer=None, augment=None
) -> Callable:
    """``step(params, opt_state, x, t, rng=None) -> (params, opt_state, loss)``.

    One optimizer step in train mode: forward, loss, backward, the optimizer's update of the
    trainable params, then the running state (BatchNorm) the forward computed.  ``rng``
    feeds random layers (Dropout) and ``augment`` (``funcnet.augment``), which transforms
    the batch first from a stream of its own.  The first layer's input gradient is never
    computed (``need_dx=False``): nothing uses it.  ``opt_state`` is ``optimizer.init(
    trainable(params))``; weight decay is ``optim.add_decayed_weights`` in the optimizer.
    Nothing passed in is written to: with a ``fresh`` optimizer (every built-in one) each
    new parameter on NumPy is the array the optimizer made for its update, and with SGD
    (``update_owned``) the array the backward made for its gradient.
    """
    opt = optimizer if optimizer is not None else optim.sgd(0.1)
    # The updates of a fresh optimizer are this step's own temporaries: the new params can
    # be written into them.
    apply = optim.apply_fresh_updates if opt.fresh else optim.apply_updates
    # The grads are made inside the step and read by nothing after the update: the
    # optimizer may write its updates into them (``update_owned``).
    owned_update = opt.update_owned or opt.update
    plan = _step_plan()

    def step(params, opt_state, x, t, rng=None):
        if augment is not None:
            x = augment(_augment_rng(rng), x)
        out, cache = net.forward(params, x, train=True, rng=rng)
        value, lcache = loss.forward(out, t)
        grads, _ = net.backward(cache, loss.backward(lcache), need_dx=False)
        stateful, routed, owned = plan(params, cache, grads, x, t)
        weights = trainable(params) if stateful else params
        updates, opt_state = (owned_update if owned else opt.update)(grads, opt_state, weights)
        new = apply(weights, updates)
        params = with_trainable(params, new) if stateful else new
        return (update_state(params, cache) if routed else params), opt_state, value

    return step


def _step_plan() -> Callable[..., tuple[bool, bool, bool]]:
    """``plan(params, cache, grads, x, t) -> (stateful, routed, owned)``: whether the params
    hold running state (so the optimizer must see ``trainable(params)``), whether the
    forward's cache carries a ``StateUpdate`` for ``update_state`` to place, and whether the
    grads are the step's own to write into.

    The first two are facts of the trees' structure (a ``StateUpdate`` is a node of its
    own), worked out once per structure: a NumPy step on a small net would otherwise spend
    a tenth of its time taking apart and rebuilding trees that hold no running state.  The
    third is checked on the first step of each structure: a layer's backward should return
    arrays it made, but one that hands back a parameter, the batch or one array for two
    parameters would have them scaled in place, so such a net never takes that route."""
    import jax

    known: dict = {}

    def plan(params, cache, grads, x, t) -> tuple[bool, bool, bool]:
        try:
            structure = jax.tree_util.tree_structure((params, cache))
        except (TypeError, ValueError):  # JAX cannot sort a dict's keys (1 and "a"): no memo
            structure = None
        if structure is None or structure not in known:
            stateful = jax.tree_util.tree_structure(trainable(params)) != (
                jax.tree_util.tree_structure(params)
            )
            answer = stateful, _holds_update(cache), not _aliased(grads, (params, x, t))
            if structure is None:
                return answer
            known[structure] = answer
        return known[structure]

    return plan


def _aliased(grads, held) -> bool:
    """Whether a NumPy array among ``grads`` may share memory with another one or with an
    array of ``held``."""
    import jax

    mine = [g for g in jax.tree_util.tree_leaves(grads) if isinstance(g, np.ndarray)]
    theirs = [a for a in jax.tree_util.tree_leaves(held) if isinstance(a, np.ndarray)]
    return any(
        np.may_share_memory(g, other)
        for i, g in enumerate(mine)
        for other in (*mine[i + 1 :], *theirs)
    )


_AUGMENT_STREAM = 2**31 - 1  # a child index no pipeline reaches: its own random stream


def _augment_rng(rng):
    if rng is None:
        raise ValueError("make_step: augment needs rng, a seed or a key per step")
    if isinstance(rng, np.random.Generator):
        return rng.spawn(1)[0]
    if is_numpy_rng(rng):
        return (*(rng if isinstance(rng, tuple) else (rng,)), _AUGMENT_STREAM)
    import jax

    return jax.random.fold_in(rng, _AUGMENT_STREAM)


def make_epoch(step: Callable) -> Callable:
    """``epoch(params, opt_state, xs, ts, keys=None) -> (params, opt_state, losses)`` over
    stacked batches ``xs`` (steps, B, ...) with ``jax.lax.scan``; jit it to get one program.
    ``keys`` (steps, 2), if given, are the per-step PRNG keys for random layers."""
    import jax

    def epoch(params, opt_state, xs, ts, keys=None):
        def body(carry, batch):
            p, s, value = step(*carry, *batch)
            return (p, s), value

        batches = (xs, ts) if keys is None else (xs, ts, keys)
        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), batches)
        return params, opt_state, losses

    return epoch


def step_rngs(seed: int, epoch: int, steps: int, jax_keys: bool = False):
    """Per-step randomness for random layers, derived from ``seed``: the seed paths
    ``(seed, epoch, i)`` for NumPy; with ``jax_keys`` raw uint32 JAX keys, split once on the
    host so that no device call is added per step."""
    if jax_keys:
        import jax

        key = jax.random.fold_in(jax.random.PRNGKey(seed), epoch)
        return np.asarray(jax.random.split(key, steps))
    return [(seed, epoch, i) for i in range(steps)]


def compiled(fn: Callable, donate: tuple[int, ...] = ()) -> Callable:
    """``jax.jit(fn)``; the listed arguments are donated off the CPU only (an accelerator
    updates them in place; the CPU backend often cannot reuse them and only warns)."""
    import jax

    return jax.jit(fn, donate_argnums=_donates(donate))


def _donates(donate: tuple[int, ...] = (0, 1)) -> tuple[int, ...]:
    import jax

    return () if jax.default_backend() == "cpu" else donate


def to_backend(tree, backend: str):
    """``tree``'s arrays for a command-line ``--backend``: ``"numpy"`` leaves NumPy params as
    they are, ``"jax"`` moves them to the default JAX device (``jax.device_put``), which is
    what makes ``fit`` compile the step."""
    if backend == "numpy":
        return tree
    if backend == "jax":
        import jax

        return jax.device_put(tree)
    raise ValueError(f"backend must be 'numpy' or 'jax', got {backend!r}")


def scored_params(params, opt_state):
    """The params ``fit`` scores: the moving average when the optimizer keeps one
    (``optim.with_average``), else ``params``; running state from ``params`` either way."""
    return with_trainable(params, optim.averaged(opt_state, trainable(params)))


def predict(net: Layer, params, x, batch_size: int = 1000) -> np.ndarray:
    """Class predictions (argmax of the eval-mode outputs), in batches of ``batch_size``;
    jitted when ``params`` are JAX arrays."""
    forward = _forward(net, params)
    preds = [
        np.asarray(forward(params, x[i : i + batch_size])).argmax(axis=-1)
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def probabilities(net: Layer, params, x, batch_size: int = 1000) -> np.ndarray:
    """softmax of the eval-mode outputs, (N, classes), in batches of ``batch_size``: what
    an ensemble averages."""
    from .layers.activations import softmax

    forward = _forward(net, params)
    parts = [
        softmax(np.asarray(forward(params, x[i : i + batch_size]), dtype=np.float64))
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def accuracy(net: Layer, params, x, t, batch_size: int = 1000) -> float:
    """Fraction of ``x`` classified as ``t`` (integer labels or one-hot rows)."""
    t = np.asarray(t)
    labels = t.argmax(axis=-1) if t.ndim == 2 else t
    return float(np.mean(predict(net, params, x, batch_size) == labels))


_FORWARDS: dict = {}  # a few jitted eval forwards, by net: fit scores every epoch with one


def _forward(net: Layer, params) -> Callable:
    if tree_namespace(params) is np:
        return lambda p, xb: net.forward(p, xb)[0]
    hit = _FORWARDS.get(id(net))
    if hit is None or hit[0] is not net:  # the entry holds net, so its id is not reused
        import jax

        if len(_FORWARDS) >= 8:
            _FORWARDS.pop(next(iter(_FORWARDS)))
        hit = _FORWARDS[id(net)] = (net, jax.jit(lambda p, xb: net.forward(p, xb)[0]))
    return hit[1]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during ``fit``: carries what the last finished epoch left, so nothing finished
    is lost.  ``epochs_done`` counts from the run's start (a resumed run's ``initial_epoch``
    included); when no epoch finished it is ``initial_epoch`` and ``params`` are the ones
    ``fit`` got."""

    def __init__(self, params, opt_state, history, epochs_done: int):
        super().__init__(f"fit interrupted after {epochs_done} finished epoch(s)")
        self.params, self.opt_state = params, opt_state
        self.history, self.epochs_done = history, epochs_done


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


class History(NamedTuple):
    """What ``fit`` saw: the loss of every step and, per epoch, mean loss and accuracies."""

    step_loss: list[float]
    epoch_loss: list[float]
    train_acc: list[float]
    test_acc: list[float]
    epoch_time: list[float]


def fit(
    net: Layer,
    params,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    loss: Loss = softmax_cross_entropy,
    optimizer=None,
    epochs: int = 20,
    batch_size: int = 100,
    seed: int = 0,
    scan: bool = False,
    progress: bool | None = None,
    on_epoch: Callable[[int, History], Any] | None = None,
    stop_if_diverged: bool = True,
    mesh=None,
    initial_epoch: int = 0,
    opt_state=None,
    checkpoint: Callable[[int, Any, Any], Any] | None = None,
    augment: Callable | None = None,
    train_acc_samples: int | None = None,
):
    """Train with shuffled mini-batches (a new permutation from ``seed`` each epoch) and
    evaluate train/test accuracy after every epoch.  Returns ``(params, opt_state, History)``.

    NumPy ``params`` run the step eagerly; JAX ``params`` jit it, and ``scan=True`` runs the
    whole epoch as one ``lax.scan`` program (it needs JAX params).  Batches that do not fill
    ``batch_size`` at the end of an epoch are dropped, as the book's iteration count does.
    ``progress`` draws a bar on stderr (default: when stderr is a terminal).  Random layers
    get a fresh stream each step, derived from ``seed``: ``(seed, epoch, step)`` on NumPy, a
    ``jax.random`` key on JAX.  With an optimizer wrapped in ``optim.with_average`` the
    accuracies are those of the averaged parameters; the returned ``params`` are always the
    last iterate, from which training continues.

    Every target is validated once on the host before the first step (the loss's own checks
    on all of them), and the losses once per epoch: a non-finite one raises
    ``FloatingPointError`` on every backend (``stop_if_diverged=False`` trains on, as the
    book's experiments do with a net that diverges; the NumPy loss still refuses NaN
    logits).  Ctrl-C raises ``Interrupted``, which carries the params, optimizer state and
    history of the last finished epoch.

    ``mesh`` (``scale.data_mesh(...)``) runs data parallel: every batch split along the
    mesh's ``"data"`` axis, params and optimizer state replicated on its devices, the same
    batches and random keys as on one device (``batch_size`` must divide by the device
    count); the results are the 1-device ones up to float32 summation order.  With several
    processes each one calls ``fit`` with the same arguments and places only its own rows of
    every batch.  ``initial_epoch`` with ``opt_state`` resumes a run: epochs
    ``initial_epoch + 1 .. epochs`` run on the batches and keys they had in the whole run,
    and the history holds those epochs.  ``checkpoint(epoch, params, opt_state)`` is called
    after every finished epoch with what a resume needs.  ``augment`` (e.g.
    ``augment.random_shift(2)``) transforms every training batch inside the step, from a
    random stream of its own (``make_step``); the scoring sees the data as it is.
    ``train_acc_samples`` scores the train accuracy on the first that many training images
    only (the book's chapter-8 trainer scores 1,000: for the deep net, scoring all 60,000
    after every epoch takes most of as long as the epoch's training on a CPU).
    """
    x_train, t_train = train
    if train_acc_samples is not None and (
        isinstance(train_acc_samples, bool)
        or not isinstance(train_acc_samples, int)
        or not 1 <= train_acc_samples <= len(x_train)
    ):
        raise ValueError(
            f"fit: train_acc_samples must be None or an int in [1, {len(x_train)}], got "
            f"{train_acc_samples!r}"
        )
    scored_train = slice(None) if train_acc_samples is None else slice(train_acc_samples)
    if len(x_train) != len(t_train):
        raise ValueError(f"fit: {len(x_train)} training inputs but {len(t_train)} targets")
    if not 1 <= batch_size <= len(x_train):
        raise ValueError(f"fit: batch_size must be in [1, {len(x_train)}], got {batch_size}")
    if not 0 <= initial_epoch < epochs:
        raise ValueError(
            f"fit: initial_epoch must be in [0, {epochs - 1}] for epochs={epochs}, got "
            f"{initial_epoch}"
        )
    if mesh is not None:
        from . import scale

        scale.check_mesh(mesh, batch_size)
        params = scale.local_copy(params)  # the checks below run on one device
    on_jax = mesh is not None or tree_namespace(params) is not np
    if scan and not on_jax:
        raise ValueError(
            "fit: scan=True compiles the epoch with JAX and needs JAX params; pass "
            "jax.device_put(params)"
        )
    _check_targets(net, params, loss, x_train, t_train, "training")
    if test is not None:
        _check_targets(net, params, loss, *test, "test")
    opt = optimizer if optimizer is not None else optim.sgd(0.1)
    step = make_step(net, loss, opt, augment)
    if opt_state is None:
        opt_state = opt.init(trainable(params))
    if mesh is not None:
        # Replicated params and state, batches split: jit propagates the shardings and XLA
        # all-reduces every sum over the batch (see funcnet.scale).
        params, opt_state = scale.replicate((params, opt_state), mesh)
        rows = scale.local_rows(mesh, batch_size)  # this process's rows of every batch
        if scan:
            scan_epoch = scale.jit_replicated(make_epoch(step), mesh, _donates())
        else:
            step = scale.jit_replicated(step, mesh, _donates())
    elif scan:
        import jax

        epoch_of = make_epoch(step)

        def gathered(params, opt_state, x, t, idx, keys):
            # The epoch's batches are taken in the same program: op by op, the indexing
            # would compile programs of its own.
            return epoch_of(params, opt_state, x[idx], t[idx], keys)

        scan_epoch = compiled(gathered, donate=(0, 1))
        x_dev, t_dev = jax.device_put((x_train, t_train))  # once; jnp.asarray would compile
    elif on_jax:
        step = compiled(step, donate=(0, 1))
    bar = ProgressBar(sys.stderr, enabled=progress)
    rng = np.random.default_rng(seed)
    for _ in range(initial_epoch):  # a resumed run: the finished epochs drew theirs first
        rng.permutation(len(x_train))
    steps = len(x_train) // batch_size
    hist = History([], [], [], [], [])

    def batch(a, idx, axis=0):  # the rows idx of a, as the step takes them
        if mesh is None:
            return a[idx]
        local = a[idx[rows]] if axis == 0 else a[idx[:, rows]]
        return scale.place(local, mesh, batch_size, axis)

    def one_epoch(epoch, params, opt_state):
        start = time.perf_counter()
        perm = rng.permutation(len(x_train))[: steps * batch_size]
        rngs = step_rngs(seed, epoch, steps, jax_keys=on_jax)
        if scan and mesh is not None:
            idx = perm.reshape(steps, batch_size)
            params, opt_state, losses = scan_epoch(
                params, opt_state, batch(x_train, idx, 1), batch(t_train, idx, 1), rngs
            )
        elif scan:
            params, opt_state, losses = scan_epoch(
                params, opt_state, x_dev, t_dev, perm.reshape(steps, batch_size), rngs
            )
        else:
            losses = []
            for i in range(steps):
                idx = perm[i * batch_size : (i + 1) * batch_size]
                try:
                    params, opt_state, value = step(
                        params, opt_state, batch(x_train, idx), batch(t_train, idx), rng=rngs[i]
                    )
                except NonFiniteError as e:  # NumPy sees it mid-epoch, in the loss
                    raise FloatingPointError(
                        f"fit: step {i + 1} of epoch {epoch}: {e}; the learning rate is "
                        "probably too large"
                    ) from None
                losses.append(value)
                if bar.enabled and (i + 1) % max(1, steps // 50) == 0:
                    bar.show(f"epoch {epoch:>3}/{epochs}", i + 1, steps, f"loss {float(value):.4f}")
        # One conversion at the end: a float() per step would make JAX wait for every step.
        losses = np.asarray(losses, dtype=np.float64)
        if stop_if_diverged:
            _check_finite(losses, epoch)
        hist.epoch_time.append(time.perf_counter() - start)
        hist.step_loss.extend(losses.tolist())
        hist.epoch_loss.append(float(np.mean(losses)))
        if mesh is None:
            scored = scored_params(params, opt_state)
        else:  # each process scores a copy on its first device: no collective, same numbers
            scored = scored_params(*scale.local_copy((params, opt_state)))
        hist.train_acc.append(accuracy(net, scored, x_train[scored_train], t_train[scored_train]))
        if test is not None:
            hist.test_acc.append(accuracy(net, scored, *test))
        bar.clear()
        return params, opt_state

    def keep(tree):
        # What the last finished epoch left.  Pure steps never change it, but a donating
        # (accelerator) step reuses its buffers: then it is copied.
        if not on_jax or _donates() == ():
            return tree
        import jax

        return jax.tree_util.tree_map(lambda a: a.copy(), tree)

    done, finished = keep((params, opt_state)), initial_epoch
    try:
        for epoch in range(initial_epoch + 1, epochs + 1):
            params, opt_state = one_epoch(epoch, params, opt_state)
            done, finished = keep((params, opt_state)), epoch
            if checkpoint is not None:
                checkpoint(epoch, params, opt_state)
            if on_epoch is not None:
                on_epoch(epoch, hist)
    except KeyboardInterrupt:
        bar.clear()
        kept = finished - initial_epoch  # the history holds this run's epochs only
        del hist.step_loss[kept * steps :], hist.epoch_time[kept:]
        del hist.epoch_loss[kept:]
        del hist.train_acc[kept:], hist.test_acc[kept:]
        raise Interrupted(*done, hist, finished) from None
    return params, opt_state, hist


__all__ = [
    "History",
    "Interrupted",
    "accuracy",
    "compiled",
    "fit",
    "make_epoch",
    "make_step",
    "predict",
    "probabilities",
    "scored_params",
    "step_rngs",
    "to_backend",
]
