"""What the benchmark scripts share (not a benchmark itself): options, environment lines,
MNIST, epoch loops, CPU-load metering, interleaved round-robin timing and the table.

Importing it puts the repository root first on ``sys.path``, so that the checkout's
``funcnet`` is the one measured.  Table columns: median and min-max over the runs;
``bg cores``, the load other processes put on the CPUs during the row's runs (median; all
CPUs' busy time from ``/proc/stat`` minus this process's CPU time, per second of wall time);
``cpu slow``, how much slower than its best this machine's slowest CPU ran a fixed loop
just before each of the row's runs (median, and the runs at 1.5 or more: ``cpu_probe``).
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))

BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
QUIET = 0.2  # cores of background load above which a run counts as disturbed


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0))


def blas_info() -> tuple[str, int]:
    """NumPy's BLAS in one line, and its thread count (the usable CPUs if unknown)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        if "openblas" not in os.path.basename(path).lower():
            continue
        lib = ctypes.CDLL(path)
        for pre, suf in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"),
                         ("openblas", "")):  # fmt: skip
            if hasattr(lib, f"{pre}_get_num_threads{suf}"):
                get = {k: getattr(lib, f"{pre}_get_{k}{suf}") for k in ("config", "corename")}
                for f in get.values():
                    f.restype = ctypes.c_char_p
                n = int(getattr(lib, f"{pre}_get_num_threads{suf}")())
                core = get["corename"]().decode()
                return f"{get['config']().decode()} (core in use: {core}), {n} threads", n
    blas = np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {})
    return f"{blas.get('name', 'unknown BLAS')} {blas.get('version', '')}", usable_cpus()


def setup(ap: argparse.ArgumentParser, rows: list[str], default: list[str], argv=None):
    """Add and parse ``--repeats``, ``--data-dir``, ``--only``, ``--no-torch``; drop the torch
    row if asked or not importable; print the environment.  -> (args, rows, BLAS threads)."""
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per row")
    ap.add_argument("--data-dir", type=Path, default=None, help="MNIST directory")
    ap.add_argument("--only", default=None, help="comma-separated rows: " + ", ".join(rows))
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    args = ap.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        ap.error("--repeats must be >= 1")
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else default
    if unknown := [n for n in names if n not in rows]:
        ap.error(f"unknown --only name(s) {unknown}; choose from {', '.join(rows)}")
    blas, threads = blas_info()

    def is_torch(n):  # "torch", "torch-step"
        return n.split("-")[0] == "torch"

    names, note = [n for n in names if not (is_torch(n) and args.no_torch)], ""
    if any(map(is_torch, names)):
        try:
            import torch

            note = f"; torch {torch.__version__}, {threads} intra-op threads"
        except ImportError:
            names = [n for n in names if not is_torch(n)]
            note = "; torch: not installed, its rows skipped"
    print(f"python {platform.python_version()}, numpy {np.__version__}, jax {jax.__version__}")
    print(f"BLAS: {blas}")
    print(
        f"CPUs: {os.cpu_count()} online, {usable_cpus()} usable; jax devices: {jax.devices()}{note}"
    )
    env = [f"{k}={os.environ[k]!r}" for k in BLAS_ENV if k in os.environ]
    print("env: " + (", ".join(env) if env else "none of " + ", ".join(BLAS_ENV) + " set"))
    return args, names, threads


def load_data(data_dir: Path | None, batch: int, seed: int = 0):
    """MNIST's training set (60000, 784) float32, int64 labels, the (steps, batch) indices of
    an epoch over a fixed permutation, and where the data came from: ``data_dir``, else
    ``$FUNCNET_DATA``, else ``../shared/mnist`` beside the repository; random data of the same
    shapes (with a notice) if none is found.  Nothing is downloaded."""
    from funcnet.data import MNISTError, load_mnist

    data_dir = data_dir or Path(os.environ.get("FUNCNET_DATA") or REPO.parent / "shared/mnist")
    try:
        (x, t), _ = load_mnist(data_dir, download=False, progress=False)
        source = f"MNIST, load_mnist({str(data_dir)!r}, download=False)"
    except (MNISTError, OSError) as e:
        reason = str(e).split("\n", 1)[0].removesuffix(" Searched:")
        print(f"notice: no MNIST found ({reason}); using random data of the same shapes")
        rng = np.random.default_rng(seed)
        x = rng.random((60000, 784), dtype=np.float32)
        t = rng.integers(0, 10, 60000, dtype=np.int64)
        source = "random data of MNIST's shapes (timings do not depend on the values)"
    steps = len(x) // batch
    idx = np.random.default_rng(seed).permutation(len(x))[: steps * batch].reshape(steps, batch)
    return x, t, idx, source


def family(row: str) -> str:
    """The funcnet row a row's ``vs funcnet`` divides by: the one with the same dispatch."""
    if row.startswith("jnp-"):
        return "funcnet-jax-" + row[4:]
    return row if row.startswith("funcnet") else "funcnet-np"


