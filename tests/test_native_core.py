"""The native core: ISA selection, relu kernels, thread pool, FP environment, errors, GIL, fork, CUDA module."""
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import nnkern._cpu as _cpu
from nnkern.backends import cpu

SIZES = [0, 1, 15, 16, 17, 1000003]
DTYPES = [np.float32, np.float64]
INT_OF = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}


def run_python(code, **env):
    """Run `code` in a fresh interpreter with extra environment variables (None removes one)."""
    full_env = dict(os.environ)
    for key, value in env.items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=120)


def assert_same_bits(actual, expected):
    """Equal dtype, shape and bit patterns, except that any NaN matches any NaN."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(actual), nan)
    ints = INT_OF[actual.dtype]
    np.testing.assert_array_equal(actual[~nan].view(ints), expected[~nan].view(ints))


def with_specials(rng, n, dtype):
    """Normal data with NaN (both signs), +-Inf, +-0.0, +-denormals and +-max sprinkled in."""
    x = rng.standard_normal(n).astype(dtype)
    info = np.finfo(dtype)
    tiny = info.smallest_subnormal
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, tiny, -tiny, info.max, -info.max, 1, -1],
                        dtype=dtype)
    k = min(n, len(specials))
    x[rng.choice(n, size=k, replace=False)] = specials[:k]
    return x


def relu_reference(x):
    return np.where(np.isnan(x) | (x > 0), x, x.dtype.type(0))


def relu_backward_reference(grad, out):
    return np.where(out > 0, grad, grad.dtype.type(0))


@pytest.fixture
def threads():
    """Restores the thread count a test changes."""
    saved = _cpu.get_num_threads()
    yield
    _cpu.set_num_threads(saved)


# ---- ISA selection ---------------------------------------------------------

def test_isa_in_use_is_the_requested_or_the_best():
    supported = _cpu.supported_isas()
    assert supported[-1] == "scalar" and set(supported) <= {"avx512", "avx2", "scalar"}
    assert _cpu.isa() == (os.environ.get("NNKERN_ISA") or supported[0])
    assert cpu.isa() == _cpu.isa()


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
def test_nnkern_isa_forces_the_family(isa):
    if isa not in _cpu.supported_isas():
        pytest.skip(f"this CPU lacks {isa}")
    proc = run_python("import nnkern._cpu as c; print(c.isa())", NNKERN_ISA=isa)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == isa


def test_bogus_isa_is_a_clear_error_at_import():
    proc = run_python("import nnkern", NNKERN_ISA="sse9")
    assert proc.returncode != 0
    assert "ValueError" in proc.stderr and "NNKERN_ISA='sse9'" in proc.stderr
    assert "this CPU supports: " + ", ".join(_cpu.supported_isas()) in proc.stderr


def test_unsupported_isa_is_a_clear_error_at_import():
    missing = [isa for isa in ("avx512", "avx2") if isa not in _cpu.supported_isas()]
    if not missing:
        pytest.skip("this CPU supports every family")
    proc = run_python("import nnkern", NNKERN_ISA=missing[0])
    assert proc.returncode != 0
    assert f"NNKERN_ISA='{missing[0]}' is not supported by this CPU" in proc.stderr


# ---- relu kernels ----------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_relu_matches_numpy_bit_for_bit(rng, n, dtype):
    x = with_specials(rng, n, dtype)
    poison = np.full(n, np.nan, dtype)  # freed just before the call: its memory may be reused for y
    del poison
    y = cpu.relu(x)
    assert_same_bits(y, relu_reference(x))
    assert y.flags.c_contiguous and not np.shares_memory(x, y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_relu_backward_matches_numpy_bit_for_bit(rng, n, dtype):
    out = relu_reference(with_specials(rng, n, dtype))
    grad = with_specials(rng, n, dtype)
    assert_same_bits(cpu.relu_backward(grad, out), relu_backward_reference(grad, out))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_special_values(dtype):
    info = np.finfo(dtype)
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, info.smallest_subnormal, -1.0], dtype)
    y = cpu.relu(x)
    assert np.isnan(y[:2]).all()
    assert y[2] == np.inf and y[3] == 0 and y[4] == 0 and y[5] == 0 and y[7] == 0
    assert not np.signbit(y[3:6]).any()  # relu(-0.0) = +0.0
    assert y[6] == info.smallest_subnormal  # a denormal is positive: kept even though kernels run with DAZ
    grad = np.full(x.shape, 2.0, dtype)
    np.testing.assert_array_equal(cpu.relu_backward(grad, y), [0, 0, 2, 0, 0, 0, 2, 0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(rng, dtype):
    base = rng.standard_normal((64, 33)).astype(dtype)
    for x in (base[:, ::2], base.T, base[::-1, ::-3], base[5]):
        y = cpu.relu(x)
        assert y.shape == x.shape and y.dtype == dtype and y.flags.c_contiguous
        assert_same_bits(y, relu_reference(np.ascontiguousarray(x)))
        grad = rng.standard_normal(x.shape).astype(dtype)[::-1]
        assert_same_bits(cpu.relu_backward(grad, y), relu_backward_reference(grad, y))


def test_zero_dim_and_empty_shapes():
    assert cpu.relu(np.array(-3.0)).shape == ()
    assert cpu.relu(np.array(3.0, np.float32)) == 3.0
    assert cpu.relu(np.zeros((0, 5), np.float32)).shape == (0, 5)


def test_bad_dtypes_and_shapes_raise():
    with pytest.raises(TypeError, match="float32 or float64, got int64"):
        cpu.relu(np.arange(3, dtype=np.int64))
    with pytest.raises(TypeError, match="one dtype, got float32 and float64"):
        cpu.relu_backward(np.ones(3, np.float32), np.ones(3))
    with pytest.raises(ValueError, match=r"one shape, got \(3,\) and \(4,\)"):
        cpu.relu_backward(np.ones(3), np.ones(4))


def test_repeated_calls_are_bit_identical(rng, threads):
    x = rng.standard_normal(3_000_001).astype(np.float32)
    for n_threads in (1, 2, 3):
        _cpu.set_num_threads(n_threads)
        first = cpu.relu(x)
        for _ in range(3):
            assert_same_bits(cpu.relu(x), first)


# ---- thread pool -------------------------------------------------------------

@pytest.mark.parametrize("n_threads", [1, 2, 3, 5])
def test_parallel_split_is_static_and_covers_every_task(threads, n_threads):
    _cpu.set_num_threads(n_threads)
    for n_tasks in (0, 1, 2, 3, 7, 100, 1001):
        ranges = _cpu._test_parallel_ranges(n_tasks)
        chunks = min(n_threads, n_tasks)
        assert ranges == [(n_tasks * c // chunks, n_tasks * (c + 1) // chunks) for c in range(chunks)]
        assert ranges == _cpu._test_parallel_ranges(n_tasks)


def _worker_tids():
    """The pool's worker threads (named nnkern-worker) of this process."""
    tids = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() == "nnkern-worker":
                    tids.append(int(tid))
        except OSError:  # a thread that just ended
            pass
    return tids


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two CPUs and CPU affinity")
def test_worker_steps_off_the_callers_cpu(threads):
    """A worker that the scheduler left on its caller's CPU moves to the caller's other CPUs when it takes
    a job (the two would otherwise share one CPU while another idles), within the caller's CPU mask."""
    _cpu.set_num_threads(2)
    _cpu._test_parallel_ranges(100)  # starts the worker
    workers = _worker_tids()
    assert len(workers) == 1
    saved = os.sched_getaffinity(0)
    a, b = sorted(saved)[:2]
    try:
        for _ in range(50):
            os.sched_setaffinity(0, {a})           # this thread onto CPU a (0: the calling thread)
            os.sched_setaffinity(workers[0], {a})  # and the worker with it
            os.sched_setaffinity(0, {a, b})
            _cpu._test_parallel_ranges(100)
            # the job may be over before the worker, sharing this CPU, ran: give it the CPU a while
            deadline = time.monotonic() + 0.05
            while os.sched_getaffinity(workers[0]) != {b} and time.monotonic() < deadline:
                time.sleep(0.001)
            if os.sched_getaffinity(workers[0]) == {b}:
                break
        else:
            pytest.fail(f"the worker stayed on the caller's CPU: mask {os.sched_getaffinity(workers[0])}")
    finally:
        os.sched_setaffinity(0, saved)
        os.sched_setaffinity(workers[0], saved)
    assert _cpu._test_parallel_ranges(7) == [(0, 3), (3, 7)]


