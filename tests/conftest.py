"""Shared test set-up: float64 JAX before any array exists, and the ``slow`` marker."""

import os
from pathlib import Path

import jax

# Gradient checks compare in float64; this must run before any JAX array is created.
jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")


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
