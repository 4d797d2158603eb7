"""Shared test set-up: float64 JAX before any array exists, XLA's optimizations mostly off
and its older CPU code generator, one JAX compilation cache for the run, and the ``slow``
marker."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax

# Gradient checks compare in float64; this must run before any JAX array is created.
jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")


# XLA:CPU's code generator from before its MLIR fusion emitters: see pytest_configure.
FAST_CODEGEN = "--xla_cpu_use_fusion_emitters=false"


def _xla_accepts(flags: str) -> bool:
    """Whether a JAX process starts its CPU backend with ``XLA_FLAGS=flags``."""
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    code = "import jax; jax.numpy.zeros(1).block_until_ready()"
    try:
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, timeout=300
        )
    except subprocess.TimeoutExpired:
        return False
    return run.returncode == 0


def pytest_configure(config):
    """XLA's optimizations mostly off (``jax_disable_most_optimizations``, as ``funcnet
    check`` runs): the suite compiles hundreds of small programs that then run once or
    twice, and the backend's optimization passes took about a quarter of the suite's CPU
    time.  The programs' meaning is the same; the tests that read a compiled program turn
    the optimizations back on: with ``xla_optimized`` (its layouts) or in the environment
    of the subprocess they start (its collectives, test_scale.py).

    With them, XLA:CPU's older code generator for fused loops (``FAST_CODEGEN``), where the
    installed XLA still has it: it turned the same programs into machine code in less than
    half the time (the suite's in-process compiles: 137 s of CPU time against 50 s; the
    whole run 218 s against 173 s on 2 cores).  XLA reads ``XLA_FLAGS`` once, when a
    process's first backend starts, which no test has done yet; and it aborts on a flag it
    does not know, so a child process tries the flag first.  Only the machine code differs:
    the tests that read a compiled program read its HLO, which this flag does not change.
    ``JAX_DISABLE_MOST_OPTIMIZATIONS=0`` runs the whole suite with neither, compiled as a
    user's run is.

    One persistent JAX compilation cache for the whole run, in a fresh temporary folder:
    the xdist workers and the command-line runs the tests start compile many of the same
    programs (the catalogue's cases, the training steps), and each compiled program is
    then built once.  The cache starts empty every run, so nothing carries over between
    runs; a cache the caller set up (``JAX_COMPILATION_CACHE_DIR``) is used as it is."""
    if "JAX_DISABLE_MOST_OPTIMIZATIONS" not in os.environ:
        os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"  # workers and subprocesses
        jax.config.update("jax_disable_most_optimizations", True)  # this process
        flags = f"{os.environ.get('XLA_FLAGS', '')} {FAST_CODEGEN}".strip()
        if _xla_accepts(flags):
            os.environ["XLA_FLAGS"] = flags  # this process, its workers and subprocesses
    if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return  # an xdist worker inherits the controller's environment
    folder = tempfile.mkdtemp(prefix="funcnet-test-jax-cache-")
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    cache = {
        "JAX_COMPILATION_CACHE_DIR": folder,
        # Every program: most are small ones that compile in well under the default 1 s.
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    }
    os.environ.update(cache)  # for the workers and subprocesses started from here on
    # And for this process, whose JAX read its environment at import.
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


@pytest.fixture
def xla_optimized():
    """XLA's full optimizations for one test that reads what XLA compiled, as a user's run
    compiles it (the suite otherwise runs with them mostly off: ``pytest_configure``).  The
    flag is read when a program compiles, not part of jit's cache key: the caches are
    cleared first, so that nothing this worker compiled before is reused unoptimized."""
    saved = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    jax.clear_caches()
    yield
    jax.config.update("jax_disable_most_optimizations", saved)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow") or os.environ.get("FUNCNET_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow or FUNCNET_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


MNIST_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Folder with the four real MNIST files: $FUNCNET_MNIST_DIR, else ../shared/mnist beside
    the checkout.  Tests that use it are skipped, with the reason, when the files are absent."""
    root = Path(__file__).resolve().parents[1]
    d = Path(os.environ.get("FUNCNET_MNIST_DIR") or root.parent / "shared" / "mnist")
    missing = [n for n in MNIST_NAMES if not (d / f"{n}.gz").is_file() and not (d / n).is_file()]
    if missing:
        pytest.skip(f"real MNIST not found in {d} (missing {', '.join(missing)})")
    return d


@pytest.fixture(scope="session")
def dlfs2() -> Path:
    """The second book's code (``$FUNCNET_DLFS2_DIR`` or ../shared/dlfs2), it and its ch07
    first on ``sys.path`` so that its modules import as its scripts import them; the tests
    that need it skip when it is absent."""
    root = Path(__file__).resolve().parents[1]
    d = Path(os.environ.get("FUNCNET_DLFS2_DIR") or root.parent / "shared" / "dlfs2")
    if not all((d / f).is_file() for f in ("common/time_layers.py", "ch07/seq2seq.py")):
        pytest.skip(f"the book's code not found in {d}")
    for p in (str(d / "ch07"), str(d)):
        if p not in sys.path:
            sys.path.insert(0, p)
    return d
