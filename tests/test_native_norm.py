"""Edge cases of the native batch-norm kernels: plane lengths around the vector
widths, both work plans (whole channels per task / planes per task), thread
counts, bit-identical reruns, accuracy for a large mean, masks and optionals."""
import numpy as np
import pytest

import nnkern._cpu as _cpu
from nnkern.backends.numpy_ref import norm as ref

TOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.fixture
def threads():
    """Restores the thread count a test changes."""
    saved = _cpu.get_num_threads()
    yield
    _cpu.set_num_threads(saved)


def rel_err(actual, expected):
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-30)
    return float(np.max(np.abs(np.asarray(actual, dtype=np.float64) - expected), initial=0.0)) / scale


def make(rng, shape, dtype, loc=0.5):
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + loc).astype(dtype)
    w = rng.standard_normal(c).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    rm = (rng.standard_normal(c) * 0.3).astype(dtype)
    rv = (np.abs(rng.standard_normal(c)) + 0.5).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    return x, w, b, rm, rv, g


def check_against_reference(x, w, b, rm, rv, g, training, dtype):
    f64 = lambda a: None if a is None else a.astype(np.float64)
    rm_ref, rv_ref = f64(rm), f64(rv)
    out_ref, mean_ref, invstd_ref = ref.batch_norm(f64(x), rm_ref, rv_ref, f64(w), f64(b), training, 0.1, 1e-5,
                                                   None, None)
    rm_nat = None if rm is None else rm.copy()
    rv_nat = None if rv is None else rv.copy()
    out, mean, invstd = _cpu.batch_norm(x, rm_nat, rv_nat, w, b, training, 0.1, 1e-5, None, None)
    tol = TOL[dtype]
    assert out.dtype == dtype and mean.dtype == dtype and invstd.dtype == dtype
    for actual, expected in ((out, out_ref), (mean, mean_ref), (invstd, invstd_ref), (rm_nat, rm_ref),
                             (rv_nat, rv_ref)):
        if expected is not None:
            assert rel_err(actual, expected) <= tol
    grads_ref = ref.batch_norm_backward(f64(g), f64(x), f64(w), f64(mean), f64(invstd), training, (True,) * 3)
    grads = _cpu.batch_norm_backward(g, x, w, mean, invstd, training, (True, True, True))
    for actual, expected in zip(grads, grads_ref):
        assert actual.dtype == dtype
        assert rel_err(actual, expected) <= tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw", [1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 100, 257])
@pytest.mark.parametrize("training", [True, False])
def test_plane_lengths_around_vector_widths(rng, dtype, hw, training):
    check_against_reference(*make(rng, (3, 5, hw), dtype), training, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 64, 40, 40), (16, 3, 50, 50), (6, 1, 300, 300), (64, 2, 33),
                                   (3, 5, 301, 297)])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_both_plans_and_thread_counts(rng, threads, dtype, shape, nthreads):
    # many channels: each task owns whole channels; few channels: planes are split;
    # the last shape's outputs (> 4 MiB) are streamed, from planes of every alignment
    _cpu.set_num_threads(nthreads)
    for training in (True, False):
        check_against_reference(*make(rng, shape, dtype), training, dtype)


@pytest.mark.parametrize("shape", [(2, 64, 40, 40), (16, 3, 50, 50), (5, 7, 9, 11)])
def test_same_bits_for_reruns_and_thread_counts(rng, threads, shape):
    x, w, b, rm, rv, g = make(rng, shape, np.float32)
    results = []
    for nthreads in (1, 2, 2, 1):
        _cpu.set_num_threads(nthreads)
        rm1, rv1 = rm.copy(), rv.copy()
        out, mean, invstd = _cpu.batch_norm(x, rm1, rv1, w, b, True, 0.1, 1e-5, None, None)
        grads = _cpu.batch_norm_backward(g, x, w, mean, invstd, True, (True, True, True))
        results.append([out, mean, invstd, rm1, rv1, *grads])
    for other in results[1:]:
        for a, e in zip(other, results[0]):
            assert a.tobytes() == e.tobytes()


