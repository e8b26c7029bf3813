"""Hostile inputs: each gives the error API.md promises or the IEEE-correct result, never a crash or a
silent wrong answer. Cases that could take the process down run in a child process.

Backends: ``cpu`` (native) and ``numpy`` (the reference); dropout also on the CUDA emulator.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nnkern as nk
from nnkern import _cpu, backends

f32, f64 = np.float32, np.float64
BACKENDS = ["cpu", "numpy"]
SANITIZED = bool(_cpu.build_info()["sanitize"])


def rand(rng, *shape, dtype=f32):
    return rng.standard_normal(shape).astype(dtype)


def run_child(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; the process must exit normally."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"child exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


# ------------------------------------------------------------------ batch_norm: aliased running statistics

def _bn_args(rng):
    x = rand(rng, 4, 3, 5, 5)
    return x, rand(rng, 3), np.abs(rand(rng, 3)) + 0.5, rand(rng, 3), rand(rng, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_running_mean_is_running_var(rng, backend):
    x, rm, _, w, b = _bn_args(rng)
    before = rm.copy()
    with pytest.raises(ValueError) as info:
        nk.batch_norm(x, rm, rm, w, b, training=True, backend=backend)
    msg = str(info.value)
    assert "running_mean" in msg and "running_var" in msg, msg
    np.testing.assert_array_equal(rm, before)  # raised before anything was written


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stat", ["running_mean", "running_var"])
@pytest.mark.parametrize("other", ["input", "weight", "bias", "residual"])
def test_batch_norm_running_stat_overlapping_an_input(rng, backend, stat, other):
    x, rm, rv, w, b = _bn_args(rng)
    res = rand(rng, *x.shape)
    args = {"input": x, "weight": w, "bias": b, "residual": res}
    # the statistic is a view into the other argument's memory (a strided one for the input)
    host = args[other]
    view = host.reshape(-1)[1:7:2] if other in ("input", "residual") else host
    if stat == "running_var":
        host[...] = np.abs(host) + 0.5
    stats = {"running_mean": rm, "running_var": rv, stat: view}
    x_before = x.copy()
    with pytest.raises(ValueError) as info:
        nk.batch_norm(x, stats["running_mean"], stats["running_var"], w, b, training=True,
                      activation="relu", residual=res, backend=backend)
    msg = str(info.value)
    assert stat in msg and other in msg, msg
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_eval_reads_aliased_statistics_like_copies(rng, backend):
    """Without training nothing is written: aliasing is harmless and gives the result of copies."""
    x, _, _, w, b = _bn_args(rng)
    x[0, 0, 0, :3] = np.abs(x[0, 0, 0, :3]) + 0.5
    stats = x[0, 0, 0, :3]                                   # a view of x, used as both statistics
    expected = nk.batch_norm(x.copy(), stats.copy(), stats.copy(), w, b, backend=backend)
    out = nk.batch_norm(x, stats, stats, w, b, backend=backend)
    np.testing.assert_array_equal(out, expected)


def test_batch_norm_overlap_check_spares_separate_arrays(rng):
    """Distinct slices of one buffer that do not overlap are fine (a flat parameter buffer)."""
    x, _, _, w, b = _bn_args(rng)
    buf = np.concatenate([np.zeros(3, f32), np.ones(3, f32)])
    ref_m, ref_v = buf[:3].copy(), buf[3:].copy()
    out = nk.batch_norm(x, buf[:3], buf[3:], w, b, training=True)
    expected = nk.batch_norm(x, ref_m, ref_v, w, b, training=True, backend="numpy")
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(buf[:3], ref_m, rtol=1e-5)
    np.testing.assert_allclose(buf[3:], ref_v, rtol=1e-5)


# ------------------------------------------------------------------ dropout: x * 0 at dropped positions

DROPOUT_BACKENDS = BACKENDS + (["cuda_emulated"] if backends.has_op("cuda_emulated", "dropout") else [])
SPECIALS = [np.nan, np.inf, -np.inf, -1.5, 2.0, -0.0, 0.0]


def _special_input(rng, dtype, n=4096):
    x = rand(rng, n, dtype=dtype)
    x[rng.choice(n, n // 2, replace=False)] = rng.choice(SPECIALS, n // 2)
    return x


def _same_bits(a, b):
    """Equal values, NaN where the other is NaN, and the same sign of zero."""
    a, b = np.asarray(a), np.asarray(b)
    return (a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
            and np.array_equal(np.signbit(a[~np.isnan(a)]), np.signbit(b[~np.isnan(b)])))


@pytest.mark.parametrize("backend", DROPOUT_BACKENDS)
@pytest.mark.parametrize("dtype", [f32, f64])
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_drops_to_x_times_zero(rng, backend, dtype, p):
    """PyTorch computes x * mask / (1 - p): a dropped NaN or +-Inf gives NaN, a dropped -1.5 gives -0."""
    x = _special_input(rng, dtype)
    out, mask = nk.dropout(x, p, seed=7, return_mask=True, backend=backend)
    ref_out, ref_mask = nk.dropout(x, p, seed=7, return_mask=True, backend="numpy")
    np.testing.assert_array_equal(mask, ref_mask)
    assert 0 < mask.sum() < mask.size
    with np.errstate(invalid="ignore"):
        dropped = x * dtype(0)
    assert _same_bits(out[~mask], dropped[~mask])
    assert _same_bits(out, ref_out)
    g = _special_input(rng, dtype)
    gx = nk.dropout_backward(g, mask, p, backend=backend)
    with np.errstate(invalid="ignore"):
        assert _same_bits(gx[~mask], (g * dtype(0))[~mask])
    assert _same_bits(gx, nk.dropout_backward(g, mask, p, backend="numpy"))


@pytest.mark.parametrize("dtype", [f32, f64])
def test_dropout_edge_probabilities(rng, dtype):
    x = _special_input(rng, dtype, 256)
    with np.errstate(invalid="ignore"):
        zeroed = x * dtype(0)
    out, mask = nk.dropout(x, 1.0, return_mask=True)
    assert _same_bits(out, zeroed) and not mask.any()
    assert _same_bits(nk.dropout_backward(x, mask, 1.0), zeroed)
    for kwargs in ({"p": 0.0}, {"p": 0.5, "training": False}, {"p": 1.0, "training": False}):
        assert _same_bits(nk.dropout(x, **kwargs), x)
    assert _same_bits(nk.dropout_backward(x, np.ones(x.shape, bool), 0.0), x)


def test_dropout_matches_torch_semantics(rng):
    """Against torch itself: p=1 and training=False bit for bit; for 0 < p < 1 torch's own mask
    (aten.native_dropout) and nnkern's obey the same rule x * mask * scale at dropped positions."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = _special_input(rng, f32)
    t = torch.from_numpy(x)
    assert _same_bits(nk.dropout(x, 1.0), F.dropout(t, 1.0, True).numpy())
    assert _same_bits(nk.dropout(x, 0.5, training=False), F.dropout(t, 0.5, False).numpy())
    t_out, t_mask = torch.ops.aten.native_dropout(t, 0.5, True)
    t_out, t_mask = t_out.numpy(), t_mask.numpy()
    out, mask = nk.dropout(x, 0.5, seed=3, return_mask=True)
    with np.errstate(invalid="ignore"):
        zeroed = x * f32(0)
    assert _same_bits(t_out[~t_mask], zeroed[~t_mask])
    assert _same_bits(out[~mask], zeroed[~mask])
    # and the gradient: torch's backward of dropout is grad * mask * scale
    tx = t.clone().requires_grad_()
    g = _special_input(rng, f32)
    F.dropout(tx, 1.0, True).backward(torch.from_numpy(g))
    assert _same_bits(nk.dropout_backward(g, np.zeros(g.shape, bool), 1.0), tx.grad.numpy())


