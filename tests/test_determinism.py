"""Determinism of every native op: same inputs and thread count → the same bits; and across thread counts.

Each native op of the cpu backend runs every registry sample (forward and
backward) plus a few samples large enough that every thread gets work, at
1, 2 and 3 threads, twice each. Reruns at one thread count must match bit for
bit (the thread pool's split depends only on the sizes and the thread count,
and no kernel sums with atomics). ``ACROSS_THREADS`` records, per op, whether
the bits are also the same *across* thread counts — the table of
docs/determinism.md, asserted here so the document cannot drift.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import nnkern as nk
from nnkern import backends
from helpers import differentiable, upstream
from op_registry import OPS

#: Ops whose results are bit-identical for every thread count (docs/determinism.md).
#: Every native op is listed: work is split over outputs only, and every reduction
#: (GEMM k-loops, batch-norm statistics, pooling windows, softmax rows, weight and
#: bias gradients) runs in an order fixed by the shapes, never by the split.
ACROSS_THREADS = {
    "conv1d": True, "conv2d": True, "linear": True, "max_pool2d": True, "avg_pool2d": True,
    "adaptive_avg_pool2d": True, "batch_norm": True, "relu": True, "sigmoid": True, "tanh": True,
    "softmax": True, "log_softmax": True, "cross_entropy": True, "dropout": True,
    "lstm": True, "gru": True, "rnn": True, "lstm_cell": True, "gru_cell": True, "rnn_cell": True,
}

THREADS = (1, 2, 3)


def _native(op):
    return backends.has_op("cpu", op.name)


def _big_samples():
    """Shapes large enough that the 2- and 3-thread splits cut through real work."""
    r = np.random.default_rng(11)
    f = np.float32
    x = r.standard_normal((4, 32, 20, 20)).astype(f)
    return {
        "conv2d": dict(args=(x, r.standard_normal((32, 32, 3, 3)).astype(f)), kw=dict(padding=1)),  # Winograd
        "linear": dict(args=(r.standard_normal((64, 300)).astype(f), r.standard_normal((70, 300)).astype(f)), kw={}),
        "batch_norm": dict(args=(x, None, None), kw=dict(training=True)),
        "max_pool2d": dict(args=(x, 3), kw=dict(stride=2, padding=1)),
        "softmax": dict(args=(r.standard_normal((300, 129)).astype(f), 1), kw={}),
    }


def _run_sample(op, index, dtype, threads):
    rng = np.random.default_rng(zlib.crc32(f"{op.name}{index}".encode()))
    sample = op.samples(rng)[index].cast(dtype)
    nk.set_num_threads(threads)
    out, saved = op.forward(sample.inputs, sample.params, "cpu")
    result = [np.asarray(o).tobytes() for o in out]
    if op.backward is not None and sample.check_backward and backends.has_op("cpu", op.backward_op):
        which = differentiable(op, sample, out)
        grads = [None if g is None else g.astype(dtype) for g in upstream(rng, out, which)]
        got = op.backward(sample.inputs, sample.params, out, saved, grads, "cpu")
        result += [np.asarray(got[k]).tobytes() for k in sorted(got)]
    return result


CASES = [pytest.param(op, i, dt, id=f"{op.name}-{s.desc}-{np.dtype(dt).name}")
         for op in OPS if _native(op)
         for i, s in enumerate(op.samples(np.random.default_rng(0)))
         for dt in (np.float32, np.float64)]


@pytest.fixture
def restore_threads():
    n = nk.get_num_threads()
    yield
    nk.set_num_threads(n)


@pytest.mark.parametrize("op,index,dtype", CASES)
def test_registry_sample(op, index, dtype, restore_threads):
    runs = {t: [_run_sample(op, index, dtype, t) for _ in range(2)] for t in THREADS}
    for t, (a, b) in runs.items():
        assert a == b, f"{op.name}: two runs at {t} threads differ"
    if ACROSS_THREADS.get(op.name, False):
        for t in THREADS[1:]:
            assert runs[t][0] == runs[1][0], f"{op.name}: {t} threads differ from 1 thread"


@pytest.mark.parametrize("name", sorted(_big_samples()))
def test_large_sample(name, restore_threads):
    s = _big_samples()[name]
    fn = getattr(nk, name)
    outs = {}
    for t in THREADS:
        nk.set_num_threads(t)
        a, b = fn(*s["args"], **s["kw"], backend="cpu"), fn(*s["args"], **s["kw"], backend="cpu")
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), f"{name}: two runs at {t} threads differ"
        outs[t] = np.asarray(a).tobytes()
    if ACROSS_THREADS[name]:
        assert outs[2] == outs[1] and outs[3] == outs[1]


def _recurrent_bits(mode, bidirectional, batch, hidden):
    """Output, final states and every gradient of a sequence large enough that the team splits it."""
    r = np.random.default_rng(5)
    f = np.float32
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[mode]
    d = 2 if bidirectional else 1
    params = []
    for layer in range(2):
        i = 24 if layer == 0 else d * hidden
        for _ in range(d):
            params += [r.standard_normal((gates * hidden, i)).astype(f) * 0.2,
                       r.standard_normal((gates * hidden, hidden)).astype(f) * 0.2,
                       r.standard_normal(gates * hidden).astype(f), r.standard_normal(gates * hidden).astype(f)]
    x = r.standard_normal((9, batch, 24)).astype(f)
    h0 = r.standard_normal((2 * d, batch, hidden)).astype(f)
    hx = (h0, h0 * 0.5) if mode == "lstm" else h0
    out, states, ws = getattr(nk, mode)(x, hx, params, num_layers=2, bidirectional=bidirectional,
                                        return_workspace=True, backend="cpu")
    go = r.standard_normal(out.shape).astype(f)
    gh = r.standard_normal(h0.shape).astype(f)
    back = getattr(nk, mode + "_backward")
    grads = back(go, gh, gh, ws) if mode == "lstm" else back(go, gh, ws)
    flat = [out] + (list(states) if mode == "lstm" else [states])
    for g in grads:
        flat += list(g) if isinstance(g, (list, tuple)) else [g]
    return [np.asarray(a).tobytes() for a in flat if a is not None]


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch,hidden", [(32, 96), (3, 200), (19, 128)])
def test_large_recurrent(mode, bidirectional, batch, hidden, restore_threads):
    """Hidden units split over 2 and 3 threads (and two directions side by side), or the batch rows (one
    direction, 16+ rows: 16 + 16 and 11 + 11 + 10 of 32, 10 + 9 of 19): the same bits as 1 thread."""
    outs = {}
    for t in THREADS:
        nk.set_num_threads(t)
        a, b = _recurrent_bits(mode, bidirectional, batch, hidden), _recurrent_bits(mode, bidirectional, batch, hidden)
        assert a == b, f"{mode}: two runs at {t} threads differ"
        outs[t] = a
    assert outs[2] == outs[1] and outs[3] == outs[1]


@pytest.mark.parametrize("mode", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional,batch,hidden,t_len", [(False, 20, 96, 41), (False, 25, 96, 41),
                                                              (True, 20, 96, 41), (True, 7, 96, 41),
                                                              (False, 1, 64, 50), (False, 2, 40, 19)])
def test_long_recurrent(mode, bidirectional, batch, hidden, t_len, restore_threads):
    """Sequences long enough for the team to project the input in several chunks beside the time loop
    with the batch split over the members (one direction, 20 or 25 rows: 10 + 10 at 2 threads, units at
    3 threads for 20), two directions (projection first, a member each), and steps too small to split,
    whose input projection a helper thread computes ahead of the loop (batch 1 and 2; 38 rows: 14 + 24):
    the same bits as 1 thread."""
    r = np.random.default_rng(11)
    f = np.float32
    gates = {"lstm": 4, "gru": 3}[mode]
    d = 2 if bidirectional else 1
    inp = 24
    params = []
    for _ in range(d):
        params += [r.standard_normal((gates * hidden, inp)).astype(f) * 0.2,
                   r.standard_normal((gates * hidden, hidden)).astype(f) * 0.2,
                   r.standard_normal(gates * hidden).astype(f), r.standard_normal(gates * hidden).astype(f)]
    x = r.standard_normal((t_len, batch, inp)).astype(f)
    outs = {}
    for t in THREADS:
        nk.set_num_threads(t)
        runs = []
        for _ in range(2):
            out, states = getattr(nk, mode)(x, None, params, bidirectional=bidirectional, backend="cpu")[:2]
            flat = [out] + (list(states) if mode == "lstm" else [states])
            runs.append([np.asarray(a).tobytes() for a in flat])
        assert runs[0] == runs[1], f"{mode}: two runs at {t} threads differ"
        outs[t] = runs[0]
    assert outs[2] == outs[1] and outs[3] == outs[1]


def test_every_native_op_has_an_entry():
    """A new native op must be given its documented cross-thread behaviour here and in docs/determinism.md."""
    forward_ops = {op.name for op in OPS if _native(op)}
    assert forward_ops <= set(ACROSS_THREADS), sorted(forward_ops - set(ACROSS_THREADS))
