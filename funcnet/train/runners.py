"""How ``fit`` runs the step: five execution modes behind one ``Runner`` interface.

=========  ==========================================================================
NumPy      the step eagerly, batch by batch (NumPy params)
jit        the step compiled with ``jax.jit``, one call per batch (JAX params)
scan       the whole epoch as one ``jax.lax.scan`` program, batches gathered on the device
mesh-jit   the jitted step data parallel over a ``parallel.data_mesh``: batches split, params
           and optimizer state replicated
mesh-scan  the scanned epoch, data parallel the same way
=========  ==========================================================================

A mesh run keeps at most :data:`IN_FLIGHT` steps queued ahead of the finished ones.

Every mode draws the same batches (a new permutation of the training set from ``seed``
each epoch) and the same per-step randomness (``step.step_rngs``), so the modes differ in
where and how the arithmetic runs, not in what it computes.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from .._checks import NonFiniteError
from .step import make_epoch, step_rngs

# Steps a mesh-jit epoch lets XLA queue ahead of the last finished one (see docs/scale.md,
# "host devices").  XLA's CPU client launches each device's part of a step from the thread
# pool that also runs the devices' programs, as many threads as devices where there are
# fewer cores; a launch that finds 32 programs of its device in flight waits for one of them
# in that pool thread.  Then the step being computed lacks the thread that one of its
# devices needs to join the step's collective, and XLA aborts after its rendezvous timeout.
# Below 32 in flight no launch waits: waiting here, for step i - IN_FLIGHT before step i is
# launched, keeps the queue shorter than that while still overlapping launch and compute.
IN_FLIGHT = 4


class Order:
    """The batches of successive epochs: epoch k's is a new permutation of ``n`` rows from
    ``np.random.default_rng(seed)``, its first ``steps * batch_size`` rows as (steps,
    batch_size) indices.  Starting at epoch ``start`` draws the earlier epochs' first, so a
    resumed run sees the batches the whole run would have."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0):
        self.rng, self.n, self.batch_size = np.random.default_rng(seed), n, batch_size
        self.steps = n // batch_size
        for _ in range(start):
            self.rng.permutation(n)

    def next(self) -> np.ndarray:
        perm = self.rng.permutation(self.n)[: self.steps * self.batch_size]
        return perm.reshape(self.steps, self.batch_size)


class Runner:
    """One execution mode.  ``fit`` uses only this interface:

    - ``mode``: its name in the module's table (``"numpy"``, ``"jit"``, ``"scan"``,
      ``"mesh-jit"``, ``"mesh-scan"``);
    - ``steps``: optimizer steps per epoch;
    - ``start(params, opt_state) -> (params, opt_state)``: placed where the steps run;
    - ``epoch(params, opt_state, epoch, on_step=None) -> (params, opt_state, losses)``:
      one epoch (numbered from 1) on its batches; ``on_step(i, loss)`` after step i when
      the mode runs steps one by one;
    - ``local(tree)``: a copy this process can read without a collective (what is scored);
    - ``snapshot(tree)``: a copy that outlives the next epoch (the steps may reuse their
      inputs' buffers).
    """

    def __init__(
        self,
        mode: str,
        run: Callable,
        order: Order,
        seed: int,
        *,
        jax_keys: bool,
        place: Callable = lambda tree: tree,
        local: Callable = lambda tree: tree,
        donates: bool = False,
    ):
        # run(params, opt_state, idx, rngs, epoch, on_step) -> (params, opt_state, losses), idx
        # the epoch's (steps, batch_size) indices and rngs its per-step randomness
        self.mode, self._run, self.order, self.seed = mode, run, order, seed
        self.jax_keys = jax_keys
        self._place, self._local, self.donates = place, local, donates

    @property
    def steps(self) -> int:
        return self.order.steps

    def start(self, params, opt_state):
        return self._place((params, opt_state))

    def epoch(self, params, opt_state, epoch: int, on_step: Callable | None = None):
        idx = self.order.next()
        rngs = step_rngs(self.seed, epoch, self.steps, jax_keys=self.jax_keys)
        return self._run(params, opt_state, idx, rngs, epoch, on_step)

    def local(self, tree):
        return self._local(tree)

    def snapshot(self, tree):
        if not self.donates:
            return tree
        import jax

        return jax.tree_util.tree_map(lambda a: a.copy(), tree)


