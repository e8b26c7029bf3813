"""Comparison helpers shared by the tests."""
from __future__ import annotations

import numpy as np


def rel_error(out, ref) -> float:
    """``||out - ref|| / ||ref||`` over the finite entries (max-abs error when ``ref`` is zero)."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, f"shape {out.shape} != reference shape {ref.shape}"
    nan_out, nan_ref = np.isnan(out), np.isnan(ref)
    assert np.array_equal(nan_out, nan_ref), "NaN positions differ from the reference"
    finite = ~nan_ref
    inf = np.isinf(ref)
    assert np.array_equal(out[inf], ref[inf]), "infinite entries differ from the reference"
    finite &= ~inf
    diff = np.linalg.norm((out - ref)[finite])
    scale = np.linalg.norm(ref[finite])
    return float(diff / scale) if scale > 0 else float(diff)


def representable(ref, out):
    """``ref`` as the output's dtype can hold it: rounded to that dtype, and below its normal range
    (where no relative precision is left, and kernels flush to zero) equal to ``out`` when ``out`` is
    below that range too."""
    dtype = np.asarray(out).dtype
    if dtype.kind != "f" or dtype == np.float64 and np.asarray(ref).dtype == np.float64:
        return ref
    with np.errstate(over="ignore"):
        rounded = np.asarray(ref).astype(dtype).astype(np.float64)
    tiny = np.finfo(dtype).tiny
    out64 = np.asarray(out, dtype=np.float64)
    both_tiny = (np.abs(rounded) < tiny) & (np.abs(out64) < tiny)
    return np.where(both_tiny, out64, rounded)


def assert_close(out, ref, rtol: float, what: str) -> None:
    if isinstance(ref, np.ndarray) and ref.dtype.kind in "iub":
        assert isinstance(out, np.ndarray) and out.dtype == ref.dtype, f"{what}: dtype {getattr(out, 'dtype', None)} != {ref.dtype}"
        assert np.array_equal(out, ref), f"{what}: integer results differ"
        return
    err = rel_error(out, representable(ref, out))
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol:.1g}"


def upstream(rng, outputs, which):
    """Random upstream gradients (None for outputs that are not differentiated)."""
    return [rng.standard_normal(np.shape(o)).astype(np.asarray(o).dtype) if i in which else None
            for i, o in enumerate(outputs)]


def differentiable(op, sample, outputs):
    if op.differentiable_outputs is not None:
        return op.differentiable_outputs(sample)
    return [i for i, o in enumerate(outputs) if np.asarray(o).dtype.kind == "f"]


def checked_path_calls(monkeypatch) -> list:
    """The names of the ops that entered the functional layer's checked path (``_common.float_arrays``)
    from now on, for tests that a common call took the shortcut (``_common.native_op``)."""
    from nnkern.functional import _common
    calls: list = []
    real = _common.float_arrays
    monkeypatch.setattr(_common, "float_arrays", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    return calls
