"""The real CUDA backend: clear errors without a device; on a GPU, the kernels against the NumPy reference.

The kernels themselves are checked on every machine by test_cuda_emulated.py
(the same source compiled for the CPU emulator); the tests here that need a
device skip when there is none.
"""
from __future__ import annotations

import numpy as np
import pytest

import nnkern as nk
from nnkern import backends

cuda = backends.get("cuda")
AVAILABLE, REASON = cuda.available()
needs_gpu = pytest.mark.skipif(not AVAILABLE, reason=f"no CUDA: {REASON}")


@pytest.mark.skipif(AVAILABLE, reason="a CUDA device is present")
def test_cuda_backend_says_what_is_missing():
    with pytest.raises(RuntimeError, match="relu: the cuda backend cannot run: .*(not compiled|no CUDA device)"):
        nk.relu(np.ones(3, dtype=np.float32), backend="cuda")


def test_info_reports_cuda():
    info = nk.info()
    assert info["cuda_compiled"] == cuda.compiled()
    assert info["cuda_available"] == AVAILABLE
    assert (info["cuda_device"] is not None) == AVAILABLE
    if cuda.compiled():
        assert "relu" in info["native_ops"]["cuda"]
        assert cuda._native.architectures()


@needs_gpu
def test_runtime_kernel():
    assert cuda._native._test_kernel(5) == [0, 2, 4, 6, 8]


@needs_gpu
def test_registry_on_device():
    import cupy
    import zlib
    from op_registry import OPS
    from helpers import assert_close
    for op in OPS:
        if op.name not in cuda.NATIVE_OPS:
            continue
        for index, sample in enumerate(op.samples(np.random.default_rng(zlib.crc32(op.name.encode())))):
            for dtype in (np.float32, np.float64):
                cast = sample.cast(dtype)
                dev = {k: cupy.asarray(v) for k, v in cast.inputs.items()}
                params = {k: cupy.asarray(v) if isinstance(v, np.ndarray) else v for k, v in cast.params.items()}
                ref, _ = op.forward(cast.cast(np.float64).inputs, cast.params, "numpy")
                out, _ = op.forward(dev, params, "cuda")
                for o, r in zip(out, ref):
                    assert isinstance(o, cupy.ndarray)
                    assert_close(cupy.asnumpy(o), r, op.rtol[dtype], f"{op.name} sample {index}")


@needs_gpu
def test_module_to_cuda():
    import cupy
    m = nk.nn.Sequential(nk.nn.Linear(4, 3), nk.nn.ReLU()).to("cuda")
    y = m(cupy.ones((2, 4), dtype=cupy.float32))
    assert isinstance(y, cupy.ndarray)