def fresh_state(params0, opt_init=None, on_jax: bool = True):
    """fresh() -> [params] or [params, opt_init(params)], params a finished copy of
    ``params0`` (JAX arrays if ``on_jax``)."""
    copy = (lambda a: jnp.array(a, copy=True)) if on_jax else np.copy

    def fresh():
        params = jax.tree.map(copy, params0)
        return jax.block_until_ready([params] if opt_init is None else [params, opt_init(params)])

    return fresh


def epoch_fn(kind, step, c, n_state, make_epoch=None, rngs=None):
    """epoch(state, steps=None) -> losses of ``*state, loss = step(*state, x, t)`` over the
    batches ``c.idx``: per batch, gathered on the host ("np"; "step": jitted, state donated),
    or as one jitted ``make_epoch(step)`` (default lax.scan), gathered on the device first
    ("scan", as ``fit(scan=True)``).  ``rngs``, one per batch, are passed to the step after
    ``t`` (``train.step_rngs``: seed paths for "np", keys otherwise), as ``fit`` does for
    random layers.  ``epoch.warm(state, steps=None)``: compile the scan over that many
    batches (all by default), or run 2 steps."""
    donate = tuple(range(n_state))
    if kind != "scan":
        step = jax.jit(step, donate_argnums=donate) if kind == "step" else step

        def epoch(state, steps=None):
            losses = []
            for i, b in enumerate(c.idx[:steps]):
                rng = () if rngs is None else (rngs[i],)
                *state, loss = step(*state, c.x[b], c.t[b], *rng)
                losses.append(loss)
            return jax.block_until_ready((state, losses))[1]

        epoch.warm = lambda state, steps=None: epoch(state, 2)
        return epoch

    def scan(*args):  # (*state, *batches) -> (*state, losses)
        def body(carry, batch):
            *carry, loss = step(*carry, *batch)
            return carry, loss

        carry, losses = jax.lax.scan(body, list(args[:n_state]), args[n_state:])
        return *carry, losses

    run = jax.jit(make_epoch(step) if make_epoch else scan, donate_argnums=donate)
    x, t, idx = jnp.asarray(c.x), jnp.asarray(c.t.astype(np.int32)), jnp.asarray(c.idx)
    keys = () if rngs is None else (jnp.asarray(rngs),)
    progs = {}  # steps -> the compiled scan over the first ``steps`` batches

    def args(state, steps):
        return (*state, x[idx[:steps]], t[idx[:steps]], *(k[:steps] for k in keys))

    def count(steps):  # None: the whole epoch
        return len(idx) if steps is None else min(steps, len(idx))

    def epoch(state, steps=None):
        if count(steps) not in progs:  # compiled outside the timing when warm() had the same
            warm(state, steps)
        return jax.block_until_ready(progs[count(steps)](*args(state, count(steps))))[-1]

    def warm(state, steps=None):
        progs[count(steps)] = run.lower(*args(state, count(steps))).compile()

    epoch.warm = warm
    return epoch


def _cpu_stat() -> tuple[int, int]:
    """(busy, steal) jiffies summed over all CPUs, from the first line of /proc/stat."""
    f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return f[0] + f[1] + f[2] + f[5] + f[6], (f[7] if len(f) > 7 else 0)


def _own_cpu() -> float:  # this process's CPU seconds, all threads
    return sum(resource.getrusage(resource.RUSAGE_SELF)[:2])


class CpuMeter:
    """Between ``start`` and ``stop``: wall time, busy and steal time of all CPUs, this
    process's CPU time (all threads) and ``foreign``, other processes' load in cores."""

    def start(self) -> CpuMeter:
        self.wall, self.own, (self.busy, self.steal) = time.perf_counter(), _own_cpu(), _cpu_stat()
        return self

    def stop(self) -> CpuMeter:
        (busy, steal), hz = _cpu_stat(), os.sysconf("SC_CLK_TCK")
        self.wall, self.own = time.perf_counter() - self.wall, _own_cpu() - self.own
        self.busy, self.steal = (busy - self.busy) / hz, (steal - self.steal) / hz
        self.foreign = (self.busy - self.own) / self.wall
        return self


def cpu_probe(loops: int = 20000) -> list[float]:
    """Seconds a fixed pure-Python loop takes on each usable CPU, this thread pinned to each
    in turn (its own affinity restored after).  A vCPU that runs at part speed makes a row
    that needs every core wait for it (``benchmarks/NOTES.md``)."""
    mask, times = os.sched_getaffinity(0), []
    try:
        for cpu in sorted(mask):
            os.sched_setaffinity(0, {cpu})
            start, total = time.perf_counter(), 0
            for i in range(loops):
                total += i
            times.append(time.perf_counter() - start)
    finally:
        os.sched_setaffinity(0, mask)
    return times


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def round_robin(entries: dict, repeats: int, what: str = "rows"):
    """``repeats`` rounds over ``entries`` {name: (prepare, run)}, round ``r`` starting at
    entry ``r mod len`` so that background noise hits all alike.  ``prepare()`` is untimed,
    ``run(state)`` metered; a float it returns is its time in seconds, else the wall time.
    -> rounds: .times and .foreign (background cores) per run, in order; .slow, per run the
    slowest CPU's ``cpu_probe`` just before it over the fastest probe of the section (1.0:
    every CPU at its best speed); .whole, a CpuMeter over the whole section; .load0,
    /proc/loadavg before it."""
    names = list(entries)
    times, foreign, probes = ({n: [] for n in names} for _ in range(3))
    print(f"timing {repeats} rounds of {len(names)} {what} (round-robin) ...", flush=True)
    load0, whole, best = loadavg(), CpuMeter().start(), float("inf")
    for r in range(repeats):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            state = entries[n][0]()
            probe = cpu_probe()
            best = min(best, *probe)
            probes[n].append(max(probe))
            meter = CpuMeter().start()
            sec = entries[n][1](state)
            meter.stop()
            times[n].append(sec if isinstance(sec, float) else meter.wall)
            foreign[n].append(meter.foreign)
            del state
    slow = {n: [p / best for p in v] for n, v in probes.items()}
    return argparse.Namespace(
        times=times, foreign=foreign, slow=slow, whole=whole.stop(), load0=load0
    )


