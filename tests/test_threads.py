"""BLAS threads fitted to the work and to the machine's load (funcnet._threads)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

import funcnet as fn
from funcnet import _threads

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


@pytest.mark.parametrize(
    ("flops", "cores", "others", "threads"),
    [
        (2 * 100 * 784 * 100, 2, 0.0, 2),  # MNIST's products on a quiet 2-core machine
        (2 * 100 * 784 * 100, 2, 0.9, 1),  # ... with a core kept busy: one thread
        (2 * 100 * 784 * 100, 16, 0.0, 5),  # ... at most one thread per GRAIN flops
        (4e6, 2, 0.0, 1),  # too small to split
        (1e10, 4, 0.0, 4),  # a large product on a quiet machine: every core
        (1e10, 4, 0.1, 4),  # a daemon's ticks are no load
        (1e10, 2, 1.0, 1),  # one of two cores kept busy: one thread
        (1e10, 8, 2.6, 5),
        (1e10, 2, 7.0, 1),  # far more load than cores: still one
    ],
)
def test_threads_for_the_work_and_the_load(flops, cores, others, threads):
    assert _threads.threads_for(flops, cores, others) == threads


def test_step_flops_of_dense_and_conv_nets():
    net = fn.pipeline(fn.Dense(100), fn.Relu(), fn.Dense(10))
    _, params = net.init(0, (-1, 784))
    assert _threads.step_flops(params, np.zeros((5, 784)), 100) == 2 * 100 * 784 * 100
    assert _threads.dense_flops(100, [784, 100, 10]) == 2 * 100 * 784 * 100
    conv = fn.pipeline(fn.Conv(4, 3, padding=1), fn.Relu())
    _, cparams = conv.init(0, (-1, 1, 28, 28))
    assert _threads.step_flops(cparams, np.zeros((5, 1, 28, 28)), 10) == 2 * 10 * 36 * 784


@pytest.mark.skipif(not blas_threads(), reason="NumPy's BLAS is not one threadpoolctl knows")
def test_blas_threads_are_set_inside_and_restored_after():
    before = blas_threads()
    with _threads.BlasThreads(1e6) as fit:  # small: one thread
        assert fit.threads == 1 and blas_threads() == [1] * len(before)
    assert blas_threads() == before


@pytest.mark.skipif(not blas_threads(), reason="NumPy's BLAS is not one threadpoolctl knows")
def test_a_core_kept_busy_by_another_process_takes_its_thread_away():
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        with _threads.BlasThreads(1e12, cores=2) as fit:
            time.sleep(0.3)
            assert fit.refit() == 1 and blas_threads()[0] == 1
    finally:
        spin.kill()
        spin.wait()
