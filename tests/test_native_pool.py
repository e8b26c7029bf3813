"""Native pooling kernels: vector bodies and their tails, borders, PyTorch's max-pool index and NaN rules,
divisors, every kernel family, thread counts 1 and 2, bit-identical reruns."""
import contextlib

import numpy as np
import pytest

import nnkern as nk
import nnkern._cpu as _cpu
from nnkern.backends import cpu  # noqa: F401  (selects the family from NNKERN_ISA)
from helpers import checked_path_calls


@contextlib.contextmanager
def family(isa):
    before = _cpu.isa()
    _cpu.select_isa(isa)
    try:
        yield
    finally:
        _cpu.select_isa(before)


@contextlib.contextmanager
def threads(n):
    before = _cpu.get_num_threads()
    _cpu.set_num_threads(n)
    try:
        yield
    finally:
        _cpu.set_num_threads(before)


ISAS = _cpu.supported_isas()


def rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def close(actual, expected, dtype):
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


# widths around the 8- and 16-output vector blocks, with and without padding and ceil_mode
MAX_CASES = [(3, 2, 1, 1, False), (3, 2, 0, 1, True), (2, 2, 0, 1, False), (3, 1, 1, 1, False),
             (2, 1, 0, 2, False), (3, 2, 1, 2, True), (5, 2, 2, 1, False)]
WIDTHS = [1, 3, 7, 16, 17, 31, 33, 34, 35, 47, 66, 80, 112]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k,s,p,d,ceil", MAX_CASES)
def test_max_pool_widths(isa, k, s, p, d, ceil):
    rng = np.random.default_rng(1)
    for w in WIDTHS:
        if w + 2 * p < d * (k - 1) + 1 or p > k // 2:
            continue
        x = rand(rng, (2, 3, 5, w))
        args = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
        ref_out, ref_idx = nk.max_pool2d(x.astype(np.float64), return_indices=True, backend="numpy", **args)
        with family(isa):
            out, idx = nk.max_pool2d(x, return_indices=True, backend="cpu", **args)
        np.testing.assert_array_equal(idx, ref_idx)
        close(out, ref_out, np.float32)


@pytest.mark.parametrize("isa", ISAS)
def test_max_pool_ties_nan_and_inf(isa):
    """Ties keep the first maximum, the last NaN of a window wins, an all -inf window keeps its first element."""
    rng = np.random.default_rng(2)
    x = rng.integers(-2, 3, size=(2, 3, 9, 40)).astype(np.float32)  # many ties
    x[0, 0, 4, 5:30:3] = np.nan
    x[0, 1, 2:5, 10:20] = np.nan
    x[1, 2] = -np.inf
    x[1, 1, :, 7] = np.inf
    for args in [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, stride=2),
                 dict(kernel_size=3, stride=1, padding=1, dilation=2)]:
        ref_out, ref_idx = nk.max_pool2d(x.astype(np.float64), return_indices=True, backend="numpy", **args)
        with family(isa):
            out, idx = nk.max_pool2d(x, return_indices=True, backend="cpu", **args)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(out, ref_out.astype(np.float32))


def bits(a):
    """The raw bits of a float array: equal bits, not just equal values (signed zeros, NaN payloads)."""
    return np.ascontiguousarray(a).view(np.uint32 if a.dtype == np.float32 else np.uint64)


@pytest.mark.parametrize("isa", ISAS)
def test_max_pool_values_only_same_bits(isa):
    """Without return_indices the kernels skip the indices: the values keep their bits (first of tied
    signed zeros, NaN, all -inf windows), for every window shape and width."""
    rng = np.random.default_rng(7)
    for k, s, p, d, ceil in MAX_CASES:
        for w in WIDTHS:
            if w + 2 * p < d * (k - 1) + 1 or p > k // 2:
                continue
            x = rng.integers(-1, 2, size=(2, 3, 7, w)).astype(np.float32)
            x[x == 0] = rng.choice(np.array([0.0, -0.0], np.float32), size=int((x == 0).sum()))
            x[0, 1, 2, ::5] = np.nan
            x[1, 0] = -np.inf
            args = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
            with family(isa):
                out_i, _ = nk.max_pool2d(x, return_indices=True, backend="cpu", **args)
                out = nk.max_pool2d(x, backend="cpu", **args)
            np.testing.assert_array_equal(bits(out), bits(out_i), err_msg=f"{args} width {w}")


