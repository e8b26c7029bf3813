"""Turning user inputs into arrays, and the dtype rules of API.md.

Host inputs become ``numpy.ndarray`` (without a copy where the memory
allows); device inputs become CuPy arrays. Only float32 and float64 are
computed; every other dtype is a ``TypeError`` naming the argument.
"""
from __future__ import annotations

from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_DLPACK_CUDA_DEVICES = (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged


def is_device_array(a: Any) -> bool:
    """True for CuPy arrays (the only device arrays ``functional`` passes on)."""
    return type(a).__module__.split(".")[0] == "cupy"


def _cupy():
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError("a GPU array was given but CuPy is not installed (pip install 'nnkern[cuda]')") from exc
    return cupy


def as_array(value: Any, name: str, op: str) -> Any:
    """``value`` as a NumPy or CuPy array, without copying where possible."""
    if isinstance(value, np.ndarray) or is_device_array(value):
        return value
    if hasattr(value, "__cuda_array_interface__"):
        return _cupy().asarray(value)
    if hasattr(value, "__dlpack_device__"):
        try:
            device_type = int(value.__dlpack_device__()[0])
        except Exception:  # an object that only pretends
            device_type = 1
        if device_type in _DLPACK_CUDA_DEVICES:
            return _cupy().from_dlpack(value)
    try:
        return np.asarray(value)
    except Exception as exc:
        if hasattr(value, "__dlpack__"):
            # e.g. a torch tensor that requires grad refuses __array__ but shares memory by DLPack
            try:
                return np.from_dlpack(value)
            except Exception:
                pass
        raise TypeError(f"{op}: {name} must be an array-like, got {type(value).__name__}") from exc


def check_float(arrays: dict[str, Any], op: str) -> np.dtype:
    """All ``arrays`` (name -> array, ``None`` skipped) share one float dtype; return it."""
    first_name, dtype = None, None
    for name, a in arrays.items():
        if a is None:
            continue
        dt = np.dtype(a.dtype)
        if dt not in FLOAT_DTYPES:
            raise TypeError(f"{op}: {name} must have dtype float32 or float64, got {dt}")
        if dtype is None:
            first_name, dtype = name, dt
        elif dt != dtype:
            raise TypeError(
                f"{op}: all float arguments must share one dtype, got {first_name} {dtype} and {name} {dt}"
            )
    if dtype is None:
        raise TypeError(f"{op}: no float array was given")
    return dtype


def check_same_device(arrays: dict[str, Any], op: str) -> bool:
    """Whether the arrays live on the GPU; mixing host and device arrays is a ``TypeError``."""
    kinds = {name: is_device_array(a) for name, a in arrays.items() if a is not None}
    if len(set(kinds.values())) > 1:
        host = [n for n, d in kinds.items() if not d]
        dev = [n for n, d in kinds.items() if d]
        raise TypeError(f"{op}: arguments on different devices: {', '.join(dev)} on the GPU, {', '.join(host)} on the host")
    return any(kinds.values())
