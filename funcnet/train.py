"""Training: a pure step, a ``fit`` loop with visible progress, and ``.npz`` checkpoints.

The step is one function of arrays,

    params, opt_state, loss = step(params, opt_state, x, t)

built from a layer's forward/backward, a loss and an optimizer.  The same function runs
eagerly on NumPy arrays and, unchanged, under ``jax.jit`` on JAX arrays (one XLA program
per step) or inside ``jax.lax.scan`` (one XLA program per epoch).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from . import optim
from .core import Layer, update_state
from .losses import Loss, l2_penalty, softmax_cross_entropy


def make_step(
    net: Layer, loss: Loss = softmax_cross_entropy, optimizer=None, weight_decay: float = 0.0
) -> Callable:
    """``step(params, opt_state, x, t, rng=None) -> (params, opt_state, loss)``.

    One optimizer step in train mode: forward, loss (plus ``weight_decay``/2 · Σ‖W‖²),
    backward, update, then the running state (BatchNorm) the forward computed.  ``rng``
    feeds random layers (Dropout).  The first layer's input gradient is never computed
    (``need_dx=False``): nothing uses it.
    """
    opt = optimizer if optimizer is not None else optim.sgd(0.1)

    def step(params, opt_state, x, t, rng=None):
        out, cache = net.forward(params, x, train=True, rng=rng)
        value, lcache = loss.forward(out, t)
        grads, _ = net.backward(cache, loss.backward(lcache), need_dx=False)
        if weight_decay:
            penalty, pcache = l2_penalty.forward(params, weight_decay)
            value = value + penalty
            grads = jax.tree_util.tree_map(lambda g, d: g + d, grads, l2_penalty.backward(pcache))
        updates, opt_state = opt.update(grads, opt_state, params)
        return update_state(optim.apply_updates(params, updates), cache), opt_state, value

    return step


def make_epoch(step: Callable) -> Callable:
    """``epoch(params, opt_state, xs, ts, keys=None) -> (params, opt_state, losses)`` over
    stacked batches ``xs`` (steps, B, ...) with ``jax.lax.scan``; jit it to get one program.
    ``keys`` (steps, 2), if given, are the per-step PRNG keys for random layers."""

    def epoch(params, opt_state, xs, ts, keys=None):
        def body(carry, batch):
            p, s, value = step(*carry, *batch)
            return (p, s), value

        batches = (xs, ts) if keys is None else (xs, ts, keys)
        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), batches)
        return params, opt_state, losses

    return epoch


def sample_batches(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """(steps, batch_size) indices into a training set of ``n``, drawn with replacement like
    the book's ``np.random.choice(train_size, batch_size)`` each iteration."""
    return np.random.default_rng(seed).integers(0, n, size=(steps, batch_size))


def step_rngs(backend: str, seed: int, epoch: int, steps: int):
    """Per-step randomness for random layers, derived from ``seed``: the seed paths
    ``(seed, epoch, i)`` on NumPy; on JAX raw uint32 keys, split once on the host so that no
    device call is added per step."""
    if backend == "jax":
        return np.asarray(
            jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), epoch), steps)
        )
    return [(seed, epoch, i) for i in range(steps)]


def run_steps(
    step: Callable, params, opt_state, x, t, batches, backend: str = "numpy", seed: int = 0
):
    """Apply ``step`` to the batches ``x[b], t[b]`` for each row ``b`` of ``batches``;
    ``backend="jax"`` jits it.  Returns ``(params, opt_state, losses)`` (float64 array)."""
    if backend == "jax":
        import jax.numpy as jnp

        step = jax.jit(step)
        params = jax.tree_util.tree_map(jnp.asarray, params)
        opt_state = jax.tree_util.tree_map(jnp.asarray, opt_state)
    losses = []
    rngs = step_rngs(backend, seed, 0, len(batches))
    for b, r in zip(batches, rngs, strict=True):
        params, opt_state, value = step(params, opt_state, x[b], t[b], rng=r)
        losses.append(value)
    # One conversion at the end: a float() per step would make JAX wait for every step.
    return params, opt_state, np.asarray(losses, dtype=np.float64)


