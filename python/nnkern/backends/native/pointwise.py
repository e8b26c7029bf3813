"""Pointwise ops on the native kernels: relu, sigmoid, tanh, softmax and
log_softmax, cross-entropy and dropout, forward and backward."""
from ... import _cpu as _native

OPS = {
    "relu": _native.relu,
    "relu_backward": _native.relu_backward,
    "sigmoid": _native.sigmoid,
    "sigmoid_backward": _native.sigmoid_backward,
    "tanh": _native.tanh,
    "tanh_backward": _native.tanh_backward,
    "softmax": _native.softmax,
    "softmax_backward": _native.softmax_backward,
    "log_softmax": _native.log_softmax,
    "log_softmax_backward": _native.log_softmax_backward,
    "cross_entropy": _native.cross_entropy,
    "cross_entropy_backward": _native.cross_entropy_backward,
    "dropout": _native.dropout,
    "dropout_backward": _native.dropout_backward,
}
