"""conv2d forward and backward on the native operator (csrc/conv/): GEMM on
NCHW for 1x1 convs, GEMM over im2col tiles otherwise."""
from ... import _cpu as _native

OPS = {
    "conv2d": _native.conv2d,
    "conv2d_backward": _native.conv2d_backward,
}
