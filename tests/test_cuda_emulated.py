"""Every CUDA kernel, forward and backward, run by the CPU emulator of csrc/cuda/launch.h.

The test-only backend ``cuda_emulated`` runs the CUDA backend's own Python
(backends/cuda_ops.py) and the very kernel source of nnkern._cuda, compiled
for the host; each registry sample is checked by test_ops' own comparison
against the float64 NumPy reference, with the cpu backend's tolerances.
"""
from __future__ import annotations

import numpy as np
import pytest

import nnkern as nk
from nnkern import backends
from op_registry import OPS
import test_ops

BACKEND = "cuda_emulated"
# ops that run as another op of the backend (conv1d is a conv2d of height 1), forward and backward
COMPOSITE = {"conv1d": "conv2d", "conv1d_backward": "conv2d_backward"}


_has_op = backends.has_op


def _has(op_name):
    return _has_op(BACKEND, COMPOSITE.get(op_name, op_name))


CASES = [pytest.param(op, i, dt, id=f"{op.name}-{s.desc}-{np.dtype(dt).name}")
         for op in OPS if _has(op.name)
         for i, s in enumerate(op.samples(np.random.default_rng(0)))
         for dt in test_ops.DTYPES]


@pytest.mark.parametrize("op,index,dtype", CASES)
def test_against_reference(op, index, dtype, monkeypatch):
    # test_ops asks has_op whether to check the backward: answer for the composite ops too
    monkeypatch.setattr(test_ops.backends, "has_op",
                        lambda name, o: _has(o) if name == BACKEND else _has_op(name, o))
    test_ops.test_against_reference(op, index, BACKEND, dtype)


def test_backward_ops_registered_with_forward():
    """Each op the CUDA backend has comes with its backward."""
    have = backends.get(BACKEND).NATIVE_OPS
    for op in OPS:
        if op.name in have and op.backward_op:
            assert op.backward_op in have, op.name


def test_same_ops_as_cuda_backend():
    cuda = backends.get("cuda")
    if cuda.compiled():
        assert cuda.NATIVE_OPS == backends.get(BACKEND).NATIVE_OPS
    else:
        assert cuda.NATIVE_OPS == frozenset()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 255, 256, 257, 1000])
def test_activations_partial_blocks(n, dtype, rng):
    x = (rng.standard_normal(n) * 3).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    for name in ("relu", "sigmoid", "tanh"):
        y = getattr(nk, name)(x, backend=BACKEND)
        ref = getattr(nk, name)(x.astype(np.float64), backend="numpy")
        assert np.abs(y - ref).max() <= 4 * np.finfo(dtype).eps, name
        gx = getattr(nk, name + "_backward")(g, y, backend=BACKEND)
        assert np.array_equal(gx, getattr(nk, name + "_backward")(g, y, backend="numpy")) or \
            np.abs(gx - getattr(nk, name + "_backward")(g, y, backend="numpy")).max() <= 4 * np.finfo(dtype).eps


@pytest.mark.parametrize("seed", [0, 1, 2**63 + 5])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_mask_equals_numpy(seed, p, rng):
    x = rng.standard_normal((7, 131)).astype(np.float32)
    _, mask = nk.dropout(x, p, seed=seed, return_mask=True, backend=BACKEND)
    _, ref = nk.dropout(x, p, seed=seed, return_mask=True, backend="numpy")
    assert mask.dtype == np.bool_ and np.array_equal(mask, ref)


@pytest.mark.parametrize("d", [1, 127, 128, 129, 300])
def test_softmax_rows_longer_than_a_block(d, rng):
    x = (rng.standard_normal((3, d, 2)) * 4).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    for name in ("softmax", "log_softmax"):
        y = getattr(nk, name)(x, 1, backend=BACKEND)
        ref = getattr(nk, name)(x.astype(np.float64), 1, backend="numpy")
        assert np.linalg.norm(y - ref) <= 1e-6 * np.linalg.norm(ref)
        gx = getattr(nk, name + "_backward")(g, y, 1, backend=BACKEND)
        gref = getattr(nk, name + "_backward")(g.astype(np.float64), y.astype(np.float64), 1, backend="numpy")
        assert np.linalg.norm(gx - gref) <= 1e-5 * np.linalg.norm(gref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_backward_extended_precision(dtype, rng):
    test_ops.test_softmax_backward_extended_precision(BACKEND, dtype, rng)


def test_bit_identical_reruns(rng):
    x = rng.standard_normal((5, 300)).astype(np.float32)
    t = rng.integers(0, 300, 5)
    a = [nk.cross_entropy(x, t, backend=BACKEND), nk.softmax(x, 1, backend=BACKEND)]
    b = [nk.cross_entropy(x, t, backend=BACKEND), nk.softmax(x, 1, backend=BACKEND)]
    for u, v in zip(a, b):
        assert np.array_equal(u, v)


def test_not_advertised():
    assert "cuda_emulated" not in nk._config.BACKENDS
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'cpu', 'cuda', 'numpy', got 'gpu'"):
        nk.relu(np.ones(3), backend="gpu")


@pytest.mark.parametrize("m,k,o", [(1, 1, 1), (15, 17, 16), (33, 40, 17), (16, 16, 32), (70, 3, 5)])
def test_linear_partial_tiles(m, k, o, rng):
    """Shapes around the 16x16 GEMM tile: several tiles, partial ones on every edge."""
    x, w, b = rng.standard_normal((m, k)), rng.standard_normal((o, k)), rng.standard_normal(o)
    g = rng.standard_normal((m, o))
    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        args = [a.astype(dtype) for a in (x, w, b)]
        ref = nk.linear(*[a.astype(np.float64) for a in args], backend="numpy")
        out = nk.linear(*args, backend=BACKEND)
        assert np.linalg.norm(out - ref) <= tol * np.linalg.norm(ref)
        grads = nk.linear_backward(g.astype(dtype), args[0], args[1], backend=BACKEND)
        refs = nk.linear_backward(g, *[a.astype(np.float64) for a in args[:2]], backend="numpy")
        for got, r in zip(grads, refs):
            assert got.dtype == dtype and np.linalg.norm(got - r) <= tol * np.linalg.norm(r)


def test_conv_many_channels(rng):
    """A GEMM reduction over several tiles (C * kh * kw = 54) and an output of several tile columns."""
    x = rng.standard_normal((2, 6, 9, 8)).astype(np.float32)
    w = rng.standard_normal((20, 6, 3, 3)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    ref = nk.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), 1, 1, backend="numpy")
    out = nk.conv2d(x, w, b, 1, 1, backend=BACKEND)
    assert np.linalg.norm(out - ref) <= 1e-5 * np.linalg.norm(ref)
    g = rng.standard_normal(out.shape).astype(np.float32)
    got = nk.conv2d_backward(g, x, w, 1, 1, backend=BACKEND)
    refs = nk.conv2d_backward(g.astype(np.float64), x.astype(np.float64), w.astype(np.float64), 1, 1,
                              backend="numpy")
    for a, r in zip(got, refs):
        assert np.linalg.norm(a - r) <= 1e-5 * np.linalg.norm(r)


