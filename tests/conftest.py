"""Shared test set-up: float64 JAX before any array exists, and the ``slow`` marker."""

import os

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