# ------------------------------------------------------------------ integer options out of range

def _x(rng):
    return rand(rng, 1, 2, 6, 6)


HUGE_OPTIONS = [
    ("conv2d stride 2**63", "stride", lambda x: nk.conv2d(x, x[:, :, :3, :3], stride=2**63)),
    ("conv2d stride 10**30", "stride", lambda x: nk.conv2d(x, x[:, :, :3, :3], stride=(1, 10**30))),
    ("conv2d padding 2**62", "padding", lambda x: nk.conv2d(x, x[:, :, :3, :3], padding=2**62)),
    ("conv2d dilation 2**61", "dilation", lambda x: nk.conv2d(x, x[:, :, :3, :3], dilation=2**61)),
    ("conv2d groups 10**30", "groups", lambda x: nk.conv2d(x, x[:, :, :3, :3], groups=10**30)),
    ("conv2d same padding of a huge kernel", "padding", lambda x: nk.conv2d(
        x, np.broadcast_to(f32(1), (1, 2, 1, 2**20 + 1)), dilation=2**45, padding="same")),
    ("conv1d stride 2**63", "stride", lambda x: nk.conv1d(x[0], x[0][:, :, :3], stride=2**63)),
    ("conv1d padding -10**30", "padding", lambda x: nk.conv1d(x[0], x[0][:, :, :3], padding=[-10**30])),
    ("conv2d_backward stride", "stride", lambda x: nk.conv2d_backward(x, x, x[:, :, :3, :3], stride=2**64)),
    ("max_pool2d kernel 2**62", "kernel_size", lambda x: nk.max_pool2d(x, (2**62, 2))),
    ("max_pool2d stride 2**63", "stride", lambda x: nk.max_pool2d(x, 2, stride=2**63)),
    ("max_pool2d dilation 10**30", "dilation", lambda x: nk.max_pool2d(x, 2, dilation=10**30)),
    ("avg_pool2d stride 10**30", "stride", lambda x: nk.avg_pool2d(x, 2, stride=10**30)),
    ("avg_pool2d_backward kernel", "kernel_size", lambda x: nk.avg_pool2d_backward(x, x, 2**70)),
    ("adaptive 10**30", "output shape", lambda x: nk.adaptive_avg_pool2d(x, 10**30)),
    ("adaptive (1, 2**62)", "output shape", lambda x: nk.adaptive_avg_pool2d(x, (1, 2**62))),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("what,thunk", [c[1:] for c in HUGE_OPTIONS], ids=[c[0] for c in HUGE_OPTIONS])
def test_huge_integer_options_raise_value_error(rng, backend, what, thunk):
    with nk.use_backend(backend):
        with pytest.raises(ValueError) as info:
            thunk(_x(rng))
    assert what in str(info.value), str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_largest_allowed_option_still_computes(rng, backend):
    """2**60 is accepted: a stride that large gives one output position per axis, a dilation that
    large on a 1-tap kernel changes nothing, as in PyTorch."""
    x = _x(rng)
    w = rand(rng, 3, 2, 3, 3)
    corner = x[:, :, :3, :3]
    out = nk.conv2d(x, w, stride=2**60, backend=backend)
    np.testing.assert_allclose(out, nk.conv2d(corner, w, backend="numpy"), rtol=1e-5, atol=1e-6)
    g = rand(rng, *out.shape)
    gx, gw, _ = nk.conv2d_backward(g, x, w, stride=2**60, backend=backend)
    ref_gx, ref_gw, _ = nk.conv2d_backward(g, corner, w, backend="numpy")
    np.testing.assert_allclose(gx[:, :, :3, :3], ref_gx, rtol=1e-5, atol=1e-6)
    assert not gx[:, :, 3:].any() and not gx[:, :, :, 3:].any()
    np.testing.assert_allclose(gw, ref_gw, rtol=1e-5, atol=1e-6)
    w1 = rand(rng, 3, 2, 1, 1)
    np.testing.assert_allclose(nk.conv2d(x, w1, dilation=2**60, backend=backend),
                               nk.conv2d(x, w1, backend="numpy"), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(nk.max_pool2d(x, 2, stride=2**60, backend=backend),
                                  x[:, :, :2, :2].max(axis=(2, 3), keepdims=True))


# ------------------------------------------------------------------ element counts and broadcast views

def test_element_count_past_int64_indexing_is_value_error():
    big = np.broadcast_to(f32(1), (2**20, 2**20, 2**20, 1))         # 2**60 elements, no memory
    with pytest.raises(ValueError, match="more than nnkern can index"):
        nk.linear(big, np.broadcast_to(f32(1), (2**10, 1)))          # output 2**70 elements
    mask = np.broadcast_to(True, (2**62 + 8,))                        # a bool array past 2**62 elements
    with pytest.raises(ValueError, match="mask shape .* more than nnkern can index"):
        nk.dropout_backward(np.ones(3, f32), mask, 0.5)
    tall = np.broadcast_to(f32(1), (1, 1, 2**40, 1))
    with pytest.raises(ValueError, match="bin bounds"):
        nk.adaptive_avg_pool2d(tall, (2**23, 1))
    with pytest.raises(ValueError, match="bin bounds"):
        nk.adaptive_avg_pool2d_backward(np.broadcast_to(f32(1), (1, 1, 2**23, 1)), tall)


BROADCAST_CALLS = {
    "relu": "nk.relu(B((1, 2**40)))",
    "relu_backward": "nk.relu_backward(B((1, 2**40)), B((1, 2**40)))",
    "sigmoid": "nk.sigmoid(B((1, 2**40)))",
    "tanh_backward": "nk.tanh_backward(B((1, 2**40)), B((1, 2**40)))",
    "softmax": "nk.softmax(B((1, 2**40)), 1)",
    "log_softmax_backward": "nk.log_softmax_backward(B((2**20, 2**20)), B((2**20, 2**20)), 0)",
    "dropout": "nk.dropout(B((1, 2**40)), 0.5)",
    "dropout_backward": "nk.dropout_backward(B((1, 2**40)), np.broadcast_to(True, (1, 2**40)), 0.5)",
    "cross_entropy": "nk.cross_entropy(B((2**20, 2**20)), np.zeros(2**20, np.int64))",
    "linear": "nk.linear(B((1, 2**40)), B((2, 2**40)))",
    "linear_backward": "nk.linear_backward(B((1, 2)), B((1, 2**40)), B((2, 2**40)))",
    "batch_norm": "nk.batch_norm(B((2**20, 2, 2**20)), np.zeros(2, np.float32), np.ones(2, np.float32))",
    "batch_norm_train": "nk.batch_norm(B((2**20, 2, 2**20)), None, None, training=True)",
    "batch_norm_backward": "nk.batch_norm_backward(B((2**20, 2, 2**20)), B((2**20, 2, 2**20)), None, "
                           "np.zeros(2, np.float32), np.ones(2, np.float32))",
    "adaptive_avg_pool2d": "nk.adaptive_avg_pool2d(B((1, 1, 2**20, 2**20)), 1)",
    "adaptive_avg_pool2d_backward": "nk.adaptive_avg_pool2d_backward(B((1, 1, 2, 2)), B((1, 1, 2**20, 2**20)))",
    "conv2d": "nk.conv2d(B((1, 1, 2**20, 2**20)), B((1, 1, 2**20, 2**20)))",
    "max_pool2d": "nk.max_pool2d(B((1, 1, 2**20, 2**20)), 2**20)",
    "max_pool2d_backward": "nk.max_pool2d_backward(B((1, 1, 1, 1)), B((1, 1, 2**20, 2**20)), "
                           "np.broadcast_to(np.int64(0), (1, 1, 1, 1)), 2**20)",
}


# Straight into the native backend, past functional's checks: the binding's contiguous copy of a
# broadcast view (or of a mask / indices array) fails to allocate and must raise, not hand the
# kernel a null pointer (it used to segfault).
NATIVE_CALLS = {
    "relu": "cpu.relu(B((1, 2**40)))",
    "sigmoid_backward": "cpu.sigmoid_backward(B((1, 2**40)), B((1, 2**40)))",
    "softmax": "cpu.softmax(B((1, 2**40)), 1)",
    "dropout": "cpu.dropout(B((1, 2**40)), 0.5, 1)",
    "dropout_backward mask": "cpu.dropout_backward(np.ones((1, 4), np.float32), "
                             "np.broadcast_to(True, (1, 2**40)), 0.5)",
    "cross_entropy": "cpu.cross_entropy(B((2**20, 2**20)), np.zeros(2**20, np.int64))",
    "linear": "cpu.linear(B((1, 2**40)), B((2, 2**40)), None)",
    "batch_norm": "cpu.batch_norm(B((2**20, 2, 2**20)), np.zeros(2, np.float32), np.ones(2, np.float32), "
                  "None, None, False, 0.1, 1e-5, None, None)",
    "conv2d": "cpu.conv2d(B((1, 1, 2**20, 2**20)), B((1, 1, 2**20, 2**20)), None, (1, 1), (0, 0, 0, 0), "
              "(1, 1), 1, None, None)",
    "max_pool2d": "cpu.max_pool2d(B((1, 1, 2**20, 2**20)), (2**20, 2**20), (2**20, 2**20), (0, 0), (1, 1), False)",
    "max_pool2d_backward indices": "cpu.max_pool2d_backward(np.ones((1, 1, 1, 1), np.float32), "
                                   "np.ones((1, 1, 2, 2), np.float32), np.broadcast_to(np.int64(0), (1, 2**40)), "
                                   "(2, 2), (2, 2), (0, 0), (1, 1), False)",
    "adaptive_avg_pool2d": "cpu.adaptive_avg_pool2d(B((1, 1, 2**20, 2**20)), (1, 1))",
}


def _fail_fast_child(calls: dict[str, str], setup: str, timeout: float = 120) -> None:
    """Run each call in one child with the address space capped 4 GiB above its size after import
    (so the outcome does not depend on the machine's overcommit policy); each must raise
    MemoryError or ValueError within 2 s."""
    listed = "\n".join(f"    ({name!r}, lambda: {call})," for name, call in calls.items())
    code = f"""
import resource, time
import numpy as np, nnkern as nk
from nnkern import backends
cpu = backends.get("cpu")
B = lambda shape: np.broadcast_to(np.float32(0.5), shape)
CALLS = [
{listed}
]
with open("/proc/self/statm") as f:
    vm = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (vm + 4 * 2**30, resource.RLIM_INFINITY))
{setup}
for name, call in CALLS:
    t = time.perf_counter()
    try:
        call()
        print(name.replace(" ", "_"), "returned")
    except (MemoryError, ValueError) as e:
        print(name.replace(" ", "_"), "raised", type(e).__name__, round(time.perf_counter() - t, 3))
"""
    proc = run_child(code, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(calls), proc.stdout + proc.stderr[-2000:]
    for line in lines:
        name, outcome, *rest = line.split()
        assert outcome == "raised", line
        assert float(rest[-1]) < 2.0, f"{name} took {rest[-1]} s to fail"


@pytest.mark.skipif(SANITIZED, reason="AddressSanitizer aborts on a terabyte allocation instead of failing it")
@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_broadcast_views_fail_fast_without_crashing(backend):
    """Zero-stride views of 2**40 elements (4 TiB) through the public API: a MemoryError naming the
    argument before any kernel runs (the reference would otherwise reduce over the view for minutes
    before failing to allocate its output)."""
    _fail_fast_child(BROADCAST_CALLS, f"nk.set_num_threads(1)\nnk.use_backend({backend!r}).__enter__()")


@pytest.mark.skipif(SANITIZED, reason="AddressSanitizer aborts on a terabyte allocation instead of failing it")
def test_native_bindings_raise_when_a_contiguous_copy_cannot_be_allocated():
    _fail_fast_child(NATIVE_CALLS, "")


def test_oversized_view_error_names_the_argument():
    x = np.broadcast_to(f32(1), (2**20, 2, 2**20))     # 8 TiB of float32, no memory
    with pytest.raises(MemoryError, match=r"batch_norm: input is a non-contiguous view of shape \(1048576, 2, 1048576\)"):
        nk.batch_norm(x, np.zeros(2, f32), np.ones(2, f32))
    small = np.broadcast_to(f32(1), (4, 2, 8))           # a view that fits computes as a copy would
    np.testing.assert_array_equal(nk.batch_norm(small, np.zeros(2, f32), np.ones(2, f32)),
                                  nk.batch_norm(small.copy(), np.zeros(2, f32), np.ones(2, f32)))