def test_max_pool_window_cache_keeps_the_checks():
    """The cache of checked windows serves plain ints and pairs alone: bools, floats and bad sizes still
    fail with the op's message after the same window passed."""
    x = rand(np.random.default_rng(8), (1, 2, 9, 9))
    nk.max_pool2d(x, 1)
    nk.max_pool2d(x, [3, 3], (2, 2), 1)
    with pytest.raises(TypeError, match="max_pool2d: kernel_size"):
        nk.max_pool2d(x, True)
    with pytest.raises(TypeError, match="avg_pool2d: stride"):
        nk.avg_pool2d(x, 3, 2.0)
    with pytest.raises(ValueError, match="max_pool2d: padding"):
        nk.max_pool2d(x, 3, 2, 2)
    with pytest.raises(ValueError, match="avg_pool2d: output size"):
        nk.avg_pool2d(x[:, :, :2], 3)
    np.testing.assert_array_equal(nk.max_pool2d(x, np.int64(3), (2, np.int32(2)), 1), nk.max_pool2d(x, 3, 2, 1))
    with pytest.raises(TypeError, match="adaptive_avg_pool2d: output_size"):
        nk.adaptive_avg_pool2d(x, None)


@pytest.mark.parametrize("isa", ISAS)
def test_avg_pool_divisor_bits(isa):
    """float32 average pools equal PyTorch's arithmetic bit for bit: the sum from 0 in row-major tap
    order, then one division (a power-of-two divisor may multiply by its exact reciprocal)."""
    rng = np.random.default_rng(9)
    # heights of 2k+1 and 23: the rows inside the input go to the row kernel in one call per plane
    for k, w, h in [(2, 56, 5), (2, 35, 5), (2, 7, 5), (4, 37, 9), (3, 40, 7), (2, 56, 23), (2, 33, 23), (3, 17, 23)]:
        x = rand(rng, (2, 3, h, w))
        x[0, 0, 0, :4] = -0.0
        x[1, 2, h - 2, :4] = -0.0
        with family(isa):
            out = nk.avg_pool2d(x, k, k, backend="cpu")
        oh, ow = out.shape[2:]
        ref = np.zeros(out.shape, np.float32)
        for i in range(k):
            for j in range(k):
                ref = ref + x[:, :, i:i + k * oh:k, j:j + k * ow:k][:, :, :oh, :ow]
        ref = ref / np.float32(k * k)
        np.testing.assert_array_equal(bits(out), bits(ref), err_msg=f"kernel {k} width {w} height {h}")


AVG_CASES = [(2, 2, 0, False, True), (3, 2, 1, False, False), (3, 2, 1, True, True), (3, 2, 1, True, False),
             (3, 1, 1, False, True), (2, 1, 0, True, True), (4, 2, 2, True, False),
             # two columns at stride 2 under a divisor that is not a power of two (3 x 2: a division)
             ((3, 2), (1, 2), 0, False, True)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k,s,p,ceil,include", AVG_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_pool_widths(isa, k, s, p, ceil, include, dtype):
    rng = np.random.default_rng(3)
    for w in WIDTHS:
        if w + 2 * p < (k if isinstance(k, int) else k[1]):
            continue
        x = rand(rng, (2, 2, 6, w), dtype)
        args = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil, count_include_pad=include)
        ref = nk.avg_pool2d(x.astype(np.float64), backend="numpy", **args)
        g = rand(rng, ref.shape, dtype)
        ref_g = nk.avg_pool2d_backward(g.astype(np.float64), x.astype(np.float64), backend="numpy", **args)
        with family(isa):
            out = nk.avg_pool2d(x, backend="cpu", **args)
            gx = nk.avg_pool2d_backward(g, x, backend="cpu", **args)
        close(out, ref, dtype)
        close(gx, ref_g, dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (3, 3), (4, 4), (7, 7), (5, 13), (12, 12)])