def test_set_and_get_num_threads(threads):
    _cpu.set_num_threads(3)
    assert _cpu.get_num_threads() == 3 and cpu.get_num_threads() == 3
    for bad in (0, -1):
        with pytest.raises(ValueError, match="set_num_threads: n must be between 1 and"):
            _cpu.set_num_threads(bad)
    assert _cpu.get_num_threads() == 3


def test_default_threads_follow_affinity_and_env():
    code = "import nnkern._cpu as c; print(c.get_num_threads())"
    proc = run_python(code, NNKERN_NUM_THREADS=None)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == len(os.sched_getaffinity(0))
    proc = run_python(code, NNKERN_NUM_THREADS="3")
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == 3
    proc = run_python(code, NNKERN_NUM_THREADS="many")
    assert proc.returncode != 0 and "NNKERN_NUM_THREADS must be an integer" in proc.stderr


def test_set_num_threads_while_other_threads_compute(rng, threads):
    x = rng.standard_normal(1_000_000).astype(np.float32)
    expected = relu_reference(x)
    failures = []
    stop = threading.Event()

    def compute():
        while not stop.is_set():
            if not np.array_equal(cpu.relu(x), expected):
                failures.append("mismatch")

    workers = [threading.Thread(target=compute) for _ in range(2)]
    for w in workers:
        w.start()
    for i in range(200):
        _cpu.set_num_threads(1 + i % 3)
    stop.set()
    for w in workers:
        w.join()
    assert not failures


