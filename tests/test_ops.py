"""Every backend that implements an op against the float64 NumPy reference, on every registry sample.

The reference is ``backend="numpy"`` on float64 copies. Each backend runs
the sample in float32 and float64 (non-contiguous layouts kept); outputs
must keep the input dtype and agree within the op's per-dtype tolerance;
the backward (when the backend has it) is compared the same way.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from nnkern import backends
from helpers import assert_close, differentiable, upstream
from op_registry import OPS

DTYPES = [np.float32, np.float64]


def _backends_for(op):
    names = ["numpy"]
    if backends.has_op("cpu", op.name):
        names.append("cpu")
    return names


CASES = [pytest.param(op, i, b, dt, id=f"{op.name}-{s.desc}-{b}-{np.dtype(dt).name}")
         for op in OPS for i, s in enumerate(op.samples(np.random.default_rng(0)))
         for b in _backends_for(op) for dt in DTYPES]


@pytest.mark.parametrize("op,index,backend,dtype", CASES)
def test_against_reference(op, index, backend, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{op.name}{index}".encode()))
    sample = op.samples(rng)[index]
    cast = sample.cast(dtype)
    # the oracle sees exactly the values the backend sees: the rounded inputs, in float64
    exact = cast.cast(np.float64)
    ref_out, ref_saved = op.forward(exact.inputs, exact.params, "numpy")
    out, saved = op.forward(cast.inputs, cast.params, backend)
    assert len(out) == len(ref_out)
    for k, (o, r) in enumerate(zip(out, ref_out)):
        if np.asarray(r).dtype.kind == "f":
            assert np.asarray(o).dtype == dtype, f"output {k} has dtype {np.asarray(o).dtype}, input {np.dtype(dtype)}"
        assert_close(o, r, op.rtol[dtype], f"{op.name} output {k}")

    if op.backward is None or not sample.check_backward:
        return
    bwd_backend = backend if backends.has_op(backend, op.backward_op) else None
    if bwd_backend is None:
        pytest.skip(f"{backend} has no {op.backward_op}")
    which = differentiable(op, sample, ref_out)
    grads = [None if g is None else g.astype(dtype) for g in upstream(rng, ref_out, which)]
    grads_ref = [None if g is None else g.astype(np.float64) for g in grads]
    ref_g = op.backward(exact.inputs, exact.params, ref_out, ref_saved, grads_ref, "numpy")
    got_g = op.backward(cast.inputs, cast.params, out, saved, grads, bwd_backend)
    assert set(got_g) == set(ref_g)
    for name in ref_g:
        assert np.asarray(got_g[name]).dtype == dtype, f"grad of {name} has dtype {np.asarray(got_g[name]).dtype}"
        assert np.shape(got_g[name]) == np.shape(sample.inputs[name]), f"grad of {name} has the wrong shape"
        assert_close(got_g[name], ref_g[name], op.rtol[dtype], f"{op.backward_op} grad of {name}")


@pytest.mark.parametrize("op", OPS, ids=[op.name for op in OPS])
def test_registry_covers_backward_ops(op):
    import nnkern
    assert callable(getattr(nnkern, op.name))
    assert op.backward_op is None or callable(getattr(nnkern, op.backward_op))


@pytest.mark.parametrize("backend", ["numpy"] + (["cpu"] if backends.has_op("cpu", "softmax_backward") else []))
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_backward_extended_precision(backend, dtype, rng):
    """Dominant probabilities (large logits) against an extended-precision oracle that cannot cancel:
    grad_i = y_i * sum_j y_j (g_i - g_j)."""
    import nnkern as nk
    x = (rng.standard_normal((6, 7)) * 100 + 1000).astype(dtype)
    g = rng.standard_normal((6, 7)).astype(dtype)
    y = nk.softmax(x, 1, backend="numpy")
    gl = g.astype(np.longdouble)
    yl = y.astype(np.longdouble)  # the backward is given the rounded forward output
    oracle = yl * ((gl[:, :, None] - gl[:, None, :]) * yl[:, None, :]).sum(2)
    got = nk.softmax_backward(g, y, 1, backend=backend)
    err = np.linalg.norm((got.astype(np.longdouble) - oracle).astype(np.float64)) / \
        np.linalg.norm(oracle.astype(np.float64))
    assert err < {np.float32: 1e-5, np.float64: 1e-12}[dtype], err
