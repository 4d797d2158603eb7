"""What the benchmark scripts share: environment lines, CPU-load metering, interleaved timing.

Not a benchmark itself.  The scripts beside it import it as ``_harness`` (a script's own
folder is on ``sys.path``); importing it also puts the repository root on ``sys.path``, so
that ``import funcnet`` works from a checkout without installing.

* ``blas_info``, ``print_environment``: NumPy's BLAS and its threads, versions, CPUs, JAX's
  devices and the BLAS environment variables, as the first lines of every script's output.
* ``CpuMeter``: wall time, the busy time of all CPUs (``/proc/stat``), this process's own CPU
  time and the hypervisor's steal time over a timed region; ``foreign`` is the load other
  processes put on the CPUs meanwhile, in cores.
* ``round_robin``: runs every entry ``repeats`` times, interleaved (the starting entry rotates
  every round, so background noise hits all entries alike), metering each run.
* ``median_cells``, ``quiet_median``, ``fmt_range``, ``print_table``: the table columns.
* ``print_load``: the CPU load over the whole timed section, ``/proc/loadavg`` before and
  after, and a warning when other processes disturbed any run.
"""

from __future__ import annotations

import contextlib
import cProfile
import ctypes
import io
import os
import platform
import pstats
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO))

BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
QUIET = 0.2  # cores of background load above which a run counts as disturbed


# --------------------------------------------------------------------------- environment


def _openblas():
    """NumPy's OpenBLAS as a ctypes library and its symbol suffix, or (None, "")."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        if "openblas" in os.path.basename(path).lower():
            lib = ctypes.CDLL(path)
            for prefix, suffix in (
                ("scipy_openblas", "64_"),
                ("scipy_openblas", ""),
                ("openblas", "64_"),
                ("openblas", ""),
            ):
                if hasattr(lib, f"{prefix}_get_num_threads{suffix}"):
                    return lib, prefix, suffix
    return None, "", ""


def blas_info() -> tuple[str, int | None]:
    """A one-line description of NumPy's BLAS and its thread count (None if unknown)."""
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                desc = (
                    f"{pool.get('internal_api')} {pool.get('version')} "
                    f"({pool.get('architecture')}), {pool.get('num_threads')} threads"
                )
                return desc, pool.get("num_threads")
    lib, prefix, suffix = _openblas()
    if lib is None:
        cfg = getattr(np, "__config__", None)
        blas = getattr(cfg, "CONFIG", {}).get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', 'unknown BLAS')} {blas.get('version', '')}", None
    threads = int(getattr(lib, f"{prefix}_get_num_threads{suffix}")())
    corename = getattr(lib, f"{prefix}_get_corename{suffix}", None)
    config = getattr(lib, f"{prefix}_get_config{suffix}", None)
    core = cfg = "?"
    if corename is not None:
        corename.restype = ctypes.c_char_p
        core = corename().decode()
    if config is not None:
        config.restype = ctypes.c_char_p
        cfg = config().decode()
    return f"{cfg} (core in use: {core}), {threads} threads", threads


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0))


def check_torch(names: list[str], no_torch: bool, threads: int, row: str = "torch") -> str:
    """Drop ``row`` from ``names`` (in place) when ``--no-torch`` or torch does not import;
    return the line the environment header shows about torch ("" when it was not asked for)."""
    if row not in names:
        return ""
    if no_torch:
        names.remove(row)
        return ""
    try:
        import torch
    except ImportError:
        names.remove(row)
        return f"{row}: not installed, row skipped"
    return f"torch {torch.__version__}, {threads} intra-op threads"


def print_environment(blas: str, note: str = "") -> None:
    """Versions, BLAS, CPUs, JAX devices (and ``note``), BLAS environment variables."""
    import jax

    print(f"python {platform.python_version()}, numpy {np.__version__}, jax {jax.__version__}")
    print(f"BLAS: {blas}")
    print(
        f"CPUs: {os.cpu_count()} online, {usable_cpus()} usable; "
        f"jax devices: {jax.devices()}" + (f"; {note}" if note else "")
    )
    env = [f"{k}={os.environ[k]!r}" for k in BLAS_ENV if k in os.environ]
    print("env: " + (", ".join(env) if env else "none of " + ", ".join(BLAS_ENV) + " set"))


def default_data_dir() -> Path:
    """``$FUNCNET_DATA``, else ``../shared/mnist`` next to the repository."""
    return Path(os.environ.get("FUNCNET_DATA") or REPO.parent / "shared" / "mnist")