def report(rounds, first: str, extra, scale=1.0, unit="s", label=str, pre=()) -> dict:
    """Print the table: ``first`` (the row names, ``label(name)``), the ``pre`` columns,
    median and min-max (times ``scale``, in ``unit``), the ``extra`` columns, bg cores; a
    column is (title, cell(name, medians) -> str).  Returns the medians in seconds."""
    med = {n: statistics.median(v) for n, v in rounds.times.items()}
    rows = [[first, *(p[0] for p in pre), f"median {unit}", f"min-max {unit}"]]
    rows[0] += [*(e[0] for e in extra), "bg cores", "cpu slow"]
    for n, t in rounds.times.items():
        s = [f"{v * scale:.3f}" for v in (med[n], min(t), max(t))]
        row = [label(n), *(cell(n, med) for _, cell in pre), s[0], f"{s[1]}-{s[2]}"]
        bg = f"{statistics.median(rounds.foreign[n]):.2f}"
        rows.append([*row, *(cell(n, med) for _, cell in extra), bg, slow_cell(rounds.slow[n])])
    print("\n" + table(rows))
    return med


def table(rows: list[list[str]]) -> str:
    """Rows of cells as text: the first column left-aligned, the others right, a rule under
    the head."""
    widths = [max(map(len, col)) for col in zip(*rows, strict=True)]
    lines = [" ".join([r[0].ljust(widths[0]), *map(str.rjust, r[1:], widths[1:])]) for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def calibrate(call, run_s: float = 0.2):
    """Warm ``call`` up (compile, touch buffers) -> (its first result, run): ``run(_)`` times
    as many calls as last about ``run_s``, blocks on the last result, and returns seconds
    per call."""
    first = jax.block_until_ready(call())
    jax.block_until_ready(call())
    start = time.perf_counter()
    jax.block_until_ready(call())
    calls = max(1, math.ceil(run_s / (time.perf_counter() - start)))

    def run(_=None):
        start = time.perf_counter()
        for _ in range(calls):
            out = call()
        jax.block_until_ready(out)
        return (time.perf_counter() - start) / calls

    run.calls = calls
    return first, run


SLOW = 1.5  # a probe this many times the section's fastest: a CPU ran at 2/3 speed or less


def slow_cell(probes: list[float]) -> str:
    """``cpu slow`` of runs' probes (``rounds.slow``): their median, and how many were slow."""
    hit = sum(p >= SLOW for p in probes)
    return f"{statistics.median(probes):.2f}" + (f" ({hit}/{len(probes)} slow)" if hit else "")


def ratio(med: dict, n: str, ref: str | None) -> str:
    """median of ``n`` / median of ``ref``; "-" if ``ref`` was not measured."""
    return f"{med[n] / med[ref]:.2f}" if ref in med else ("-" if ref else "")


def print_load(rounds, threads: int, what: str = "run") -> None:
    """The CPU load over the timed section, the load average, a warning if disturbed."""
    whole, w = rounds.whole, rounds.whole.wall
    print(
        f"CPU load over the {w:.1f} s timed section: all CPUs busy {whole.busy / w:.2f} cores, "
        f"this process {whole.own / w:.2f} cores, foreign {whole.foreign:.2f} cores, "
        f"steal {whole.steal / w:.2f} cores; loadavg before {rounds.load0}, after {loadavg()}"
    )
    runs = sum(map(len, rounds.slow.values()))
    if slow := sum(p >= SLOW for v in rounds.slow.values() for p in v):
        print(
            f"warning: a CPU ran at 2/3 of its best speed or less just before {slow} of {runs} "
            f"timed runs (cpu slow >= {SLOW}): compare ratios from rows without slow runs"
        )
    hit = sum(f >= QUIET for v in rounds.foreign.values() for f in v)
    if whole.foreign >= QUIET or hit:
        print(
            f"warning: other processes used CPU during {hit} of {runs} timed runs (>= {QUIET} "
            f"cores); with {threads} BLAS threads on {usable_cpus()} CPUs that can slow a "
            f"BLAS-bound {what} many times over: see the bg cores column"
        )