def test_global_average(isa, hw):
    rng = np.random.default_rng(4)
    x = rand(rng, (3, 37) + hw)
    ref = nk.adaptive_avg_pool2d(x.astype(np.float64), 1, backend="numpy")
    with family(isa):
        out = nk.adaptive_avg_pool2d(x, 1, backend="cpu")
    close(out, ref, np.float32)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("hw", [(1, 1), (7, 7), (4, 8), (5, 13), (17, 17)])
def test_global_average_bits_do_not_depend_on_position(isa, hw):
    """The AVX-512 kernel sums planes four at a time and the last few one by one (prefetching ahead only
    for planes of up to 256 floats: 17 x 17 takes the other branch): a plane's sum has the same bits in
    either path, so a plane gives the same result wherever it starts in the input."""
    rng = np.random.default_rng(11)
    x = rng.uniform(1e3, 2e3, (1, 23) + hw).astype(np.float32)  # no cancellation: sums to any bits
    with family(isa):
        whole = nk.adaptive_avg_pool2d(x, 1, backend="cpu")
        for start in range(1, 5):
            part = nk.adaptive_avg_pool2d(np.ascontiguousarray(x[:, start:]), 1, backend="cpu")
            np.testing.assert_array_equal(part, whole[:, start:])
        one_by_one = [nk.adaptive_avg_pool2d(x[:, i:i + 1], 1, backend="cpu") for i in range(x.shape[1])]
    np.testing.assert_array_equal(np.concatenate(one_by_one, axis=1), whole)
    close(whole, nk.adaptive_avg_pool2d(x.astype(np.float64), 1, backend="numpy"), np.float32)


