"""nnkern's functional API (re-exported at the top level): see ``shared/API.md``.

Each function converts and validates its arguments once, then hands them to
a backend (``backend=`` per call, ``nnkern.use_backend`` per block, ``auto``
by default).
"""
from ._common import DimensionError
from .basic import (cross_entropy, cross_entropy_backward, dropout, dropout_backward, linear, linear_backward,
                    log_softmax, log_softmax_backward, relu, relu_backward, sigmoid, sigmoid_backward, softmax,
                    softmax_backward, tanh, tanh_backward)
from .conv import conv1d, conv1d_backward, conv2d, conv2d_backward
from .norm import batch_norm, batch_norm_backward
from .pool import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, avg_pool2d, avg_pool2d_backward, max_pool2d,
                   max_pool2d_backward)
from .recurrent import (CellGrads, LSTMCellGrads, SequenceGrads, Workspace, gru, gru_backward, gru_cell,
                        gru_cell_backward, lstm, lstm_backward, lstm_cell, lstm_cell_backward, rnn, rnn_backward,
                        rnn_cell, rnn_cell_backward)

#: Forward ops of API.md and the backward that pairs with each.
OPS = {
    "conv1d": "conv1d_backward", "conv2d": "conv2d_backward", "max_pool2d": "max_pool2d_backward",
    "avg_pool2d": "avg_pool2d_backward", "adaptive_avg_pool2d": "adaptive_avg_pool2d_backward",
    "batch_norm": "batch_norm_backward", "linear": "linear_backward", "relu": "relu_backward",
    "sigmoid": "sigmoid_backward", "tanh": "tanh_backward", "softmax": "softmax_backward",
    "log_softmax": "log_softmax_backward", "dropout": "dropout_backward",
    "cross_entropy": "cross_entropy_backward", "rnn_cell": "rnn_cell_backward",
    "lstm_cell": "lstm_cell_backward", "gru_cell": "gru_cell_backward", "lstm": "lstm_backward",
    "gru": "gru_backward", "rnn": "rnn_backward",
}

__all__ = sorted(set(OPS) | set(OPS.values()) | {"CellGrads", "LSTMCellGrads", "SequenceGrads", "Workspace",
                                                  "DimensionError"})
