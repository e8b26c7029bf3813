"""relu (and later the other pointwise ops) on the native kernels."""
from ... import _cpu as _native

OPS = {
    "relu": _native.relu,
    "relu_backward": _native.relu_backward,
}