def test_many_python_threads_match_serial_results(rng):
    inputs = [rng.standard_normal(200_003 + 1000 * i).astype(DTYPES[i % 2]) for i in range(8)]
    serial = [cpu.relu(x) for x in inputs]
    results = [None] * len(inputs)

    def work(i):
        for _ in range(10):
            results[i] = cpu.relu(inputs[i])

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for got, want in zip(results, serial):
        assert_same_bits(got, want)


def _max_main_thread_gap(native_call):
    """Longest pause of a Python loop in this thread while another thread runs native_call."""
    started = threading.Event()

    def target():
        started.set()
        native_call()

    worker = threading.Thread(target=target)
    worker.start()
    started.wait()
    last, gap = time.perf_counter(), 0.0
    while worker.is_alive():
        now = time.perf_counter()
        gap, last = max(gap, now - last), now
    worker.join()
    return gap


@pytest.mark.skipif(_cpu.build_info()["sanitize"], reason="timing test: sanitizer builds are several times slower")
def test_native_calls_release_the_gil(rng):
    # A call that held the GIL would stall this thread for the whole call, on every try; on a busy
    # machine the scheduler alone can stall it once, so the best of three tries is what counts.
    assert min(_max_main_thread_gap(lambda: _cpu.peak_gflops(1, 0.5)) for _ in range(3)) < 0.2
    x = rng.standard_normal(1 << 25).astype(np.float32)
    start = time.perf_counter()
    cpu.relu(x)
    one_call = time.perf_counter() - start
    gaps = [_max_main_thread_gap(lambda: [cpu.relu(x) for _ in range(5)]) for _ in range(3)]
    assert min(gaps) < max(0.5 * one_call, 0.006), (gaps, one_call)


