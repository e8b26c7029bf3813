"""conv2d forward and backward on the native operator (csrc/conv/): Winograd
F(4x4, 3x3) for float32 3x3 stride-1 convs (AVX-512), GEMM on NCHW for 1x1
convs, direct kernels for depthwise, GEMM over im2col tiles otherwise."""
from ... import _cpu as _native

OPS = {
    "conv2d": _native.conv2d,
    "conv2d_backward": _native.conv2d_backward,
}