def compare(
    variants: dict[str, tuple[Layer, Any, Any]],
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    batches: np.ndarray,
    *,
    backend: str = "numpy",
    every: int = 20,
) -> dict:
    """Train every variant ``name: (net, params, optimizer)`` on the same ``batches`` (rows
    of indices into ``train``, e.g. from ``sample_batches``) and score it on ``test``: the
    book's chapter-6 comparisons, where the runs differ in one thing only.

    Returns ``{"losses": {name: per-step losses}, "smoothed": {name: (x, means of blocks of
    ``every`` steps)}, "final": {name: mean loss of the last block}, "test_acc": {name:
    accuracy}, "seconds": {name: training time}, "every": the block size used}``.
    """
    if backend not in ("numpy", "jax"):
        raise ValueError(f"compare: backend must be 'numpy' or 'jax', got {backend!r}")
    from .plot import block_means

    (x, t), (x_test, t_test) = train, test
    out: dict = {"losses": {}, "smoothed": {}, "final": {}, "test_acc": {}, "seconds": {}}
    forwards: dict = {}  # one jitted forward per distinct net
    for name, (net, params, opt) in variants.items():
        start = time.perf_counter()
        step = make_step(net, optimizer=opt)
        params, _, losses = run_steps(step, params, opt.init(params), x, t, batches, backend)
        out["seconds"][name] = time.perf_counter() - start
        out["losses"][name] = losses
        out["smoothed"][name] = block_means(losses, every)
        out["final"][name] = float(out["smoothed"][name][1][-1])
        if backend == "jax" and id(net) not in forwards:
            forwards[id(net)] = jax.jit(lambda p, xb, net=net: net.forward(p, xb)[0])
        forward = forwards.get(id(net))
        out["test_acc"][name] = accuracy(net, params, x_test, t_test, forward=forward)
    out["every"] = max(1, min(every, len(batches)))
    return out