def _relu_in_child(queue):
    x = np.linspace(-1, 1, 1_000_001, dtype=np.float32)
    queue.put(bool(np.array_equal(cpu.relu(x), np.maximum(x, 0) + np.float32(0))))


def test_fork_after_using_the_pool(threads):
    _cpu.set_num_threads(2)
    cpu.relu(np.ones(1_000_000, np.float32))  # the pool's threads exist now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_relu_in_child, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) is True


def test_fork_while_another_thread_computes(threads):
    _cpu.set_num_threads(2)
    x = np.ones(4_000_000, np.float32)
    stop = threading.Event()

    def compute():
        while not stop.is_set():
            cpu.relu(x)

    busy = threading.Thread(target=compute)
    busy.start()
    try:
        time.sleep(0.05)
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_relu_in_child, args=(queue,))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        assert queue.get(timeout=5) is True
    finally:
        stop.set()
        busy.join()


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_repeated_calls_do_not_grow_memory(rng):
    x = rng.standard_normal(1_000_000).astype(np.float32)
    for _ in range(20):
        cpu.relu_backward(x, cpu.relu(x))
    before = _rss_bytes()
    for _ in range(300):
        cpu.relu_backward(x, cpu.relu(x))
    assert _rss_bytes() - before < 16 << 20


def test_workspace_cache_is_reused_and_emptied():
    cpu.empty_cache()
    assert _cpu.workspace_bytes() == 0
    assert _cpu._test_workspace(8 << 20) and _cpu._test_workspace(100)
    held = _cpu.workspace_bytes()
    assert held >= 8 << 20
    assert _cpu._test_workspace(8 << 20) and _cpu.workspace_bytes() == held  # the same buffer again
    cpu.empty_cache()
    assert _cpu.workspace_bytes() == 0


# ---- floating-point environment and errors -----------------------------------

def test_ftz_inside_kernels_and_restored_after(threads):
    tiny = np.float32(1e-38)
    assert tiny * np.float32(1e-3) != 0  # denormal arithmetic in Python before
    for n_threads in (1, 2):
        _cpu.set_num_threads(n_threads)
        assert _cpu._test_ftz_inside()
    cpu.relu(np.ones(1_000_000, np.float32))
    assert tiny * np.float32(1e-3) != 0  # ... and still after native calls on this thread


@pytest.mark.parametrize("kind, error", [("value", ValueError), ("type", TypeError), ("memory", MemoryError)])
def test_cpp_exceptions_map_to_python(kind, error):
    with pytest.raises(error):
        _cpu._test_raise(kind)


# ---- backend module, probes, build info --------------------------------------

def test_backend_module_surface():
    assert {"relu", "relu_backward"} <= cpu.NATIVE_OPS
    info = cpu.build_info()
    assert info["version"] == "0.1.0" and info["build_type"] and info["compiler"]
    assert "-march=native" not in str(info)


def test_probes_measure_and_validate():
    assert _cpu.peak_gflops(1, 0.05) > 0
    assert _cpu.copy_bandwidth(2, 1 << 22) > 0
    with pytest.raises(ValueError, match="threads"):
        _cpu.peak_gflops(0)
    with pytest.raises(ValueError, match="seconds"):
        _cpu.peak_gflops(1, 0.0)
    with pytest.raises(ValueError, match="nbytes"):
        _cpu.copy_bandwidth(1, 0)


def test_cuda_module_without_a_device_reports_zero():
    cuda_native = pytest.importorskip("nnkern._cuda", reason="built without CUDA")
    from nnkern.backends import cuda

    assert cuda.compiled()
    assert cuda_native.runtime_version() >= 13000
    count = cuda_native.device_count()
    if count == 0:
        ok, reason = cuda.available()
        assert not ok and "no CUDA device" in reason
        with pytest.raises(ValueError):
            cuda_native.device_name(0)
    else:
        assert cuda_native._test_kernel(1000) == [2 * i for i in range(1000)]