def test_max_pool_backward_overlapping_windows():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2, size=(2, 3, 11, 13)).astype(np.float64)  # shared maxima of overlapping windows
    args = dict(kernel_size=3, stride=1, padding=1)
    out, idx = nk.max_pool2d(x, return_indices=True, backend="cpu", **args)
    g = rand(rng, out.shape, np.float64)
    ref = nk.max_pool2d_backward(g, x, idx, backend="numpy", **args)
    close(nk.max_pool2d_backward(g, x, idx, backend="cpu", **args), ref, np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_backward_streamed(dtype):
    """A grad_input of 4 MiB and more is built plane by plane and streamed out: planes of an odd
    element count start off any vector alignment; the result equals the in-place scatter's."""
    rng = np.random.default_rng(10)
    x = rand(rng, (2, 16, 181, 183), dtype)
    args = dict(kernel_size=3, stride=2, padding=1)
    out, idx = nk.max_pool2d(x, return_indices=True, backend="cpu", **args)
    g = rand(rng, out.shape, dtype)
    ref = nk.max_pool2d_backward(g, x, idx, backend="numpy", **args)
    for n in (1, 2):
        with threads(n):
            gx = nk.max_pool2d_backward(g, x, idx, backend="cpu", **args)
        assert gx.nbytes >= 4 << 20
        close(gx, ref, dtype)
        # the same scatter per plane, in place (below the streaming size)
        np.testing.assert_array_equal(gx[:1, :2], nk.max_pool2d_backward(g[:1, :2], x[:1, :2], idx[:1, :2],
                                                                          backend="cpu", **args))


@pytest.mark.parametrize("n_threads", [1, 2])
def test_thread_counts_and_reruns(n_threads):
    rng = np.random.default_rng(6)
    x = rand(rng, (3, 5, 23, 37))
    margs = dict(kernel_size=3, stride=2, padding=1)
    aargs = dict(kernel_size=2, stride=2)
    ref_out, ref_idx = nk.max_pool2d(x.astype(np.float64), return_indices=True, backend="numpy", **margs)
    g = rand(rng, ref_out.shape)
    ref_gx = nk.max_pool2d_backward(g.astype(np.float64), x.astype(np.float64), ref_idx, backend="numpy", **margs)
    ref_avg = nk.avg_pool2d(x.astype(np.float64), backend="numpy", **aargs)
    ref_ad = nk.adaptive_avg_pool2d(x.astype(np.float64), (4, 6), backend="numpy")
    with threads(n_threads):
        runs = []
        for _ in range(2):
            out, idx = nk.max_pool2d(x, return_indices=True, backend="cpu", **margs)
            gx = nk.max_pool2d_backward(g, x, idx, backend="cpu", **margs)
            avg = nk.avg_pool2d(x, backend="cpu", **aargs)
            ad = nk.adaptive_avg_pool2d(x, (4, 6), backend="cpu")
            glob = nk.adaptive_avg_pool2d(x, 1, backend="cpu")
            runs.append((out, idx, gx, avg, ad, glob))
    np.testing.assert_array_equal(runs[0][1], ref_idx)
    close(runs[0][0], ref_out, np.float32)
    close(runs[0][2], ref_gx, np.float32)
    close(runs[0][3], ref_avg, np.float32)
    close(runs[0][4], ref_ad, np.float32)
    for a, b in zip(*runs):
        assert a.tobytes() == b.tobytes()


def test_max_pool_backward_common_call_skips_the_checks_with_the_same_result(monkeypatch):
    """max_pool2d_backward's common call (NumPy float arrays of one dtype, a batched input, int64
    indices of the right shape) goes straight to the native function; results and errors equal the
    checked path's."""
    from nnkern.functional import _common
    rng = np.random.default_rng(18)
    checked_calls = checked_path_calls(monkeypatch)
    cases = []
    for dtype in (np.float32, np.float64):
        for k, s, p, d, cm in [(2, 2, 0, 1, False), (3, 2, 1, 1, True), ((3, 2), None, (1, 0), (1, 2), False)]:
            x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
            y, idx = nk.max_pool2d(x, k, s, p, d, cm, return_indices=True)
            g = rng.standard_normal(y.shape).astype(dtype)
            for backend in (None, "cpu", "auto"):
                cases.append((g, x, idx, (k, s, p, d, cm), backend,
                              nk.max_pool2d_backward(g, x, idx, k, s, p, d, cm, backend=backend)))
    assert cases and not checked_calls  # every call above took the common path
    x = np.ones((1, 2, 4, 4), np.float32)
    _, idx = nk.max_pool2d(x, 2, return_indices=True)
    g = np.ones((1, 2, 2, 2), np.float32)
    bad = [(g, x, idx.astype(np.int32), (2,)), (g[:, :1], x, idx, (2,)), (g, x, idx, (0,)), (g, x, idx, (3, 1, 2))]
    errors = []
    for gb, xb, ib, opts in bad:
        with pytest.raises((ValueError, TypeError)) as info:
            nk.max_pool2d_backward(gb, xb, ib, *opts)
        errors.append((gb, xb, ib, opts, type(info.value), str(info.value)))
    monkeypatch.setattr(_common, "native_op", lambda *args: None)
    for g, x, idx, opts, backend, fast in cases:
        np.testing.assert_array_equal(fast, nk.max_pool2d_backward(g, x, idx, *opts, backend=backend))
        assert fast.dtype == x.dtype and fast.shape == x.shape
    for gb, xb, ib, opts, kind, message in errors:
        with pytest.raises(kind) as info:
            nk.max_pool2d_backward(gb, xb, ib, *opts)
        assert str(info.value) == message