def predict(net: Layer, params, x, batch_size: int = 1000, forward=None) -> np.ndarray:
    """Class predictions (argmax of the outputs), computed in batches of ``batch_size``."""
    forward = forward or (lambda p, xb: net.forward(p, xb)[0])
    preds = [
        np.asarray(forward(params, x[i : i + batch_size])).argmax(axis=-1)
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def accuracy(net: Layer, params, x, t, batch_size: int = 1000, forward=None) -> float:
    """Fraction of ``x`` classified as ``t`` (integer labels or one-hot rows)."""
    t = np.asarray(t)
    labels = t.argmax(axis=-1) if t.ndim == 2 else t
    return float(np.mean(predict(net, params, x, batch_size, forward) == labels))


class History(NamedTuple):
    """What ``fit`` saw: the loss of every step and, per epoch, mean loss and accuracies."""

    step_loss: list[float]
    epoch_loss: list[float]
    train_acc: list[float]
    test_acc: list[float]
    epoch_time: list[float]


def _progress(epoch: int, epochs: int, done: int, total: int, loss: float, stream) -> None:
    width = 30
    filled = width * done // total
    stream.write(
        f"\repoch {epoch:>3}/{epochs} [{'#' * filled}{'.' * (width - filled)}] "
        f"{done}/{total} loss {loss:.4f}"
    )
    stream.flush()


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
    backend: str = "numpy",
    scan: bool = False,
    weight_decay: float = 0.0,
    progress: bool | None = None,
    on_epoch: Callable[[int, History], Any] | None = None,
):
    """Train with shuffled mini-batches (a new permutation from ``seed`` each epoch) and
    evaluate train/test accuracy after every epoch.  Returns ``(params, opt_state, History)``.

    ``backend="numpy"`` runs the step eagerly on NumPy arrays; ``"jax"`` jits the same step
    (``scan=True``: the whole epoch as one ``lax.scan`` program).  Batches that do not fill
    ``batch_size`` at the end of an epoch are dropped, as the book's iteration count does.
    ``progress`` draws a bar on stderr (default: when stderr is a terminal).  Random layers
    get a fresh stream each step, derived from ``seed``: ``(seed, epoch, step)`` on NumPy, a
    ``jax.random`` key on JAX.  ``weight_decay`` adds λ/2·Σ‖W‖² to the loss.  With an
    optimizer wrapped in ``optim.with_average`` the accuracies are those of the averaged
    parameters, ``optim.averaged(opt_state)``; the returned ``params`` are always the last
    iterate, from which training continues.
    """
    x_train, t_train = train
    if len(x_train) != len(t_train):
        raise ValueError(f"fit: {len(x_train)} training inputs but {len(t_train)} targets")
    if not 1 <= batch_size <= len(x_train):
        raise ValueError(f"fit: batch_size must be in [1, {len(x_train)}], got {batch_size}")
    if backend not in ("numpy", "jax"):
        raise ValueError(f"fit: backend must be 'numpy' or 'jax', got {backend!r}")
    opt = optimizer if optimizer is not None else optim.sgd(0.1)
    step = pure_step = make_step(net, loss, opt, weight_decay)
    forward = None
    if backend == "jax":
        import jax.numpy as jnp

        params = jax.tree_util.tree_map(jnp.asarray, params)
        # Donating params and state lets an accelerator update them in place; the CPU backend
        # often cannot reuse them and only warns.
        donate = () if jax.default_backend() == "cpu" else (0, 1)
        step = jax.jit(step, donate_argnums=donate)
        forward = jax.jit(lambda p, xb: net.forward(p, xb)[0])
        if scan:
            run_epoch = jax.jit(make_epoch(pure_step), donate_argnums=donate)
            x_dev, t_dev = jnp.asarray(x_train), jnp.asarray(t_train)
    opt_state = opt.init(params)
    stream = sys.stderr
    show = stream.isatty() if progress is None else progress
    rng = np.random.default_rng(seed)
    steps = len(x_train) // batch_size
    hist = History([], [], [], [], [])
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        perm = rng.permutation(len(x_train))[: steps * batch_size]
        rngs = step_rngs(backend, seed, epoch, steps)
        if backend == "jax" and scan:
            idx = jnp.asarray(perm.reshape(steps, batch_size))
            params, opt_state, losses = run_epoch(
                params, opt_state, x_dev[idx], t_dev[idx], jnp.asarray(rngs)
            )
            losses = np.asarray(losses).tolist()
        else:
            losses = []
            for i in range(steps):
                idx = perm[i * batch_size : (i + 1) * batch_size]
                params, opt_state, value = step(
                    params, opt_state, x_train[idx], t_train[idx], rng=rngs[i]
                )
                losses.append(value)
                if show and (i + 1) % max(1, steps // 50) == 0:
                    _progress(epoch, epochs, i + 1, steps, float(value), stream)
            # One conversion at the end: a float() per step would sync JAX every step.
            losses = np.asarray(losses, dtype=np.float64).tolist()
        elapsed = time.perf_counter() - start
        hist.step_loss.extend(losses)
        hist.epoch_loss.append(float(np.mean(losses)))
        hist.epoch_time.append(elapsed)
        scored = optim.averaged(opt_state, params)
        hist.train_acc.append(accuracy(net, scored, x_train, t_train, forward=forward))
        if test is not None:
            hist.test_acc.append(accuracy(net, scored, *test, forward=forward))
        if show:
            stream.write("\r" + " " * 79 + "\r")
            stream.flush()
        if on_epoch is not None:
            on_epoch(epoch, hist)
    return params, opt_state, hist


# --------------------------------------------------------------------------- checkpoints


def _flat(params) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(path) or "root": np.asarray(leaf) for path, leaf in leaves}


def save_params(path, params) -> None:
    """Write ``params`` to ``path`` (``.npz``), atomically: a temp file, then a rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".funcnet-", suffix=".npz.part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **_flat(params))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_params(path, like):
    """Read params saved by :func:`save_params` into the structure of ``like`` (e.g. fresh
    params from ``net.init``); every leaf must match in name, shape and dtype."""
    path = os.fspath(path)
    want = _flat(like)
    with np.load(path, allow_pickle=False) as f:
        got = {k: f[k] for k in f.files}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise ValueError(
            f"load_params: {path} does not match the network: missing {missing or 'none'}, "
            f"unexpected {extra or 'none'}"
        )
    for k, ref in want.items():
        if got[k].shape != ref.shape or got[k].dtype != ref.dtype:
            raise ValueError(
                f"load_params: {path}: {k} is {got[k].dtype}{list(got[k].shape)}, the network "
                f"expects {ref.dtype}{list(ref.shape)}"
            )
    return jax.tree_util.tree_structure(like).unflatten([got[k] for k in want])