def load_data(data_dir: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """MNIST's training set as (60000, 784) float32 and int64 labels, and where it came from;
    random data of the same shapes and dtypes, with a notice, if no MNIST is found."""
    from funcnet.data import MNISTError, load_mnist

    try:
        (x, t), _ = load_mnist(data_dir, download=False, progress=False)
        return x, t, f"MNIST, load_mnist({str(data_dir)!r}, download=False)"
    except (MNISTError, OSError) as e:
        reason = str(e).split("\n", 1)[0].removesuffix(" Searched:")
        print(f"notice: no MNIST found ({reason}); using random data of the same shapes")
        rng = np.random.default_rng(seed)
        x = rng.random((60000, 784), dtype=np.float32)
        t = rng.integers(0, 10, 60000, dtype=np.int64)
        return x, t, "random data of MNIST's shapes (timings do not depend on the values)"


# --------------------------------------------------------------------------- metering


def read_cpu_stat() -> tuple[int, int]:
    """(busy, steal) jiffies summed over all CPUs, from the first line of /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    return user + nice + system + irq + softirq, steal


def own_cpu() -> float:
    """CPU seconds used by this process so far, all threads (BLAS, XLA, torch) included."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """Wall time, busy time of all CPUs and own CPU time between ``start`` and ``stop``."""

    HZ = os.sysconf("SC_CLK_TCK")

    def start(self) -> CpuMeter:
        self.wall0, self.own0 = time.perf_counter(), own_cpu()
        self.busy0, self.steal0 = read_cpu_stat()
        return self

    def stop(self) -> CpuMeter:
        busy, steal = read_cpu_stat()
        self.wall = time.perf_counter() - self.wall0
        self.own = own_cpu() - self.own0
        self.busy = (busy - self.busy0) / self.HZ
        self.steal = (steal - self.steal0) / self.HZ
        return self

    @property
    def foreign(self) -> float:
        """Cores kept busy by other processes: (all CPUs busy − own CPU time) / wall."""
        return (self.busy - self.own) / self.wall


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --------------------------------------------------------------------------- timing


class Entry(NamedTuple):
    """One timed thing: ``prepare()`` (untimed) makes a state, ``run(state)`` is timed.

    With ``self_timed`` ``run`` returns its own time in seconds, which is recorded instead of
    the metered wall time of the call (the background load is metered over the call anyway).
    """

    prepare: Callable[[], Any]
    run: Callable[[Any], Any]
    self_timed: bool = False


class Rounds(NamedTuple):
    times: dict[str, list[float]]  # seconds per run, in run order
    foreign: dict[str, list[float]]  # background cores during each run
    whole: CpuMeter  # over the whole timed section
    load0: str  # /proc/loadavg before it


def round_robin(entries: dict[str, Entry], repeats: int, what: str = "entries") -> Rounds:
    """``repeats`` rounds over ``entries``, round ``r`` starting at entry ``r mod len``."""
    names = list(entries)
    times: dict[str, list[float]] = {n: [] for n in names}
    print(f"timing {repeats} rounds of {len(names)} {what} (round-robin) ...", flush=True)
    foreign: dict[str, list[float]] = {n: [] for n in names}
    load0 = loadavg()
    whole = CpuMeter().start()
    for r in range(repeats):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            state = entries[n].prepare()
            meter = CpuMeter().start()
            own = entries[n].run(state)
            meter.stop()
            times[n].append(own if entries[n].self_timed else meter.wall)
            foreign[n].append(meter.foreign)
            del state
    whole.stop()
    return Rounds(times, foreign, whole, load0)


def quiet_median(
    times: list[float], foreign: list[float], limit: float = QUIET, scale: float = 1.0
) -> str:
    """Median of the runs during which other processes used < ``limit`` cores, and how many."""
    quiet = [sec for sec, bg in zip(times, foreign, strict=True) if bg < limit]
    if not quiet:
        return "-"
    count = f" ({len(quiet)}/{len(times)})" if len(quiet) < len(times) else ""
    return f"{statistics.median(quiet) * scale:.3f}{count}"


def fmt_range(values: list[float], scale: float = 1.0) -> str:
    return f"{min(values) * scale:.3f}-{max(values) * scale:.3f}"


def print_table(columns: Sequence[tuple[str, int]], rows: Sequence[Sequence[str]]) -> None:
    """Header, a rule and ``rows`` of preformatted cells; the first column is left-aligned,
    the others right-aligned, each to its width, one space apart."""

    def line(cells):
        parts = [f"{cells[0]:<{columns[0][1]}}"]
        parts += [f"{c:>{w}}" for c, (_, w) in zip(cells[1:], columns[1:], strict=True)]
        return " ".join(parts)

    header = line([name for name, _ in columns])
    print(header)
    print("-" * len(header))
    for row in rows:
        print(line(row))


def print_runs(rounds: Rounds, scale: float = 1.0, unit: str = "seconds") -> None:
    """Every run's time (times ``scale``) and background load, in the order they ran."""
    print(f"\nevery run in order, {unit} [background cores]:")
    for n, times in rounds.times.items():
        pairs = zip(times, rounds.foreign[n], strict=True)
        runs = "  ".join(f"{sec * scale:.3f} [{bg:+.2f}]" for sec, bg in pairs)
        print(f"  {n:<18} {runs}")


def print_load(rounds: Rounds, threads: int, what: str = "run") -> None:
    """The CPU load over the timed section, the load average, and a warning if disturbed."""
    whole, w = rounds.whole, rounds.whole.wall
    print(
        f"CPU load over the {w:.1f} s timed section: all CPUs busy {whole.busy / w:.2f} cores, "
        f"this process {whole.own / w:.2f} cores, foreign {whole.foreign:.2f} cores, "
        f"steal {whole.steal / w:.2f} cores"
    )
    print(f"loadavg (1/5/15 min): before {rounds.load0}, after {loadavg()}")
    foreign = rounds.foreign
    hit = sum(f >= QUIET for v in foreign.values() for f in v)
    if whole.foreign >= QUIET or hit:
        print(
            f"warning: other processes used CPU during {hit} of {sum(map(len, foreign.values()))} "
            f"timed runs (>= {QUIET} cores); with {threads} BLAS threads on "
            f"{usable_cpus()} CPUs a busy core can slow a BLAS-bound {what} "
            "many times over: compare the quiet median column, or rerun on a quiet machine"
        )


def print_profile(fn: Callable[[], Any], label: str, top: int = 15) -> None:
    """cProfile one call of ``fn`` (warm it up first), print the ``top`` lines by tottime."""
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    print(f"{label} under cProfile: {time.perf_counter() - start:.3f} s")
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    print(out.getvalue().rstrip())
