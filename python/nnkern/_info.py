"""``nnkern.info()`` and the process-wide thread controls."""
from __future__ import annotations

import os
import platform
from typing import Any

from . import __version__, backends
from .functional import OPS


def set_num_threads(n: int) -> None:
    """Threads the native kernels use (default: the CPUs this process may run on, or ``NNKERN_NUM_THREADS``)."""
    backends.get("cpu").set_num_threads(n)


def get_num_threads() -> int:
    """Threads the native kernels use."""
    return int(backends.get("cpu").get_num_threads())


def empty_cache() -> None:
    """Release the native scratch buffers kept for reuse between calls."""
    backends.get("cpu").empty_cache()


def set_conv_algorithm(name: str) -> None:
    """Choose how native float32 convolutions are computed, process-wide.

    ``"auto"`` (the default, or ``NNKERN_CONV_ALGORITHM``): Winograd F(4x4, 3x3) for 3x3 stride-1
    convolutions where it applies (relative error <= 5e-4, typically ~1e-6), GEMM or direct kernels
    otherwise. ``"direct"``: never Winograd (results rounded as a direct convolution). Raises
    ``ValueError`` for any other name.
    """
    if not isinstance(name, str):
        raise TypeError(f"set_conv_algorithm: name must be a str, got {type(name).__name__}")
    backends.get("cpu").set_conv_algorithm(name)


def get_conv_algorithm() -> str:
    """The current choice of :func:`set_conv_algorithm` (``"auto"`` or ``"direct"``)."""
    return str(backends.get("cpu").get_conv_algorithm())


def info() -> dict[str, Any]:
    """Version, kernel ISA, threads, build, CUDA status and which ops run natively."""
    cpu = backends.get("cpu")
    cuda = backends.get("cuda")
    cuda_ok, cuda_reason = cuda.available()
    every_op = sorted(set(OPS) | set(OPS.values()))
    # conv1d runs as a conv2d of height 1 on whichever backend runs conv2d
    composite = {"conv1d": "conv2d", "conv1d_backward": "conv2d_backward"}

    def native(backend) -> list:
        ops = set(backend.NATIVE_OPS)
        return [o for o in every_op if o in ops or composite.get(o) in ops]

    return {
        "version": __version__,
        "python": platform.python_version(),
        "platform": platform.machine(),
        "cpu_isa": cpu.isa(),
        "cpu_isas_supported": list(cpu.supported_isas()),
        "num_threads": get_num_threads(),
        "conv_algorithm": get_conv_algorithm(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "build": cpu.build_info(),
        "cuda_compiled": cuda.compiled(),
        "cuda_available": cuda_ok,
        "cuda_status": "available" if cuda_ok else cuda_reason,
        "cuda_device": cuda.device_info() if cuda_ok else None,
        "native_ops": {"cpu": native(cpu), "cuda": native(cuda)},
        "numpy_only_ops": [o for o in every_op if o not in native(cpu)],
    }
