"""Small problems and nets that several test files train on (a helper, not a test file)."""

import numpy as np

import funcnet as fn


def blobs(n=600, classes=3, dim=8, seed=0):
    """A linearly separable problem: Gaussian blobs around well-separated centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32) * 4
    t = rng.integers(0, classes, n)
    x = centres[t] + rng.standard_normal((n, dim)).astype(np.float32)
    return x, t


def mlp(hidden=16, classes=3, dim=8, seed=0):
    """dim-hidden-classes with the book's N(0, 0.01²) weights, and its params."""
    net = fn.pipeline(fn.Dense(hidden, W_init=0.01), fn.Relu(), fn.Dense(classes, W_init=0.01))
    _, params = net.init(seed, (-1, dim))
    return net, params
