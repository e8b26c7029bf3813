"""Backend registry and dispatch.

``numpy`` (the reference) implements every op; ``cpu`` (native C++) and
``cuda`` implement the ops listed in their ``NATIVE_OPS``. ``auto`` sends
host arrays to ``cpu`` when it has the op, else to ``numpy``, and device
arrays to ``cuda``.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .._config import check_backend_name, default_backend

# "cuda_emulated" is test-only (see backends/cuda_emulated.py): the CUDA kernels on the CPU emulator.
_MODULES = {"numpy": "numpy_ref", "cpu": "cpu", "cuda": "cuda", "cuda_emulated": "cuda_emulated"}
_loaded: dict[str, ModuleType] = {}


def get(name: str) -> ModuleType:
    """The backend module called ``name`` ("numpy", "cpu" or "cuda")."""
    module = _loaded.get(name)
    if module is None:
        module = importlib.import_module(f".{_MODULES[name]}", __name__)
        _loaded[name] = module
    return module


def has_op(name: str, op: str) -> bool:
    if name == "numpy":
        return True
    try:
        return op in get(name).NATIVE_OPS
    except ImportError:
        return False


def resolve(op: str, backend: str | None, on_device: bool) -> tuple[str, ModuleType]:
    """Pick the backend for one call of ``op`` and return ``(name, module)``."""
    name = check_backend_name(default_backend() if backend is None else backend)
    if name == "auto":
        if on_device:
            name = "cuda"
        else:
            name = "cpu" if has_op("cpu", op) else "numpy"
    if name == "cuda":
        cuda = get("cuda")
        ok, reason = cuda.available()
        if not ok:
            raise RuntimeError(f"{op}: the cuda backend cannot run: {reason}")
        if not on_device:
            raise TypeError(f"{op}: backend='cuda' needs GPU (CuPy) arrays, got host arrays")
    elif on_device:
        raise TypeError(f"{op}: backend={name!r} needs host (NumPy) arrays, got GPU arrays (use .get() to copy them)")
    if not has_op(name, op):
        raise NotImplementedError(f"{op}: the {name} backend has no native kernel for this op yet (use backend='numpy' or 'auto')")
    return name, get(name)
