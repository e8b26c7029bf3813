"""Native pointwise kernels: sigmoid/tanh accuracy over the float32 range, softmax family and
cross-entropy edge cases, dropout masks bit-identical to the NumPy counter generator, and
thread-count determinism. Run under each NNKERN_ISA."""
import numpy as np
import pytest

import nnkern
import nnkern._cpu as _cpu
from nnkern.backends.numpy_ref import basic as ref
from nnkern.backends.numpy_ref.counter_rng import keep_mask
from helpers import checked_path_calls

# Measured max error vs float64 over every 127th float32 bit pattern plus specials:
# avx512 / avx2: sigmoid 2.30 ulp (x = -3.465), tanh 1.30 ulp (x = 0.634); scalar: 0.5 ulp.
ULP_BOUND = 4.0
TINY = np.finfo(np.float32).tiny


@pytest.fixture
def threads():
    saved = nnkern.get_num_threads()
    yield nnkern.set_num_threads
    nnkern.set_num_threads(saved)


def dense_float32():
    x = np.arange(0, 2**32, 127, dtype=np.uint64).astype(np.uint32).view(np.float32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, TINY, -TINY, 1e-45, -1e-45, 1e-30, -1e-30,
                         0.625, -0.625, np.nextafter(np.float32(0.625), np.float32(0)), 10, -10, 87.3, -87.3,
                         -87.34, 88, -88, 100, -100, -104, 1e6, -1e6, 3.4e38, -3.4e38], np.float32)
    return np.concatenate([x, specials])


def max_ulp_error(actual, expected64):
    """Max error in float32 ulps of the float64 result; results below FLT_MIN may flush to 0 (FTZ)."""
    with np.errstate(all="ignore"):
        ulp = np.spacing(np.abs(expected64.astype(np.float32))).astype(np.float64)
        err = np.abs(actual.astype(np.float64) - expected64) / ulp
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected64))
    err[np.isnan(expected64)] = 0
    err[np.isinf(expected64) & (actual == expected64)] = 0
    err[(np.abs(expected64) < TINY) & (np.abs(actual) < TINY)] = 0
    return err.max()


@pytest.mark.parametrize("name, fn64", [("sigmoid", ref.sigmoid), ("tanh", np.tanh)])
def test_float32_ulp_error_over_the_whole_range(name, fn64):
    x = dense_float32()
    with np.errstate(all="ignore"):
        expected = fn64(x.astype(np.float64))
    actual = getattr(_cpu, name)(x)
    assert actual.dtype == np.float32
    assert max_ulp_error(actual, expected) <= ULP_BOUND
    if name == "sigmoid":
        assert np.all(((actual >= 0) & (actual <= 1)) | np.isnan(x))
    else:
        assert np.all((np.abs(actual) <= 1) | np.isnan(x))
        np.testing.assert_array_equal(np.signbit(actual[x == 0]), np.signbit(x[x == 0]))  # tanh(-0) = -0