@pytest.mark.parametrize("hw", [4, 1000, 12544])
def test_large_mean_small_spread_float32(rng, hw):
    # E[x^2] - E[x]^2 in float32 would lose the spread entirely
    x = (1e4 + rng.standard_normal((4, 3, hw))).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    w, b = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    out_ref, mean_ref, invstd_ref = ref.batch_norm(x.astype(np.float64), np.zeros(3), np.ones(3),
                                                   w.astype(np.float64), b.astype(np.float64), True, 0.1, 1e-5,
                                                   None, None)
    out, mean, invstd = _cpu.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5, None, None)
    assert rel_err(out, out_ref) <= 1e-5
    assert rel_err(mean, mean_ref) <= 1e-7
    assert rel_err(invstd, invstd_ref) <= 1e-5


def test_optional_arguments_and_masks(rng):
    x, w, b, rm, rv, g = make(rng, (4, 3, 5, 6), np.float32)
    out_ref, mean_ref, invstd_ref = ref.batch_norm(x.astype(np.float64), None, None, None, None, True, 0.1, 1e-5,
                                                   None, None)
    out, mean, invstd = _cpu.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, None, None)
    assert rel_err(out, out_ref) <= 1e-5
    for training in (True, False):
        full = _cpu.batch_norm_backward(g, x, None, mean, invstd, training, (True, True, True))
        expected = ref.batch_norm_backward(g.astype(np.float64), x.astype(np.float64), None,
                                           mean.astype(np.float64), invstd.astype(np.float64), training, (True,) * 3)
        for a, e in zip(full, expected):
            assert rel_err(a, e) <= 1e-5
        for mask in [(True, False, False), (False, True, False), (False, False, True), (False, False, False)]:
            part = _cpu.batch_norm_backward(g, x, None, mean, invstd, training, mask)
            for keep, a, e in zip(mask, part, full):
                assert (a is None) == (not keep)
                if keep:
                    assert a.tobytes() == e.tobytes()


