"""linear forward and backward on the native GEMM (csrc/gemm/)."""
from ... import _cpu as _native

OPS = {
    "linear": _native.linear,
    "linear_backward": _native.linear_backward,
}