@pytest.mark.parametrize("n", [0, 1, 7, 15, 16, 17, 33, 16385, 100003])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_activation_sizes_and_backward(name, dtype, n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 4).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    out = getattr(_cpu, name)(x)
    expected = getattr(ref, name)(x.astype(np.float64))
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)
    gi = getattr(_cpu, name + "_backward")(g, out)
    expected_gi = getattr(ref, name + "_backward")(g.astype(np.float64), out.astype(np.float64))
    np.testing.assert_allclose(gi, expected_gi, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_backward_is_accurate_where_tanh_saturates(dtype):
    """grad * (1 - y^2) element by element where |y| is near 1 and the result is small: 1 - y*y with y*y
    rounded first lost up to 1400 float32 ulp (the scalar family) and 4e-9 relative in float64."""
    rng = np.random.default_rng(5)
    if dtype == np.float32:
        k = np.arange(1, 1 << 16, dtype=np.float64)  # the 65535 float32 values just below 1
        y = np.concatenate([1 - k * 2.0**-24, -(1 - k * 2.0**-24), np.linspace(-1, 1, 1001)]).astype(dtype)
    else:
        x = np.linspace(3, 19, 20001)
        y = np.tanh(np.concatenate([x, -x]))
    g = rng.standard_normal(y.size).astype(dtype)
    gi = _cpu.tanh_backward(g, y)
    # (1 - y) and (1 + y) are exact or once rounded in the wider type: the reference is good to ~1e-19
    yl, gl = y.astype(np.longdouble), g.astype(np.longdouble)
    want = gl * ((1 - yl) * (1 + yl))
    nonzero = want != 0
    rel = np.abs((gi.astype(np.longdouble) - want)[nonzero] / want[nonzero]).astype(np.float64)
    eps = np.finfo(dtype).eps
    assert rel.max() <= 2 * eps, (rel.max(), y[nonzero][rel.argmax()])


@pytest.mark.parametrize("shape, dim", [((1, 1), 1), ((3, 5, 7), 1), ((4, 33), 0), ((2, 3, 300), 1), ((2, 700), 1),
                                        ((5, 3000), 1), ((3, 2, 0), 1), ((0, 4), 1), ((6,), 0),
                                        # rows around the vector widths and long enough for many partial sums
                                        ((3, 15), 1), ((3, 16), 1), ((3, 17), 1), ((2, 100003), 1),
                                        # slabs: column vectors with tails, two column blocks, a long dim
                                        ((2, 9, 23), 1), ((2, 20, 300), 1), ((1, 3000, 33), 1), ((40, 2, 3, 3), 0)])
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_family(shape, dim, log, dtype):
    rng = np.random.default_rng(len(shape) * 7 + dim)
    x = (rng.standard_normal(shape) * 5 + 50).astype(dtype)  # large offset: the max shift matters
    g = rng.standard_normal(shape).astype(dtype)
    name = "log_softmax" if log else "softmax"
    out = getattr(_cpu, name)(x, dim)
    expected = getattr(ref, name)(x.astype(np.float64), dim)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)
    gi = getattr(_cpu, name + "_backward")(g, out, dim)
    expected_gi = getattr(ref, name + "_backward")(g.astype(np.float64), out.astype(np.float64), dim)
    np.testing.assert_allclose(gi, expected_gi, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=tol)


@pytest.mark.parametrize("n, c", [(1, 1), (7, 11), (64, 10), (300, 1000), (3, 20001)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy(n, c, dtype):
    rng = np.random.default_rng(n + c)
    logits = (rng.standard_normal((n, c)) * 3).astype(dtype)
    target = rng.integers(0, c, n)
    loss = _cpu.cross_entropy(logits, target)
    assert loss.shape == () and loss.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(loss, ref.cross_entropy(logits.astype(np.float64), target), rtol=tol)
    grad_loss = np.asarray(rng.standard_normal(), dtype)
    grad = _cpu.cross_entropy_backward(grad_loss, logits, target)
    expected = ref.cross_entropy_backward(grad_loss.astype(np.float64), logits.astype(np.float64), target)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=tol)


@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_nan_and_inf_rules(dim, log):
    """As torch: a NaN or +Inf anywhere makes its whole row NaN, a row of -Inf is NaN, -Inf among finite
    values gives probability 0 (log-probability -Inf); in rows and in columns, in the vector body and tail."""
    rows = np.full((6, 19), 0.5, np.float32) + np.arange(19, dtype=np.float32) / 7
    rows[0, 3] = np.nan
    rows[1, 17] = np.nan
    rows[2, 5] = np.inf
    rows[3, :] = -np.inf
    rows[4, [0, 18]] = -np.inf
    x = rows if dim == 1 else np.ascontiguousarray(rows.T)
    name = "log_softmax" if log else "softmax"
    out = getattr(_cpu, name)(x, dim)
    out = out if dim == 1 else out.T
    assert np.all(np.isnan(out[:4]))
    if log:
        assert np.all(out[4, [0, 18]] == -np.inf)
    else:
        assert np.all(out[4, [0, 18]] == 0)
    for r in (4, 5):
        finite = np.isfinite(rows[r])
        expected = getattr(ref, name)(rows[r][finite].astype(np.float64), 0)
        np.testing.assert_allclose(out[r][finite], expected, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("log", [False, True])
def test_softmax_large_logits(log):
    """Logits around 1e4 and spread over +-80: the max shift keeps every exp in range."""
    rng = np.random.default_rng(5)
    x = (1e4 + rng.uniform(-80, 80, (7, 301))).astype(np.float32)
    name = "log_softmax" if log else "softmax"
    for dim in (0, 1):
        out = getattr(_cpu, name)(x, dim)
        expected = getattr(ref, name)(x.astype(np.float64), dim)
        assert np.all(np.isfinite(out))
        err = np.max(np.abs(out - expected)) / np.max(np.abs(expected))
        assert err <= 1e-5


def test_cross_entropy_empty_batch_is_nan():
    loss = _cpu.cross_entropy(np.zeros((0, 5), np.float32), np.zeros(0, np.int64))
    assert loss.shape == () and np.isnan(loss)
    grad = _cpu.cross_entropy_backward(np.asarray(1.0, np.float32), np.zeros((0, 5), np.float32), np.zeros(0, np.int64))
    assert grad.shape == (0, 5)


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**63 + 5, 2**64 - 1])
@pytest.mark.parametrize("p", [0.1, 1 / 3, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(1,), (15,), (16,), (17,), (3, 5, 7), (1000003,)])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_dropout_mask_matches_numpy_generator(seed, p, shape, n_threads, threads):
    threads(n_threads)
    rng = np.random.default_rng(seed % 1000)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(shape).astype(dtype)
        out, mask = _cpu.dropout(x, p, seed)
        assert mask.dtype == np.bool_ and mask.shape == shape
        np.testing.assert_array_equal(mask, keep_mask(seed, shape, p))
        ref_out, _ = ref.dropout(x, p, seed)
        np.testing.assert_array_equal(out, ref_out)
        g = rng.standard_normal(shape).astype(dtype)
        np.testing.assert_array_equal(_cpu.dropout_backward(g, mask, p), ref.dropout_backward(g, mask, p))


