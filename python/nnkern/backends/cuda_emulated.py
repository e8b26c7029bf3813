"""Test-only backend ``"cuda_emulated"``: the CUDA backend's Python code and
kernels, run on NumPy arrays by the CPU emulator of ``csrc/cuda/launch.h``
(``nnkern._cuda_emu``, built with every nnkern, no CUDA toolkit needed).

It exists so that the test suite checks every CUDA kernel on machines without
a GPU (``tests/test_cuda_emulated.py``); it is slow (one fiber per GPU
thread) and not part of the public API: ``auto`` never picks it.
"""
from __future__ import annotations

from .. import _cuda_emu
from ._device import emulated_device
from .cuda_ops import make_ops, native_op_names

_OPS = make_ops(emulated_device(_cuda_emu))
#: The contract ops the CUDA kernels implement (the same set as ``backends.cuda``).
NATIVE_OPS = native_op_names(_OPS)
globals().update(_OPS)
