"""Pointwise ops on the native kernels: relu, sigmoid, tanh, softmax and
log_softmax, cross-entropy and dropout, forward and backward."""
from ... import _cpu as _native

# softmax, log_softmax and cross_entropy have native kernels (nnkern._cpu, tested in
# tests/test_native_pointwise.py) but they are not registered yet: their scalar loops with std::exp
# run at about half NumPy's speed (256x1000 float32: 1.1 ms vs 0.5 ms), and `auto` must never pick
# a slower path. They register once they use the vector exp.
OPS = {
    "relu": _native.relu,
    "relu_backward": _native.relu_backward,
    "sigmoid": _native.sigmoid,
    "sigmoid_backward": _native.sigmoid_backward,
    "tanh": _native.tanh,
    "tanh_backward": _native.tanh_backward,
    "dropout": _native.dropout,
    "dropout_backward": _native.dropout_backward,
}