def test_dropout_non_contiguous_uses_c_order_counters():
    x = np.random.default_rng(3).standard_normal((40, 30)).astype(np.float32).T
    out, mask = _cpu.dropout(x, 0.3, 7)
    np.testing.assert_array_equal(mask, keep_mask(7, x.shape, 0.3))
    np.testing.assert_array_equal(out, ref.dropout(np.ascontiguousarray(x), 0.3, 7)[0])


CASES = {
    "sigmoid": lambda x: _cpu.sigmoid(x),
    "tanh": lambda x: _cpu.tanh(x),
    "softmax_rows": lambda x: _cpu.softmax(x, 1),
    "log_softmax_cols": lambda x: _cpu.log_softmax(x, 0),
    "softmax_backward": lambda x: _cpu.softmax_backward(x[::-1].copy(), _cpu.softmax(x, 1), 1),
    "softmax_cols_backward": lambda x: _cpu.softmax_backward(x[::-1].copy(), _cpu.softmax(x, 0), 0),
    "log_softmax_rows_backward": lambda x: _cpu.log_softmax_backward(x[::-1].copy(), _cpu.log_softmax(x, 1), 1),
    "log_softmax_cols_backward": lambda x: _cpu.log_softmax_backward(x[::-1].copy(), _cpu.log_softmax(x, 0), 0),
    "cross_entropy": lambda x: _cpu.cross_entropy(x, np.arange(x.shape[0]) % x.shape[1]),
    "cross_entropy_backward": lambda x: _cpu.cross_entropy_backward(np.asarray(1.5, x.dtype), x,
                                                                     np.arange(x.shape[0]) % x.shape[1]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bit_identical_reruns_and_thread_counts(case, threads):
    x = np.random.default_rng(11).standard_normal((517, 1031)).astype(np.float32)
    results = []
    for n_threads in (1, 2, 2):
        threads(n_threads)
        results.append(CASES[case](x))
    np.testing.assert_array_equal(results[1], results[2])
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activation_common_call_skips_the_checks_with_the_same_result(name, monkeypatch):
    """NumPy float arrays of one dtype go straight to the native activation and its backward; the result
    equals the checked path's, and the calls the common path declines (other array types, mixed dtypes,
    mismatched shapes, the numpy backend) still get the checked path's answers and errors."""
    from nnkern.functional import _common
    rng = np.random.default_rng(21)
    forward, backward = getattr(nnkern, name), getattr(nnkern, name + "_backward")
    cases = []
    for dtype in (np.float32, np.float64):
        for shape in [(), (7,), (3, 40), (2, 3, 5, 17)]:
            x = rng.standard_normal(shape).astype(dtype)
            g = rng.standard_normal(shape).astype(dtype)
            for backend in (None, "cpu", "auto"):
                assert _common.native_op(name, backend, x) is not None
                y = forward(x, backend=backend)
                cases.append((x, g, backend, y, backward(g, y, backend=backend)))
    x32 = np.ones((2, 3), np.float32)
    assert _common.native_op(name, None, x32.tolist()) is None
    assert _common.native_op(name, "numpy", x32) is None
    assert _common.native_op(name + "_backward", None, x32, np.ones((2, 3))) is None
    with pytest.raises(ValueError, match="grad_output must have shape"):
        backward(np.ones((2, 4), np.float32), x32)
    monkeypatch.setattr(_common, "native_op", lambda *args: None)
    for x, g, backend, y, gx in cases:
        np.testing.assert_array_equal(y, forward(x, backend=backend))
        np.testing.assert_array_equal(gx, backward(g, y, backend=backend))
        assert y.dtype == x.dtype and y.shape == x.shape and gx.shape == x.shape


def test_cross_entropy_common_call_skips_the_checks_with_the_same_result(monkeypatch):
    """cross_entropy's and its backward's common call (NumPy float logits, int64 targets in range, a
    NumPy scalar gradient) goes straight to the native function; results and errors equal the checked
    path's, and what it declines (other target dtypes, Python scalars, bad targets) is checked."""
    from nnkern.functional import _common
    rng = np.random.default_rng(19)
    checked_calls = checked_path_calls(monkeypatch)
    cases = []
    for dtype in (np.float32, np.float64):
        for n, ncls in [(1, 1), (5, 7), (0, 3)]:
            logits = rng.standard_normal((n, ncls)).astype(dtype)
            for target in (rng.integers(0, ncls, n), rng.integers(0, ncls, n).astype(np.int32)):
                for gl in (np.float32(0.5), np.ones((), np.float64), np.array([2.0]), 1.5):
                    for backend in (None, "cpu", "auto"):
                        cases.append((logits, target, gl, backend, nnkern.cross_entropy(logits, target, backend=backend),
                                      nnkern.cross_entropy_backward(gl, logits, target, backend=backend)))
    # the common path declined exactly the int32 targets (forward and backward)
    assert len(checked_calls) == sum(2 for _, t, *_ in cases if t.dtype != np.int64) > 0
    logits = np.ones((2, 3), np.float32)
    bad = [np.array([0, 3]), np.array([-1, 0]), np.array([0, 1, 2]), np.array([0.0, 1.0])]
    errors = []
    for target in bad:
        for fn in (lambda t, lg=logits: nnkern.cross_entropy(lg, t),
                   lambda t, lg=logits: nnkern.cross_entropy_backward(1.0, lg, t)):
            with pytest.raises((ValueError, TypeError)) as info:
                fn(target)
            errors.append((fn, target, type(info.value), str(info.value)))
    with pytest.raises(ValueError) as info:
        nnkern.cross_entropy_backward(np.ones(2, np.float32), logits, np.array([0, 1]))
    wrong_size = str(info.value)
    monkeypatch.setattr(_common, "native_op", lambda *args: None)
    for lg, target, gl, backend, loss, grad in cases:
        checked_loss = nnkern.cross_entropy(lg, target, backend=backend)
        checked_grad = nnkern.cross_entropy_backward(gl, lg, target, backend=backend)
        np.testing.assert_array_equal(loss, checked_loss)
        np.testing.assert_array_equal(grad, checked_grad)
        assert loss.dtype == checked_loss.dtype and grad.dtype == checked_grad.dtype == lg.dtype
    for fn, target, kind, message in errors:
        with pytest.raises(kind) as info:
            fn(target)
        assert str(info.value) == message
    with pytest.raises(ValueError) as info:
        nnkern.cross_entropy_backward(np.ones(2, np.float32), logits, np.array([0, 1]))
    assert str(info.value) == wrong_size