def test_running_stats_updated_in_place_even_when_strided(rng):
    x, w, b, _, _, _ = make(rng, (4, 3, 5), np.float64)
    rm_base, rv_base = np.zeros(6), np.ones(6)
    rm, rv = rm_base[::2], rv_base[::2]  # non-contiguous views of the caller's arrays
    _cpu.batch_norm(x, rm, rv, w, b, True, 0.25, 1e-5, None, None)
    rm_ref, rv_ref = np.zeros(3), np.ones(3)
    ref.batch_norm(x, rm_ref, rv_ref, w, b, True, 0.25, 1e-5, None, None)
    assert rel_err(rm_base[::2], rm_ref) <= 1e-12 and rel_err(rv_base[::2], rv_ref) <= 1e-12
    assert np.all(rm_base[1::2] == 0) and np.all(rv_base[1::2] == 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_batch(dtype):
    x = np.empty((0, 3, 4, 4), dtype)
    rm, rv = np.full(3, 0.5, dtype), np.full(3, 2.0, dtype)
    out, mean, invstd = _cpu.batch_norm(x, rm, rv, None, None, True, 0.1, 1e-5, None, None)
    assert out.shape == x.shape
    assert np.all(mean == 0) and np.allclose(invstd, 1 / np.sqrt(1e-5))
    assert np.all(rm == 0.5) and np.all(rv == 2.0)  # PyTorch leaves them alone
    gi, gw, gb = _cpu.batch_norm_backward(x, x, None, mean, invstd, True, (True, True, True))
    assert gi.shape == x.shape and np.all(gw == 0) and np.all(gb == 0)
    out, mean, invstd = _cpu.batch_norm(x, rm, rv, None, None, False, 0.1, 1e-5, None, None)
    assert out.shape == x.shape and np.all(mean == rm)


@pytest.mark.parametrize("shape", [(4, 3, 0), (4, 0, 5, 5)])
def test_empty_planes_and_no_channels(rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    c = shape[1]
    rm, rv = np.full(c, 0.5, np.float32), np.full(c, 2.0, np.float32)
    out, mean, invstd = _cpu.batch_norm(x, rm, rv, None, None, True, 0.1, 1e-5, None, None)
    out_ref, mean_ref, invstd_ref = ref.batch_norm(x.astype(np.float64), None, None, None, None, True, 0.1, 1e-5,
                                                   None, None)
    assert out.shape == x.shape and mean.shape == (c,)
    assert np.allclose(mean, mean_ref) and np.allclose(invstd, invstd_ref)
    assert np.all(rm == 0.5) and np.all(rv == 2.0)
    gi, gw, gb = _cpu.batch_norm_backward(x, x, None, mean, invstd, True, (True, True, True))
    assert gi.shape == x.shape and gw.shape == (c,) and np.all(gw == 0) and np.all(gb == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw", [1, 15, 16, 17, 33, 257])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("form", [("relu", False), ("relu", True), (None, True)])
def test_fused_relu_and_residual(dtype, hw, training, form):
    """act(bn(x) + residual) for every fused form, plane lengths around the vector widths, in and below the
    streaming size: against the reference, and equal to the unfused steps."""
    activation, with_residual = form
    rng = np.random.default_rng(hw)
    x, w, b, rm, rv, _ = make(rng, (3, 4, hw), dtype)
    r = rng.standard_normal(x.shape).astype(dtype) if with_residual else None
    f64 = lambda a: None if a is None else a.astype(np.float64)
    out_ref = ref.batch_norm(f64(x), f64(rm), f64(rv), f64(w), f64(b), training, 0.1, 1e-5, activation, f64(r))[0]
    out = _cpu.batch_norm(x, rm.copy(), rv.copy(), w, b, training, 0.1, 1e-5, activation, r)[0]
    assert out.dtype == dtype and rel_err(out, out_ref) <= TOL[dtype]
    plain = _cpu.batch_norm(x, rm.copy(), rv.copy(), w, b, training, 0.1, 1e-5, None, None)[0]
    if r is not None:
        plain = plain + r
    if activation == "relu":
        plain = np.maximum(plain, 0)
        assert np.any(out == 0) and np.any(out > 0)
    np.testing.assert_allclose(out, plain, rtol=4 * np.finfo(dtype).eps, atol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("form", [("relu", True), ("relu", False), (None, True)])
def test_fused_large_streams_and_keeps_nan(threads, form):
    """Each fused form with an output above the streaming threshold (its own streamed kernel), 1 and 2
    threads: same bits; NaN passes the ReLU and the residual add."""
    activation, with_residual = form
    rng = np.random.default_rng(7)
    x, w, b, rm, rv, _ = make(rng, (4, 8, 182, 182), np.float32)
    r = rng.standard_normal(x.shape).astype(np.float32) if with_residual else None
    x[1, 2, 3, 4] = np.nan
    outs = []
    for t in (1, 2):
        _cpu.set_num_threads(t)
        outs.append(_cpu.batch_norm(x, rm.copy(), rv.copy(), w, b, False, 0.1, 1e-5, activation, r)[0])
    assert np.array_equal(outs[0], outs[1], equal_nan=True)
    assert np.isnan(outs[0][1, 2, 3, 4]) and np.isnan(outs[0]).sum() == 1
    expected = ref.batch_norm(x.astype(np.float64), rm.astype(np.float64), rv.astype(np.float64), w.astype(np.float64),
                              b.astype(np.float64), False, 0.1, 1e-5, activation,
                              None if r is None else r.astype(np.float64))[0]
    finite = ~np.isnan(expected)
    assert rel_err(outs[0][finite], expected[finite]) <= 1e-5


def test_fused_residual_shape_and_dtype_checked():
    x = np.ones((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="residual"):
        _cpu.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, "relu", np.ones((2, 3, 5), np.float32))
    with pytest.raises(TypeError, match="residual"):
        _cpu.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, "relu", np.ones((2, 3, 4), np.float64))
