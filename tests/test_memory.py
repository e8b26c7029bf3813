"""Repeated native calls do not grow memory, and ``nnkern.empty_cache()`` gives the scratch cache back.

Each native op (forward and backward) runs a few thousand times on inputs of about 4,096 elements
(16 KiB of float32 per output), after a warm-up; the resident set (``/proc/self/statm``) may grow by
less than 8 MiB. Leaking one output per call would grow it by more than 30 MiB, so a leaked array, a
reference-count slip in the bindings or a scratch buffer that is never returned all fail here.
``empty_cache()`` is checked with glibc's malloc statistics, which count exactly the bytes in use
(the resident set also holds freed heap memory, by an amount that depends on fragmentation).
Skipped under sanitizers (their allocators keep freed memory in quarantine) and where
``/proc/self/statm`` is missing.
"""
from __future__ import annotations

import ctypes
import gc
import os

import numpy as np
import pytest

import nnkern as nk
from nnkern import _cpu, backends

pytestmark = [
    pytest.mark.skipif(bool(_cpu.build_info()["sanitize"]), reason="sanitizer allocators quarantine freed memory"),
    pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm (Linux)"),
]

CALLS = 2000
WARMUP = 100
BOUND = 8 << 20
f32 = np.float32


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _r(rng, *shape):
    return rng.standard_normal(shape).astype(f32)


def _workloads(rng):
    """op name -> a function running the native forward and backward once (all with backend="cpu")."""
    cpu = {"backend": "cpu"}
    x = _r(rng, 2, 8, 16, 16)                       # 4,096 elements
    w = _r(rng, 8, 8, 3, 3)
    xw, ww = _r(rng, 1, 16, 16, 16), _r(rng, 16, 16, 3, 3)   # Winograd-sized on AVX-512
    xp = _r(rng, 2, 8, 32, 32)
    vec = _r(rng, 64, 64)
    lin_w = _r(rng, 64, 64)
    stats = (np.zeros(8, f32), np.ones(8, f32))
    target = rng.integers(0, 64, 64)

    def conv():
        y = nk.conv2d(x, w, _r(rng, 8), padding=1, activation="relu", residual=x, **cpu)
        nk.conv2d_backward(y, x, w, padding=1, **cpu)
        yw = nk.conv2d(xw, ww, padding=1, **cpu)
        nk.conv2d_backward(yw, xw, ww, padding=1, **cpu)
        yd = nk.conv2d(x, w[:, :1], padding=1, groups=8, **cpu)
        nk.conv2d_backward(yd, x, w[:, :1], padding=1, groups=8, **cpu)

    def max_pool():
        y, idx = nk.max_pool2d(xp, 2, return_indices=True, **cpu)
        nk.max_pool2d_backward(y, xp, idx, 2, **cpu)

    def avg_pool():
        y = nk.avg_pool2d(xp, 3, stride=2, padding=1, **cpu)
        nk.avg_pool2d_backward(y, xp, 3, stride=2, padding=1, **cpu)

    def adaptive():
        y = nk.adaptive_avg_pool2d(xp, (5, 7), **cpu)
        nk.adaptive_avg_pool2d_backward(y, xp, **cpu)
        nk.adaptive_avg_pool2d_backward(nk.adaptive_avg_pool2d(xp, 1, **cpu), xp, **cpu)

    def batch_norm():
        rm, rv = stats[0].copy(), stats[1].copy()
        y, mean, invstd = nk.batch_norm(x, rm, rv, stats[1], stats[0], training=True, return_stats=True, **cpu)
        nk.batch_norm_backward(y, x, stats[1], mean, invstd, **cpu)
        y, mean, invstd = nk.batch_norm(x, *stats, activation="relu", residual=x, return_stats=True, **cpu)
        nk.batch_norm_backward(y, x, None, mean, invstd, training=False, **cpu)

    def linear():
        y = nk.linear(vec, lin_w, vec[0], **cpu)
        nk.linear_backward(y, vec, lin_w, **cpu)

    def activations():
        for name in ("relu", "sigmoid", "tanh"):
            y = getattr(nk, name)(x, **cpu)
            getattr(nk, name + "_backward")(x, y, **cpu)

    def softmaxes():
        for name in ("softmax", "log_softmax"):
            y = getattr(nk, name)(x, 1, **cpu)
            getattr(nk, name + "_backward")(x, y, 1, **cpu)

    def dropout():
        y, mask = nk.dropout(x, 0.3, seed=1, return_mask=True, **cpu)
        nk.dropout_backward(y, mask, 0.3, **cpu)

    def cross_entropy():
        nk.cross_entropy(vec, target, **cpu)
        nk.cross_entropy_backward(np.float32(1.0), vec, target, **cpu)

    def recurrent():
        # a small LSTM / GRU / RNN (2 layers, bidirectional, dropout) and each cell, forward and backward
        seq = _r(rng, 5, 3, 8)
        for mode, gates in (("lstm", 4), ("gru", 3), ("rnn", 1)):
            params = []
            for layer in range(2):
                for _ in range(2):
                    params += [_r(rng, gates * 6, 8 if layer == 0 else 12), _r(rng, gates * 6, 6),
                               _r(rng, gates * 6), _r(rng, gates * 6)]
            out, _, ws = getattr(nk, mode)(seq, None, params, num_layers=2, bidirectional=True, dropout=0.2,
                                           training=True, seed=3, return_workspace=True, **cpu)
            back = getattr(nk, mode + "_backward")
            back(out, None, None, ws) if mode == "lstm" else back(out, None, ws)
            cell = getattr(nk, mode + "_cell")
            h = _r(rng, 3, 6)
            if mode == "lstm":
                _, cws = cell(seq[0], (h, h), params[0], params[1], params[2], params[3], return_workspace=True, **cpu)
                nk.lstm_cell_backward(h, h, cws)
            else:
                _, cws = cell(seq[0], h, params[0], params[1], params[2], params[3], return_workspace=True, **cpu)
                getattr(nk, mode + "_cell_backward")(h, cws)

    def errors():
        # failed calls free what they allocated too (errors raised by native code and by validation)
        for thunk in (lambda: nk.conv2d(x, w[:, :3], **cpu), lambda: nk.relu(x.astype(np.int32), **cpu),
                      lambda: backends.get("cpu").relu(x.astype(np.int64))):
            try:
                thunk()
            except (TypeError, ValueError):
                pass

    return {
        "conv2d": conv, "max_pool2d": max_pool, "avg_pool2d": avg_pool, "adaptive_avg_pool2d": adaptive,
        "batch_norm": batch_norm, "linear": linear, "activations": activations, "softmax": softmaxes,
        "dropout": dropout, "cross_entropy": cross_entropy, "recurrent": recurrent, "errors": errors,
    }


