"""The CUDA backend: the kernels of ``nnkern._cuda`` on CuPy arrays, on CuPy's current stream.

The ops themselves are ``cuda_ops.make_ops`` over the CuPy device of
``_device.py``; the test-only ``cuda_emulated`` backend runs the same code and
kernels on the CPU emulator.
"""
from __future__ import annotations

from typing import Any, Optional

try:
    from .. import _cuda as _native
except ImportError:
    _native = None

from ._device import cupy_device  # noqa: E402
from .cuda_ops import make_ops, native_op_names  # noqa: E402

_OPS = make_ops(cupy_device(_native))
#: The backend-contract ops the CUDA kernels implement (none when nnkern._cuda was not built).
NATIVE_OPS: frozenset = native_op_names(_OPS) if _native is not None else frozenset()
globals().update(_OPS)


def compiled() -> bool:
    """Whether this nnkern was built with its CUDA module."""
    return _native is not None


def available() -> tuple[bool, str]:
    """``(True, "")`` when CUDA kernels can run, else ``(False, what is missing)``."""
    if _native is None:
        return False, ("the CUDA module nnkern._cuda was not compiled "
                       "(reinstall with nvcc on PATH, or NNKERN_CUDA=ON to require it)")
    if _native.device_count() == 0:
        why = "no CUDA driver is installed" if _native.driver_version() == 0 else "the driver reports none"
        return False, f"nnkern._cuda is compiled but there is no CUDA device ({why})"
    return True, ""


def device_info() -> Optional[dict[str, Any]]:
    """Device 0's name, the device count and the CUDA versions; None without a device."""
    if _native is None or _native.device_count() == 0:
        return None
    return {
        "name": _native.device_name(0),
        "count": _native.device_count(),
        "runtime_version": _native.runtime_version(),
        "driver_version": _native.driver_version(),
        "architectures": _native.architectures(),
    }
