"""The NumPy MNIST epoch with another process keeping a core busy: BLAS threads as OpenBLAS
starts them, against ``funcnet._threads.BlasThreads`` (threadpoolctl) fitting them.

    .venv/bin/python benchmarks/blas_threads.py [--repeats 5] [--steps 600] [--data-dir DIR]

The two-layer net 784-100-10 (``train.make_step`` eagerly on NumPy, SGD lr 0.1, batch 100),
``--steps`` steps over a fixed permutation per timed run, every run from the same weights.
Rows: ``default``, OpenBLAS's own thread count (one per usable core); ``fitted``, inside
``BlasThreads(dense_flops(100, [784, 100, 10]))``; ``one``, one BLAS thread.  Each row is
timed quiet and then with a child process spinning (``while True: pass``), the runs of a
condition round-robin.  Columns: median s and min-max per condition; ``busy/quiet``, the
row's busy median over its quiet one (target for ``fitted``: <= 1.5); ``vs default``, the
row's quiet median over ``default``'s (target for ``fitted``: quiet time kept, <= 1.1);
``bg cores``, the other processes' load during the condition's runs (the spinner's included).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _harness, also under -m
import _harness as H
from threadpoolctl import threadpool_info, threadpool_limits

import funcnet as fn  # the checkout's: _harness put the repository root first on sys.path
from funcnet import optim, train
from funcnet._threads import BlasThreads, dense_flops

ROWS = ("default", "fitted", "one")
TARGET_BUSY, TARGET_QUIET = 1.5, 1.1


def make_epoch(x, t, idx, steps):
    net = fn.pipeline(fn.Dense(100), fn.Relu(), fn.Dense(10))
    _, params0 = net.init(0, (-1, 784))
    opt = optim.sgd(0.1)
    step = train.make_step(net, fn.softmax_cross_entropy, opt)

    def epoch():
        params = params0  # pure steps: params0 is never changed
        state = opt.init(fn.trainable(params))
        for b in idx[:steps]:
            params, state, _ = step(params, state, x[b], t[b])
        return params

    return epoch


def timed(row: str, epoch) -> float:
    if row == "one":
        ctx = threadpool_limits(1, user_api="blas")
    elif row == "fitted":
        ctx = BlasThreads(dense_flops(100, [784, 100, 10]))
    else:
        ctx = threadpool_limits(None)
    with ctx:
        start = time.perf_counter()
        epoch()
        return time.perf_counter() - start


def condition(epoch, repeats: int, spin: bool) -> tuple[dict, float]:
    """{row: [seconds]} over ``repeats`` round-robin rounds, and the median other load."""
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if spin else None
    try:
        if child:
            time.sleep(0.5)  # let it reach its core
        times, loads = {r: [] for r in ROWS}, []
        for _ in range(repeats):
            for row in ROWS:
                busy0, own0, t0 = H._cpu_stat()[0], H._own_cpu(), time.monotonic()
                times[row].append(timed(row, epoch))
                wall = time.monotonic() - t0
                others = (H._cpu_stat()[0] - busy0) / H.os.sysconf("SC_CLK_TCK") - (
                    H._own_cpu() - own0
                )
                loads.append(max(0.0, others / wall))
        return times, statistics.median(loads)
    finally:
        if child:
            child.kill()
            child.wait()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=600, help="steps per timed run (600: an epoch)")
    ap.add_argument("--data-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    x, t, idx, source = H.load_data(args.data_dir, 100)
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"data: {source}")
    libs = ", ".join(f"{i['internal_api']} {i['version']} ({i['num_threads']} threads)"
                     for i in blas)  # fmt: skip
    print(f"BLAS: {libs}; {H.usable_cpus()} usable CPUs; load average before: {H.loadavg()}")
    epoch = make_epoch(x, t, idx, args.steps)
    timed("default", epoch)  # warm-up: page in the data, start the BLAS threads
    med = {}
    for name, spin in (("quiet", False), ("busy", True)):
        times, load = condition(epoch, args.repeats, spin)
        med[name] = {r: statistics.median(v) for r, v in times.items()}
        for r, v in times.items():
            print(f"{name:5} {r:8} median {med[name][r]:7.3f} s  min-max "
                  f"{min(v):.3f}-{max(v):.3f}  bg cores {load:4.2f}")  # fmt: skip
    print()
    for r in ROWS:
        ratio, kept = med["busy"][r] / med["quiet"][r], med["quiet"][r] / med["quiet"]["default"]
        verdict = ""
        if r == "fitted":
            ok = ratio <= TARGET_BUSY and kept <= TARGET_QUIET
            verdict = "  ok" if ok else "  MISS"
        print(f"{r:8} busy/quiet {ratio:5.2f}x  quiet vs default {kept:5.2f}x{verdict}")


if __name__ == "__main__":
    main()