COVERS = {  # which native ops each workload runs
    "conv2d": ["conv2d", "conv2d_backward"], "max_pool2d": ["max_pool2d", "max_pool2d_backward"],
    "avg_pool2d": ["avg_pool2d", "avg_pool2d_backward"],
    "adaptive_avg_pool2d": ["adaptive_avg_pool2d", "adaptive_avg_pool2d_backward"],
    "batch_norm": ["batch_norm", "batch_norm_backward"], "linear": ["linear", "linear_backward"],
    "activations": [f"{n}{s}" for n in ("relu", "sigmoid", "tanh") for s in ("", "_backward")],
    "softmax": [f"{n}{s}" for n in ("softmax", "log_softmax") for s in ("", "_backward")],
    "dropout": ["dropout", "dropout_backward"], "cross_entropy": ["cross_entropy", "cross_entropy_backward"],
    "recurrent": [f"{m}{s}" for m in ("lstm", "gru", "rnn", "lstm_cell", "gru_cell", "rnn_cell")
                  for s in ("", "_backward")],
    "errors": [],
}


def test_every_native_op_is_exercised():
    covered = {op for ops in COVERS.values() for op in ops}
    missing = set(backends.get("cpu").NATIVE_OPS) - covered
    assert not missing, f"native ops without a memory test: {sorted(missing)}"


@pytest.mark.parametrize("name", list(COVERS))
def test_repeated_calls_do_not_grow_memory(name):
    run = _workloads(np.random.default_rng(0))[name]
    for _ in range(WARMUP):
        run()
    gc.collect()
    before = rss()
    for _ in range(CALLS):
        run()
    gc.collect()
    grown = rss() - before
    assert grown < BOUND, f"{name}: resident memory grew by {grown / 2**20:.1f} MiB over {CALLS} calls"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _malloc_in_use():
    """Bytes glibc's malloc has handed out and not got back (heap plus mapped chunks), or None.

    Exact where the resident set is not: freed heap memory is kept by the allocator, and how much
    of it a pattern of frees and new allocations leaves unused depends on fragmentation."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):  # not glibc >= 2.33
        return None
    fn.restype = _MallInfo2
    info = fn()
    return info.uordblks + info.hblkhd


def test_empty_cache_releases_the_scratch_buffers():
    """A large convolution leaves its scratch buffers in the cache (the next call reuses them);
    empty_cache() frees them: workspace_bytes() drops to 0 and malloc gets the bytes back, and
    cycles of (convolution, empty_cache) do not grow the memory in use."""
    rng = np.random.default_rng(1)
    x, w = _r(rng, 4, 128, 32, 32), _r(rng, 128, 128, 3, 3)

    def run():
        y = nk.conv2d(x, w, padding=1, backend="cpu")
        nk.conv2d_backward(y, x, w, padding=1, backend="cpu")

    nk.empty_cache()
    run()
    held = _cpu.workspace_bytes()
    assert held >= 2 << 20, f"expected the conv to keep its scratch buffers, the cache held {held} bytes"
    gc.collect()
    in_use = _malloc_in_use()
    nk.empty_cache()
    assert _cpu.workspace_bytes() == 0
    if in_use is None:
        pytest.skip("malloc statistics need glibc >= 2.33")
    freed = in_use - _malloc_in_use()
    assert freed >= held, f"empty_cache gave {freed} bytes back to malloc, the cache held {held}"
    start = _malloc_in_use()
    for _ in range(5):
        run()
        nk.empty_cache()
    gc.collect()
    grown = _malloc_in_use() - start
    assert grown < 1 << 20, f"5 cycles of conv + empty_cache left {grown} more bytes in use"
