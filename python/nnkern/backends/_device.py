"""Where the CUDA backend's arrays live: the one thing that differs between the
real backend (``nnkern._cuda`` on CuPy arrays) and the test-only emulated one
(``nnkern._cuda_emu``, the same kernels run by a CPU emulator on NumPy arrays).

``backends/cuda_ops.py`` is written once against this interface, so the
emulated backend runs the very Python code of the ``cuda`` backend.
"""
from __future__ import annotations

import os
from types import ModuleType
from typing import Any, Callable

import numpy as np


class Device:
    """A native kernel module with the array module, address and stream that feed it.

    ``native``: the pybind11 module (``nnkern._cuda`` or ``nnkern._cuda_emu``);
    ``xp()``: the array module (CuPy or NumPy); ``ptr(a)``: the address of a
    C-contiguous array; ``stream()``: the ``cudaStream_t`` to launch on (CuPy's
    current stream; 0 for the emulator).
    """

    def __init__(self, native: ModuleType, xp: Callable[[], ModuleType], ptr: Callable[[Any], int],
                 stream: Callable[[], int]):
        self.native = native
        self.xp = xp
        self.ptr = ptr
        self.stream = stream

    def contiguous(self, a):
        """``a`` itself when C-contiguous, else a C-contiguous copy (the one place inputs are copied)."""
        return a if a.flags.c_contiguous else self.xp().ascontiguousarray(a)

    def empty(self, shape, dtype):
        """A fresh output; NaN-filled under ``NNKERN_POISON_OUTPUTS=1`` (the tests), so that an
        element a kernel forgets to write shows."""
        out = self.xp().empty(shape, dtype=dtype)
        if np.dtype(dtype).kind == "f" and os.environ.get("NNKERN_POISON_OUTPUTS") == "1":
            out.fill(np.nan)
        return out


def cupy_device(native: ModuleType) -> Device:
    """The real device: CuPy arrays on CuPy's current stream (CuPy imported at first use)."""
    def xp():
        import cupy
        return cupy

    return Device(native, xp, lambda a: a.data.ptr, lambda: xp().cuda.get_current_stream().ptr)


def emulated_device(native: ModuleType) -> Device:
    """The emulator: NumPy arrays, kernels run on the calling CPU thread (stream 0)."""
    return Device(native, lambda: np, lambda a: a.ctypes.data, lambda: 0)
