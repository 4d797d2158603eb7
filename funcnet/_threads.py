"""BLAS threads fitted to the work and to the machine as it is, through ``threadpoolctl``.

OpenBLAS starts one thread per core and splits every product over them, however small;
its threads spin, then wait, for each other at the end of each product.  When another
process keeps a core busy, the thread on that core runs late and the others wait for it,
product after product: a NumPy MNIST epoch (784x100 products of batch 100) took up to 70x
its quiet time.  So a product gets one thread per core that the other processes leave
free, measured from ``/proc/stat`` (all CPUs' busy time less this process's own) over the
last stretch of work and again at each :meth:`BlasThreads.refit` (e.g. once per epoch),
and at most one thread per :data:`GRAIN` flops of it, below which a thread costs more than
its share of the work saves.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time

import numpy as np

# The flops a BLAS thread needs of a product to pay for itself: with OpenBLAS on a 2-core
# VM a 4-Mflop product ran slower on two threads than on one, a 7.8-Mflop one faster
# (benchmarks/NOTES.md, `blas_threads.py`).
GRAIN = 3e6
# Cores of other processes' load below which a core counts as free (timer ticks, daemons).
NOISE = 0.25


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _cpu_busy() -> float | None:
    """All CPUs' busy seconds since boot (``/proc/stat``), or None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


class _Sample:
    """The other processes' load (in cores) over the time between two calls."""

    def __init__(self):
        self.at, self.busy, self.own = time.monotonic(), _cpu_busy(), _own_cpu()

    def others_since(self, earlier: _Sample) -> float:
        wall = self.at - earlier.at
        if self.busy is None or earlier.busy is None or wall <= 0:
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
            return max(0.0, load - 1.0)  # the 1-minute average, less this process
        others = (self.busy - earlier.busy) - (self.own - earlier.own)
        return max(0.0, others / wall)


def threads_for(flops: float, cores: int, others: float) -> int:
    """BLAS threads for products of ``flops`` on ``cores`` cores of which ``others`` (in
    cores) are taken by other processes: the cores left free (rounded down), at most one
    per :data:`GRAIN` flops, at least one."""
    free = cores - (others if others > NOISE else 0.0)
    by_load = min(cores, math.floor(free + 0.5 - NOISE))
    return max(1, min(by_load, int(flops // GRAIN)))


class BlasThreads:
    """``with BlasThreads(flops) as fit:`` limits NumPy's BLAS threads for products of about
    ``flops`` flops to :func:`threads_for` the machine's present load; ``fit.refit()``
    measures the load again over the work done since (call it between epochs).  The BLAS
    thread count is restored at the end.  Without threadpoolctl it does nothing."""

    def __init__(self, flops: float, *, cores: int | None = None):
        self.flops, self.cores = float(flops), cores or usable_cores()
        self.threads: int | None = None
        self._limiter = self._controller = None

    def __enter__(self) -> BlasThreads:
        with contextlib.suppress(ImportError):
            from threadpoolctl import ThreadpoolController

            self._controller = ThreadpoolController()
        start = _Sample()
        if threads_for(self.flops, self.cores, 0.0) > 1:
            time.sleep(0.05)  # a first look at the load; one-thread products need none
        self._last = start
        self.refit()
        return self

    def refit(self) -> int | None:
        """Measure the other processes' load since the last call and set the threads."""
        now = _Sample()
        threads = threads_for(self.flops, self.cores, now.others_since(self._last))
        self._last = now
        if self._controller is not None and threads != self.threads:
            limiter = self._controller.limit(limits=threads, user_api="blas")
            self._limiter = self._limiter or limiter  # the first one knows the original
        self.threads = threads
        return threads

    def __exit__(self, *exc) -> None:
        if self._limiter is not None:
            self._limiter.restore_original_limits()


def dense_flops(batch: int, widths) -> float:
    """Flops of the largest product of a dense net's step: 2·batch·n_in·n_out."""
    widths = list(widths)
    return max((2.0 * batch * a * b for a, b in itertools.pairwise(widths)), default=0)


def step_flops(params, x, batch: int) -> float:
    """About the flops of the largest product in a step of the net with ``params`` on
    batches of ``batch`` rows of ``x``: 2·batch·n_in·n_out for a dense weight, and for a
    convolution's (FN, C, FH, FW) weight that times the input's pixels (an upper bound)."""
    import jax

    pixels = int(np.prod(np.shape(x)[2:])) if np.ndim(x) > 2 else 1
    flops = 0.0
    for leaf in jax.tree_util.tree_leaves(params):
        shape = np.shape(leaf)
        if len(shape) in (2, 4):
            flops = max(
                flops, 2.0 * batch * float(np.prod(shape)) * (pixels if len(shape) == 4 else 1)
            )
    return flops


def fitted_blas(params, x, batch: int) -> BlasThreads:
    """A :class:`BlasThreads` for training ``params`` on ``x`` in batches of ``batch``,
    already entered: for a command whose process ends with the run (``refit()`` it once an
    epoch).  A library caller uses ``with BlasThreads(...)``, which restores the count."""
    return BlasThreads(step_flops(params, x, batch)).__enter__()


__all__ = [
    "GRAIN",
    "BlasThreads",
    "dense_flops",
    "fitted_blas",
    "step_flops",
    "threads_for",
    "usable_cores",
]
