"""The built-in layers, one file per kind.  A new layer goes in the file of its kind (or a
new one) and in the export list below; ``docs/protocol.md`` walks through writing one."""

from .activations import Relu, Sigmoid, Softmax, Tanh, elementwise, relu, sigmoid, softmax
from .conv import AvgPool, Conv, MaxPool
from .dropout import Dropout
from .linear import Bias, Dense, Flatten, MatMul
from .normalization import BatchNorm
from .transformer import CausalSelfAttention, Gelu, LayerNorm, PositionalEmbedding

__all__ = [
    "AvgPool",
    "BatchNorm",
    "Bias",
    "CausalSelfAttention",
    "Conv",
    "Dense",
    "Dropout",
    "Flatten",
    "Gelu",
    "LayerNorm",
    "MatMul",
    "MaxPool",
    "PositionalEmbedding",
    "Relu",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "elementwise",
    "relu",
    "sigmoid",
    "softmax",
]
