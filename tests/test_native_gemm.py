"""GEMM micro-kernels and operator (csrc/gemm/) under every kernel family, and native linear.

`_cpu._test_gemm(a, b, c, trans_a, trans_b, alpha, beta, bias, isa)` returns alpha * op(a) @ op(b) + beta * c
(+ bias) computed by the given family, with a and b passed with their own strides (slices, transposes and
negative strides reach the packing code as they are).
"""
import numpy as np
import pytest

import nnkern
import nnkern._cpu as _cpu
from helpers import checked_path_calls

ISAS = _cpu.supported_isas()
DTYPES = [np.float32, np.float64]
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
# Register tile (MR, NR) of each family for float32; float64 tiles have half the columns on the vector families.
TILE = {"avx512": (14, 32), "avx2": (6, 16), "scalar": (4, 4)}
# kc (the k-slice depth) is 512 for float32 on every family, 292 for float64 on avx512; these k straddle both.
K_EDGES = [1, 2, 3, 291, 292, 293, 511, 512, 513, 1030]


def tile(isa, dtype):
    mr, nr = TILE[isa]
    return mr, (nr // 2 if isa != "scalar" and np.dtype(dtype) == np.float64 else nr)


def reference(a, b, c, trans_a, trans_b, alpha, beta, bias=None):
    a64 = a.astype(np.float64).T if trans_a else a.astype(np.float64)
    b64 = b.astype(np.float64).T if trans_b else b.astype(np.float64)
    out = alpha * (a64 @ b64)
    if beta != 0:
        out = out + beta * c.astype(np.float64)
    if bias is not None:
        out = out + bias.astype(np.float64)
    return out


def operands(rng, m, n, k, dtype, trans_a=False, trans_b=False):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    return a, b, c


def check(out, ref, dtype):
    assert out.dtype == np.dtype(dtype) and out.shape == ref.shape
    assert np.isfinite(out).all()
    if ref.size:
        scale = max(np.linalg.norm(ref), np.finfo(np.float64).tiny)
        err = np.linalg.norm(out.astype(np.float64) - ref) / scale
        assert err <= TOL[np.dtype(dtype)], err
        # Per element too, so one wrong edge element cannot hide in the norm of a large matrix.
        np.testing.assert_allclose(out, ref, rtol=0, atol=50 * TOL[np.dtype(dtype)] * (np.abs(ref).max() + 1))


def run(a, b, c, trans_a, trans_b, alpha, beta, isa, bias=None):
    return _cpu._test_gemm(a, b, c, trans_a, trans_b, alpha, beta, bias, isa)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_k_edges(isa, dtype):
    rng = np.random.default_rng(1)
    mr, nr = tile(isa, dtype)
    for k in K_EDGES:
        a, b, c = operands(rng, mr + 1, nr + 3, k, dtype)
        check(run(a, b, c, False, False, 1.0, 0.0, isa), reference(a, b, c, False, False, 1.0, 0.0), dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_m_n_remainders(isa, dtype):
    rng = np.random.default_rng(2)
    mr, nr = tile(isa, dtype)
    for m in range(1, mr + 2):
        for n in range(1, nr + 2):
            a, b, c = operands(rng, m, n, 5, dtype)
            bias = rng.standard_normal(n).astype(dtype)
            out = run(a, b, c, False, False, 0.75, -1.25, isa, bias)
            check(out, reference(a, b, c, False, False, 0.75, -1.25, bias), dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_transposed_operands(isa, dtype, trans_a, trans_b):
    rng = np.random.default_rng(3)
    for m, n, k in [(1, 1, 1), (17, 35, 300), (61, 7, 530), (5, 70, 33)]:
        a, b, c = operands(rng, m, n, k, dtype, trans_a, trans_b)
        check(run(a, b, c, trans_a, trans_b, 1.0, 1.0, isa), reference(a, b, c, trans_a, trans_b, 1.0, 1.0), dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_and_negative_strides(isa, dtype):
    rng = np.random.default_rng(4)
    m, n, k = 23, 37, 270
    big_a = rng.standard_normal((2 * m, 3 * k)).astype(dtype)
    big_b = rng.standard_normal((k, 2 * n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    for a, b in [(big_a[::2, ::3], big_b[:, ::2]),          # positive strides, neither unit
                 (big_a[::-2, 1::3], big_b[::-1, ::-2]),    # negative strides
                 (big_a[::-2, :k], big_b[::-1, :n]),        # negative row strides, unit column stride
                 (big_a[:m, :k], big_b[:, :n])]:            # unit column stride, padded rows
        check(run(a, b, c, False, False, 1.0, 0.5, isa), reference(a, b, c, False, False, 1.0, 0.5), dtype)
        at = np.asfortranarray(a).T  # a transposed view of a column-major copy: op(at) = a with unit row stride
        check(run(at, b, c, True, False, 1.0, 0.5, isa), reference(at, b, c, True, False, 1.0, 0.5), dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (1.0, 1.0), (0.5, -2.0), (0.0, 1.0), (-3.0, 0.25)])
def test_alpha_beta(isa, dtype, alpha, beta):
    rng = np.random.default_rng(5)
    a, b, c = operands(rng, 19, 45, 260, dtype, trans_b=True)
    check(run(a, b, c, False, True, alpha, beta, isa), reference(a, b, c, False, True, alpha, beta), dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_beta_zero_never_reads_c(isa, dtype):
    rng = np.random.default_rng(6)
    a, b, _ = operands(rng, 16, 33, 600, dtype)
    c = np.full((16, 33), np.nan, dtype=dtype)
    check(run(a, b, c, False, False, 2.0, 0.0, isa), reference(a, b, c, False, False, 2.0, 0.0), dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_accumulation(isa, dtype):
    rng = np.random.default_rng(7)
    c = rng.standard_normal((30, 50)).astype(dtype)
    ref = c.astype(np.float64)
    for _ in range(3):
        a, b, _ = operands(rng, 30, 50, 300, dtype)
        c = run(a, b, c, False, False, 1.0, 1.0, isa)
        ref = ref + a.astype(np.float64) @ b.astype(np.float64)
    check(c, ref, dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_and_k_zero(isa, dtype):
    rng = np.random.default_rng(8)
    a, b, c = operands(rng, 6, 9, 0, dtype)
    bias = rng.standard_normal(9).astype(dtype)
    check(run(a, b, c, False, False, 1.0, 0.5, isa, bias), 0.5 * c.astype(np.float64) + bias, dtype)
    check(run(a, b, c, False, False, 1.0, 0.0, isa), np.zeros((6, 9)), dtype)
    for m, n in [(0, 5), (5, 0)]:
        a, b, c = operands(rng, m, n, 4, dtype)
        assert run(a, b, c, False, False, 1.0, 0.0, isa).shape == (m, n)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_small_m_against_transposed_b(isa, dtype):
    """m <= 4 with B = W^T (rows of W contiguous) takes the unpacked dot kernel on avx512 float32: every m up
    to one past it, columns around its group of 4 and its 64-column tasks, k around its 16 lanes."""
    rng = np.random.default_rng(14)
    for m in range(1, 6):
        for n in [1, 3, 4, 5, 63, 64, 65, 130]:
            for k in [0, 1, 15, 16, 17, 100]:
                a, b, c = operands(rng, m, n, k, dtype, trans_b=True)
                bias = rng.standard_normal(n).astype(dtype)
                out = run(a, b, c, False, True, 1.5, -0.5, isa, bias)
                check(out, reference(a, b, c, False, True, 1.5, -0.5, bias), dtype)
                c_nan = np.full((m, n), np.nan, dtype=dtype)
                check(run(a, b, c_nan, False, True, 1.0, 0.0, isa), reference(a, b, c, False, True, 1.0, 0.0), dtype)


@pytest.mark.parametrize("isa", ISAS)
def test_block_boundaries(isa):
    """Rows past mc (2044 on avx512) and columns past nc (512 at kc = 512) take further blocks."""
    rng = np.random.default_rng(9)
    for m, n, k in [(2100, 40, 530), (3, 1100, 520)]:
        a, b, c = operands(rng, m, n, k, np.float32, trans_b=True)
        check(run(a, b, c, False, True, 1.0, 1.0, isa), reference(a, b, c, False, True, 1.0, 1.0), np.float32)


@pytest.fixture
def threads():
    saved = _cpu.get_num_threads()
    yield _cpu.set_num_threads
    _cpu.set_num_threads(saved)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_for_any_thread_count(isa, dtype, threads):
    """The k-reduction never depends on the split, so 1 and 2 threads (and reruns) give identical bits."""
    rng = np.random.default_rng(10)
    results = []
    for m, n, k, trans_b in [(300, 200, 700, False), (40, 500, 300, False), (3, 2000, 600, True)]:
        a, b, c = operands(rng, m, n, k, dtype, trans_b=trans_b)
        per_count = []
        for t in (1, 2, 2):
            threads(t)
            per_count.append(run(a, b, c, False, trans_b, 1.0, 1.0, isa))
        check(per_count[0], reference(a, b, c, False, trans_b, 1.0, 1.0), dtype)
        results.append(per_count)
    for per_count in results:
        for r in per_count[1:]:
            np.testing.assert_array_equal(r, per_count[0])


# ------------------------------------------------------------------------------------------------ linear

def linear_ref(x, w, bias):
    out = x.astype(np.float64) @ w.astype(np.float64).T
    return out if bias is None else out + bias


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2, 5, 33), (257, 129), (0, 6)])
def test_linear_native(dtype, shape):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((19, shape[-1])).astype(dtype)
    b = rng.standard_normal(19).astype(dtype)
    out = nnkern.linear(x, w, b, backend="cpu")
    assert out.shape == shape[:-1] + (19,)
    check(out.reshape(-1, 19), linear_ref(x.reshape(-1, shape[-1]), w, b.astype(np.float64)), dtype)

    g = rng.standard_normal(out.shape).astype(dtype)
    gx, gw, gb = nnkern.linear_backward(g, x, w, (True, True, True), backend="cpu")
    g2 = g.reshape(-1, 19).astype(np.float64)
    x2 = x.reshape(-1, shape[-1]).astype(np.float64)
    check(gx.reshape(-1, shape[-1]), g2 @ w.astype(np.float64), dtype)
    check(gw, g2.T @ x2, dtype)
    check(gb, g2.sum(axis=0), dtype)
    if shape[0] == 0:
        assert gx.shape == shape and not gw.any() and not gb.any()


@pytest.mark.parametrize("isa", ISAS, indirect=True)  # conftest's fixture selects the family
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_few_rows_long_weights(isa, dtype, threads):
    """5-32 rows against rows of >= 128 inputs (the larger counts against larger weights): on avx512 float32
    the dot kernel in groups of 4 rows over L1-sized blocks of W's rows (nothing packed or cached). Rows,
    columns and depths around the groups, the blocks and the 64-column tasks; each row's result has the
    same bits as that row alone (the path for 1-4 rows) and for every thread count."""
    rng = np.random.default_rng(15)
    for m, n, k in [(5, 3, 128), (6, 65, 129), (7, 64, 200), (8, 130, 256), (9, 17, 1000), (13, 1, 300),
                    (16, 129, 131), (16, 520, 260), (17, 600, 450), (31, 70, 256), (32, 513, 511)]:
        x = rng.standard_normal((m, k)).astype(dtype)
        w = rng.standard_normal((n, k)).astype(dtype)
        b = rng.standard_normal(n).astype(dtype)
        outs = []
        for t in (1, 2, 3):
            threads(t)
            outs.append(nnkern.linear(x, w, b, backend="cpu"))
        alone = np.concatenate([nnkern.linear(x[i:i + 1], w, b, backend="cpu") for i in range(m)])
        check(outs[0], linear_ref(x, w, b.astype(np.float64)), dtype)
        for o in outs[1:]:
            np.testing.assert_array_equal(o, outs[0])
        weight_bytes = n * k * 4
        if isa == "avx512" and dtype == np.float32 and (m <= 8 or (m <= 16 and weight_bytes >= 512 << 10) or
                                                          (m <= 32 and weight_bytes >= 1 << 20)):
            np.testing.assert_array_equal(outs[0], alone)


def test_linear_common_call_skips_the_checks_with_the_same_result(monkeypatch):
    """NumPy float arrays of one dtype with fitting shapes go straight to the native linear; the result
    equals the checked path's, and whatever the common path declines still gets the checked path's
    answers and errors."""
    from nnkern.functional import basic
    rng = np.random.default_rng(16)
    cases = []
    for dtype in DTYPES:
        for xs in [(7,), (3, 7), (2, 5, 7)]:
            x = rng.standard_normal(xs).astype(dtype)
            w = rng.standard_normal((4, 7)).astype(dtype)
            for b in (None, rng.standard_normal(4).astype(dtype)):
                for backend in (None, "cpu", "auto"):
                    assert basic._linear_native(x, w, b, backend) is not None
                    cases.append((x, w, b, backend, nnkern.linear(x, w, b, backend=backend)))
    x32 = np.ones((2, 3), np.float32)
    declined = [(x32, np.ones((4, 3)), None, None),                   # mixed dtypes: the checked path's error
                (x32, np.ones((4, 2), np.float32), None, None),       # shapes that do not fit
                (x32, np.ones((4, 3), np.float32), np.ones(3, np.float32), None),
                (x32.tolist(), np.ones((4, 3), np.float32), None, None),
                (x32, np.ones((4, 3), np.float32), None, "numpy"),
                (np.ones((2, 0), np.float32), np.ones((4, 0), np.float32), None, None)]
    for x, w, b, backend in declined:
        assert basic._linear_native(x, w, b, backend) is None
    monkeypatch.setattr(basic, "_linear_native", lambda *args: None)
    for x, w, b, backend, fast in cases:
        np.testing.assert_array_equal(fast, nnkern.linear(x, w, b, backend=backend))
        assert fast.dtype == x.dtype and fast.shape == x.shape[:-1] + (4,)


def test_linear_backward_mask():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    w = rng.standard_normal((3, 6)).astype(np.float32)
    g = rng.standard_normal((4, 3)).astype(np.float32)
    for mask in [(True, False, False), (False, True, False), (False, False, True)]:
        res = nnkern.linear_backward(g, x, w, mask, backend="cpu")
        assert [r is not None for r in res] == list(mask)


def test_linear_same_bits_for_any_thread_count(threads):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((300, 257)).astype(np.float32)
    w = rng.standard_normal((190, 257)).astype(np.float32)
    b = rng.standard_normal(190).astype(np.float32)
    g = rng.standard_normal((300, 190)).astype(np.float32)
    runs = []
    for t in (1, 2, 2):
        threads(t)
        runs.append((nnkern.linear(x, w, b, backend="cpu"),) +
                    tuple(nnkern.linear_backward(g, x, w, (True, True, True), backend="cpu")))
    for r in runs[1:]:
        for got, first in zip(r, runs[0]):
            np.testing.assert_array_equal(got, first)


# --------------------------------------------------------------------------- PreparedA (conv weights)
# `_cpu._test_prepared_a(a, b, c, alpha, beta, bias, isa, source, row_bias)` packs a once and multiplies it by b as
# the convolutions do. On avx512 float32, a b with contiguous rows is read in place by the strided kernel (no
# packing), row tile by row tile ('resident') or panel by panel with the next panel prefetched ('streamed'); b with
# other strides, and the other families, pack b. Every way must give gemm()'s bits, and with a row bias (a
# convolution's, added in the strided kernel's last stores or in a pass over C) gemm()'s result plus that bias.
PREPARED_SHAPES = [(1, 1, 1), (13, 31, 7), (14, 32, 512), (15, 33, 513), (29, 65, 1030), (64, 200, 256),
                   (6, 97, 25), (28, 64, 3)]


def lined_up_views(b):
    """Copies of b whose rows are a whole number of 64-byte lines apart, starting at offsets 1, 5, 9 and 15
    elements (float32; 1 and 7 for float64) into a line: the strided path then starts its first column panel
    short, so that the later ones load whole lines."""
    k, n = b.shape
    per_line = 64 // b.itemsize
    ld = -(-(n + per_line) // per_line) * per_line
    views = []
    for offset in ((1, 5, 9, 15) if per_line == 16 else (1, 7)):
        buf = np.empty(k * ld + 2 * per_line, b.dtype)
        start = (-(buf.ctypes.data // b.itemsize)) % per_line + offset
        v = buf[start:start + k * ld].reshape(k, ld)[:, :n]
        v[...] = b
        assert v.ctypes.data % 64 == offset * b.itemsize and v.strides[0] % 64 == 0
        views.append(v)
    return views


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("source", ["resident", "streamed"])
def test_prepared_a_matches_gemm_bits(isa, dtype, source):
    rng = np.random.default_rng(11)
    for m, n, k in PREPARED_SHAPES:
        a, b, c = operands(rng, m, n, k, dtype)
        bias = rng.standard_normal(n).astype(dtype)
        for alpha, beta, bb in ((1.0, 0.0, None), (0.5, -1.5, bias)):
            want = run(a, b, c, False, False, alpha, beta, isa, bb)
            check(want, reference(a, b, c, False, False, alpha, beta, bb), dtype)
            # b's rows contiguous (in place on avx512), a row slice of a wider matrix (ldb > n, unaligned start),
            # a column-strided view (packed), and rows a whole number of lines apart at offsets into a line
            wide = rng.standard_normal((k, n + 37)).astype(dtype)
            wide[:, 5:5 + n] = b
            row_bias = rng.standard_normal(m).astype(dtype)
            want_rows = want + row_bias[:, None]  # one rounding per element, after the rest
            for bv in (b, wide[:, 5:5 + n], np.asfortranarray(b), *lined_up_views(b)):
                got = _cpu._test_prepared_a(a, bv, c, alpha, beta, bb, isa, source)
                assert np.array_equal(got, want), (m, n, k, alpha, beta)
                got = _cpu._test_prepared_a(a, bv, c, alpha, beta, bb, isa, source, row_bias)
                assert np.array_equal(got, want_rows), (m, n, k, alpha, beta, "row_bias")


def test_prepared_a_rejects_bad_source():
    a = np.ones((2, 2), np.float32)
    with pytest.raises(ValueError, match="source"):
        _cpu._test_prepared_a(a, a, a, 1.0, 0.0, None, ISAS[0], "sideways")


def test_linear_backward_common_call_skips_the_checks_with_the_same_result(monkeypatch):
    """linear_backward's common call (NumPy float arrays of one dtype, shapes that fit) goes straight to
    the native function; results and errors equal the checked path's."""
    from nnkern.functional import _common
    rng = np.random.default_rng(17)
    checked_calls = checked_path_calls(monkeypatch)
    cases = []
    for dtype in DTYPES:
        for xs in [(7,), (3, 7), (2, 5, 7)]:
            x = rng.standard_normal(xs).astype(dtype)
            w = rng.standard_normal((4, 7)).astype(dtype)
            g = rng.standard_normal(xs[:-1] + (4,)).astype(dtype)
            for mask in [(True, True, True), (False, True, False), [True, False, True]]:
                for backend in (None, "cpu", "auto"):
                    cases.append((g, x, w, mask, backend, nnkern.linear_backward(g, x, w, mask, backend=backend)))
    assert cases and not checked_calls  # every call above took the common path
    x32, w32 = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)
    bad = [(np.ones((2, 5), np.float32), x32, w32, (True,) * 3),   # grad_output of the wrong shape
           (np.ones((2, 4), np.float32), x32, w32, (True, True)),   # a mask of two flags
           (np.ones((2, 4)), x32, w32, (True,) * 3)]                # mixed dtypes
    errors = []
    for g, x, w, mask in bad:
        with pytest.raises((ValueError, TypeError)) as info:
            nnkern.linear_backward(g, x, w, mask)
        errors.append((g, x, w, mask, type(info.value), str(info.value)))
    monkeypatch.setattr(_common, "native_op", lambda *args: None)
    for g, x, w, mask, backend, fast in cases:
        checked = nnkern.linear_backward(g, x, w, mask, backend=backend)
        for a, b in zip(fast, checked):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a, b)
                assert a.dtype == b.dtype and a.shape == b.shape
    for g, x, w, mask, kind, message in errors:
        with pytest.raises(kind) as info:
            nnkern.linear_backward(g, x, w, mask)
        assert str(info.value) == message
