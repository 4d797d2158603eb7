"""Every test here runs small float64 programs, some of them with a mutant in place."""

import jax
import pytest


@pytest.fixture(autouse=True)
def _fresh_traces():
    # XLA's optimizations only cost compile time here: every case is a tiny float64 program.
    saved = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", saved)
    jax.clear_caches()  # no mutant stays in a compiled kernel for the next test