def make_runner(
    step: Callable,
    train: tuple[Any, Any],
    batch_size: int,
    seed: int,
    *,
    on_jax: bool,
    scan: bool = False,
    mesh=None,
    start: int = 0,
) -> Runner:
    """The runner for ``step`` over the training set ``train`` = (x, t): by the params'
    arrays (``on_jax``), ``scan`` and ``mesh`` (see the module's table).  ``start`` is the
    number of epochs already done (a resumed run)."""
    order = Order(len(train[0]), batch_size, seed, start)
    if mesh is not None:
        return (_mesh_scan if scan else _mesh_steps)(step, train, order, seed, mesh)
    if scan:
        return _scan(step, train, order, seed)
    if on_jax:
        run = _steps(compiled(step, donate=(0, 1)), train, operator.getitem)
        return Runner("jit", run, order, seed, jax_keys=True, donates=bool(_donates()))
    return Runner("numpy", _steps(step, train, operator.getitem), order, seed, jax_keys=False)


def _steps(step: Callable, train, take: Callable, in_flight: int = 0) -> Callable:
    """An epoch as one step call per batch; ``take(a, idx)`` is the batch the step gets.
    With ``in_flight`` > 0 (JAX steps), step i is called once step i - ``in_flight`` has
    finished: at most that many steps are queued at any time."""
    x, t = train

    def run(params, opt_state, idx, rngs, epoch, on_step):
        losses = []
        for i, rows in enumerate(idx):
            if in_flight and i >= in_flight:
                losses[i - in_flight].block_until_ready()
            try:
                params, opt_state, value = step(
                    params, opt_state, take(x, rows), take(t, rows), rng=rngs[i]
                )
            except NonFiniteError as e:  # NumPy sees it mid-epoch, in the loss
                raise FloatingPointError(
                    f"fit: step {i + 1} of epoch {epoch}: {e}; the learning rate is "
                    "probably too large"
                ) from None
            losses.append(value)
            if on_step is not None:
                on_step(i + 1, value)
        return params, opt_state, losses

    return run


def _scan(step: Callable, train, order: Order, seed: int) -> Runner:
    import jax

    epoch_of = make_epoch(step)

    def gathered(params, opt_state, x, t, idx, keys):
        # The epoch's batches are taken in the same program: op by op, the indexing would
        # compile programs of its own.
        return epoch_of(params, opt_state, x[idx], t[idx], keys)

    scan_epoch = compiled(gathered, donate=(0, 1))
    x_dev, t_dev = jax.device_put(train)  # once; jnp.asarray would compile

    def run(params, opt_state, idx, rngs, epoch, on_step):
        return scan_epoch(params, opt_state, x_dev, t_dev, idx, rngs)

    return Runner("scan", run, order, seed, jax_keys=True, donates=bool(_donates()))


def _mesh_steps(step: Callable, train, order: Order, seed: int, mesh) -> Runner:
    """Replicated params and state, batches split: jit propagates the shardings and XLA
    all-reduces every sum over the batch (see ``funcnet.parallel``).  With several processes
    each one places only its own rows of every batch."""
    from .. import parallel

    rows = parallel.local_rows(mesh, order.batch_size)

    def take(a, idx):
        return parallel.place(a[idx[rows]], mesh, order.batch_size)

    run = _steps(parallel.jit_replicated(step, mesh, _donates()), train, take, IN_FLIGHT)
    return _on_mesh("mesh-jit", run, order, seed, mesh)


def _mesh_scan(step: Callable, train, order: Order, seed: int, mesh) -> Runner:
    from .. import parallel

    rows, (x, t) = parallel.local_rows(mesh, order.batch_size), train
    scan_epoch = parallel.jit_replicated(make_epoch(step), mesh, _donates())

    def run(params, opt_state, idx, rngs, epoch, on_step):
        xs, ts = (parallel.place(a[idx[:, rows]], mesh, order.batch_size, 1) for a in (x, t))
        return scan_epoch(params, opt_state, xs, ts, rngs)

    return _on_mesh("mesh-scan", run, order, seed, mesh)


def _on_mesh(mode: str, run: Callable, order: Order, seed: int, mesh) -> Runner:
    from .. import parallel

    return Runner(
        mode,
        run,
        order,
        seed,
        jax_keys=True,
        place=lambda tree: parallel.replicate(tree, mesh),
        # each process scores a copy on its first device: no collective, same numbers
        local=parallel.local_copy,
        donates=bool(_donates()),
    )


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


__all__ = ["IN_FLIGHT", "Order", "Runner", "compiled", "make_runner", "to_backend"]
