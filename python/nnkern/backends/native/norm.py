"""batch_norm and its backward on the native kernels."""
from ... import _cpu as _native

OPS = {
    "batch_norm": _native.batch_norm,
    "batch_norm_backward": _native.batch_norm_backward,
}
