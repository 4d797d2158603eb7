"""funcnet: neural networks from scratch as pure functions, every gradient checked against JAX.

import funcnet as fn
net = fn.pipeline(fn.Dense(100), fn.Relu(), fn.Dense(10))
out_shape, params = net.init(0, (-1, 784))
logits, cache = net.forward(params, x)
loss, lcache = fn.softmax_cross_entropy.forward(logits, t)
dparams, dx = net.backward(cache, fn.softmax_cross_entropy.backward(lcache))
"""

from . import initializers
from .activations import Relu, Sigmoid, Softmax, Tanh, relu_fn, sigmoid_fn, softmax_fn
from .conv import AvgPool, Conv, MaxPool
from .core import Layer, StateUpdate, namespace, pipeline, split_rng, to_jax, update_state
from .gradcheck import GradcheckError, check_layer, check_loss
from .graph import add, mul
from .linear import Bias, Dense, Flatten, MatMul
from .losses import Loss, l2_penalty, mean_squared_error, softmax_cross_entropy
from .numerical import gradient_descent, numerical_gradient
from .stateful import BatchNorm, Dropout

__version__ = "0.1.0"

__all__ = [
    "AvgPool",
    "BatchNorm",
    "Bias",
    "Conv",
    "Dense",
    "Dropout",
    "Flatten",
    "GradcheckError",
    "Layer",
    "Loss",
    "MatMul",
    "MaxPool",
    "Relu",
    "Sigmoid",
    "Softmax",
    "StateUpdate",
    "Tanh",
    "add",
    "check_layer",
    "check_loss",
    "gradient_descent",
    "initializers",
    "l2_penalty",
    "mean_squared_error",
    "mul",
    "namespace",
    "numerical_gradient",
    "pipeline",
    "relu_fn",
    "sigmoid_fn",
    "softmax_cross_entropy",
    "softmax_fn",
    "split_rng",
    "to_jax",
    "update_state",
]
