"""The built-in layers, one file per kind.  A new layer goes in the file of its kind (or a
new one) and in the export list below; ``docs/protocol.md`` walks through writing one."""

from .activations import Relu, Sigmoid, Softmax, Tanh, elementwise, relu, sigmoid, softmax
from .attention import Attention
from .conv import AvgPool, Conv, MaxPool
from .dropout import Dropout
from .embedding import Embedding
from .linear import Bias, Dense, Flatten, MatMul
from .normalization import BatchNorm
from .recurrent import GRU, LSTM, RNN, Bidirectional, BiLSTM
from .transformer import CausalSelfAttention, Gelu, LayerNorm, PositionalEmbedding

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Attention",
    "AvgPool",
    "BatchNorm",
    "BiLSTM",
    "Bias",
    "Bidirectional",
    "CausalSelfAttention",
    "Conv",
    "Dense",
    "Dropout",
    "Embedding",
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