def test_max_pool_nan_and_ties_like_the_reference(rng):
    x = rng.standard_normal((2, 3, 7, 8)).round(0)  # many ties
    x[0, 0, 1, 1] = np.nan
    x[1, 2, 4, 3] = np.nan
    x[1, 2, 4, 5] = np.nan
    for dtype in (np.float32, np.float64):
        out, idx = nk.max_pool2d(x.astype(dtype), 3, 2, 1, return_indices=True, backend=BACKEND)
        ref, ref_idx = nk.max_pool2d(x.astype(dtype), 3, 2, 1, return_indices=True, backend="numpy")
        assert np.array_equal(out, ref, equal_nan=True) and np.array_equal(idx, ref_idx)


def test_reruns_bit_identical(rng):
    x = rng.standard_normal((3, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    g = rng.standard_normal((3, 6, 9, 9)).astype(np.float32)

    def run():
        bn = nk.batch_norm(x, None, None, None, None, True, return_stats=True, backend=BACKEND)
        return (nk.conv2d_backward(g, x, w, 1, 1, backend=BACKEND) + bn
                + nk.batch_norm_backward(g[:, :4], x, None, bn[1], bn[2], backend=BACKEND))

    for a, b in zip(run(), run()):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_training_on_an_empty_batch(dtype):
    """No rows: the statistics kernel's empty-batch branch (mean 0, invstd 1 / sqrt(eps), running
    statistics untouched, as PyTorch), equal to the reference; the backward returns an empty gradient."""
    x = np.zeros((0, 3, 4, 4), dtype)
    rm, rv = np.full(3, 0.5, dtype), np.full(3, 2.0, dtype)
    out, mean, invstd = nk.batch_norm(x, rm, rv, training=True, return_stats=True, backend=BACKEND)
    _, mean_ref, invstd_ref = nk.batch_norm(x, rm.copy(), rv.copy(), training=True, return_stats=True,
                                            backend="numpy")
    assert out.shape == x.shape and out.dtype == dtype
    assert np.array_equal(mean, mean_ref) and np.array_equal(invstd, invstd_ref)
    assert np.all(rm == 0.5) and np.all(rv == 2.0)
    gx = nk.batch_norm_backward(x, x, None, mean, invstd, backend=BACKEND)
    assert gx[0].shape == x.shape


def test_batch_norm_running_stats_updated_in_place_even_strided(rng):
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    rm, rv = np.zeros(6, np.float32)[::2], np.ones(6, np.float32)[::2]  # non-contiguous views
    rm_ref, rv_ref = np.zeros(3, np.float32), np.ones(3, np.float32)
    nk.batch_norm(x, rm, rv, training=True, backend=BACKEND)
    nk.batch_norm(x, rm_ref, rv_ref, training=True, backend="numpy")
    assert np.allclose(rm, rm_ref, rtol=1e-6, atol=1e-7) and np.allclose(rv, rv_ref, rtol=1e-6)


@pytest.mark.parametrize("hw,kernel,stride", [(3, 3, 1), (4, 3, 1), (6, 3, 3), (9, 3, 2)])
def test_conv_weight_grad_over_images_and_pixels(hw, kernel, stride, rng):
    """The weight gradient is one GEMM whose reduction runs over (image, pixel) pairs, with fewer
    pixels per image (1, 4, 4, 16) than the 16 reduction steps a tile stages."""
    x = rng.standard_normal((5, 3, hw, hw))
    w = rng.standard_normal((4, 3, kernel, kernel))
    out = nk.conv2d(x, w, None, stride, backend="numpy")
    g = rng.standard_normal(out.shape)
    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        got = nk.conv2d_backward(g.astype(dtype), x.astype(dtype), w.astype(dtype), stride,
                                 output_mask=(False, True, False), backend=BACKEND)[1]
        r = nk.conv2d_backward(g.astype(dtype).astype(np.float64), x.astype(dtype).astype(np.float64),
                               w.astype(dtype).astype(np.float64), stride, output_mask=(False, True, False),
                               backend="numpy")[1]
        assert got.dtype == dtype and np.linalg.norm(got - r) <= tol * np.linalg.norm(r)
