"""The native recurrent kernels (csrc/rnn/) on the shapes that pick their code paths.

The registry samples (tests/op_registry.py) are small; here the sizes reach
the paths they do not: the packed recurrent multiply (batch > 4) besides the
small-batch dot kernel, hidden sizes that are not a multiple of the register
tile, gate counts whose backward multiply runs several kc slices (G > 512),
steps big enough that the hidden units are split over threads (with 2 and 3
threads, uneven splits included), two directions side by side, a zero-sized batch, and
float64. Everything is compared with the NumPy reference, forward and backward.
"""
from __future__ import annotations

import numpy as np
import pytest

import nnkern as nk
from helpers import assert_close

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
RTOL = {np.float32: 2e-5, np.float64: 1e-12}


def _problem(rng, mode, t_len, n, i_size, hid, layers, bidirectional, dtype, bias=True):
    d = 2 if bidirectional else 1
    g = GATES[mode]
    params = []
    for layer in range(layers):
        k_in = i_size if layer == 0 else d * hid
        for _ in range(d):
            params += [rng.standard_normal((g * hid, k_in)) / np.sqrt(k_in), rng.standard_normal((g * hid, hid)) / np.sqrt(hid)]
            if bias:
                params += [rng.standard_normal(g * hid) * 0.5, rng.standard_normal(g * hid) * 0.5]
    params = [p.astype(dtype) for p in params]
    x = rng.standard_normal((t_len, n, i_size)).astype(dtype)
    h0 = (rng.standard_normal((layers * d, n, hid)) * 0.5).astype(dtype)
    hx = (h0, rng.standard_normal(h0.shape).astype(dtype)) if mode == "lstm" else h0
    return x, hx, params


def _run(mode, backend, x, hx, params, grads, **kw):
    out, states, ws = getattr(nk, mode)(x, hx, params, return_workspace=True, backend=backend, **kw)
    back = getattr(nk, mode + "_backward")
    go, gh, gc = grads
    g = back(go, gh, gc, ws) if mode == "lstm" else back(go, gh, ws)
    flat = [out] + (list(states) if mode == "lstm" else [states])
    for item in g:
        flat += list(item) if isinstance(item, (list, tuple)) else [item]
    return flat


CONFIGS = [
    # (T, N, I, H, layers, bidirectional): what it reaches
    (7, 32, 40, 64, 1, False),     # packed multiply, units split over threads in whole 32-column tiles
    (5, 9, 17, 45, 2, True),       # hidden not a multiple of the tile, two directions side by side
    (6, 3, 20, 200, 1, False),     # small batch (dot kernel), split over threads one unit at a time
    (4, 6, 8, 160, 1, True),       # G = 640 > 512: the backward's recurrent multiply runs two kc slices
    (3, 1, 5, 7, 2, False),        # batch 1
    (4, 0, 6, 8, 1, True),         # zero-sized batch
    (30, 1, 12, 64, 1, False),     # steps too small to split: a helper thread projects the input ahead
    (5, 11, 64, 48, 2, True),      # inputs of whole B panels (64; 96 above): the weight gradient packs x and h in place
    (4, 2, 10, 20, 1, False),      # batch 2: the two-row wide kernel (one thread: 2 and 3 panels, G = 60 and 80)
]


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "T{}-N{}-I{}-H{}-L{}-{}".format(*c[:5], "bi" if c[5] else "uni"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_sequence_matches_reference(mode, cfg, dtype, threads):
    t_len, n, i_size, hid, layers, bidir = cfg
    rng = np.random.default_rng(hash((mode, cfg)) % 2**32)
    x, hx, params = _problem(rng, mode, t_len, n, i_size, hid, layers, bidir, dtype)
    d = 2 if bidir else 1
    grads = (rng.standard_normal((t_len, n, d * hid)).astype(dtype),
             rng.standard_normal((layers * d, n, hid)).astype(dtype),
             rng.standard_normal((layers * d, n, hid)).astype(dtype))
    ref = _run(mode, "numpy", x, hx, params, grads, num_layers=layers, bidirectional=bidir)
    old = nk.get_num_threads()
    nk.set_num_threads(threads)
    try:
        got = _run(mode, "cpu", x, hx, params, grads, num_layers=layers, bidirectional=bidir)
    finally:
        nk.set_num_threads(old)
    assert len(got) == len(ref)
    for k, (a, b) in enumerate(zip(got, ref)):
        assert a.shape == b.shape and a.dtype == b.dtype, f"result {k}"
        assert_close(a, b, RTOL[dtype], f"{mode} result {k}")


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn"])
def test_missing_gradients_are_zeros(mode):
    """grad_output / grad_h_n / grad_c_n given as None act as zeros, as in the reference."""
    rng = np.random.default_rng(3)
    x, hx, params = _problem(rng, mode, 5, 6, 7, 33, 2, True, np.float32)
    grads = (rng.standard_normal((5, 6, 66)).astype(np.float32), None, None)
    ref = _run(mode, "numpy", x, hx, params, grads, num_layers=2, bidirectional=True)
    got = _run(mode, "cpu", x, hx, params, grads, num_layers=2, bidirectional=True)
    for a, b in zip(got, ref):
        assert_close(a, b, 2e-5, mode)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn"])
def test_batch_first_no_bias_non_contiguous(mode):
    rng = np.random.default_rng(4)
    x, hx, params = _problem(rng, mode, 6, 5, 9, 40, 2, True, np.float32, bias=False)
    xb = np.ascontiguousarray(x.transpose(1, 0, 2))[:, ::1]
    xb = np.asfortranarray(xb)  # a non-C-contiguous (N, T, I) view
    grads = (rng.standard_normal((5, 6, 80)).astype(np.float32), rng.standard_normal((4, 5, 40)).astype(np.float32),
             rng.standard_normal((4, 5, 40)).astype(np.float32))
    kw = dict(num_layers=2, bidirectional=True, batch_first=True, has_biases=False)
    ref = _run(mode, "numpy", xb, hx, params, grads, **kw)
    got = _run(mode, "cpu", xb, hx, params, grads, **kw)
    for a, b in zip(got, ref):
        assert_close(a, b, 2e-5, mode)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_split_backward_matches_reference(mode, batch_first, bias, threads, dtype):
    """One direction, 19 batch rows: at 2 threads the members split the batch (10 + 9 rows, every step of
    their own rows, the bias gradients summed per row), at 3 threads the hidden units; time-major and
    batch-major rows, with and without biases; float32 and float64 (its own team instantiations)."""
    rng = np.random.default_rng(21)
    t_len, n, i_size, hid = 9, 19, 24, 128
    x, hx, params = _problem(rng, mode, t_len, n, i_size, hid, 1, False, dtype, bias=bias)
    go = rng.standard_normal((t_len, n, hid)).astype(dtype)
    if batch_first:
        x, go = x.transpose(1, 0, 2).copy(), go.transpose(1, 0, 2).copy()
    grads = (go, rng.standard_normal((1, n, hid)).astype(dtype), rng.standard_normal((1, n, hid)).astype(dtype))
    kw = dict(batch_first=batch_first, has_biases=bias)
    ref = _run(mode, "numpy", x, hx, params, grads, **kw)
    old = nk.get_num_threads()
    nk.set_num_threads(threads)
    try:
        got = _run(mode, "cpu", x, hx, params, grads, **kw)
    finally:
        nk.set_num_threads(old)
    assert len(got) == len(ref)
    for k, (a, b) in enumerate(zip(got, ref)):
        assert a.shape == b.shape and a.dtype == b.dtype, f"result {k}"
        assert_close(a, b, RTOL[dtype], f"{mode} result {k}")


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_dropout_between_layers_matches_reference(mode, batch_first):
    """Training-mode inter-layer dropout: the same masks as the NumPy reference (counter generator over the
    time-major layout), also when the layers run batch-major (batch_first)."""
    rng = np.random.default_rng(5)
    x, hx, params = _problem(rng, mode, 6, 8, 10, 36, 3, True, np.float32)
    lead = (8, 6) if batch_first else (6, 8)
    if batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    grads = tuple(rng.standard_normal(s).astype(np.float32) for s in (lead + (72,), (6, 8, 36), (6, 8, 36)))
    kw = dict(num_layers=3, bidirectional=True, dropout=0.3, training=True, seed=11, batch_first=batch_first)
    ref = _run(mode, "numpy", x, hx, params, grads, **kw)
    got = _run(mode, "cpu", x, hx, params, grads, **kw)
    for a, b in zip(got, ref):
        assert_close(a, b, 2e-5, f"{mode} dropout")


@pytest.mark.parametrize("cell,gates", [("lstm_cell", 4), ("gru_cell", 3), ("rnn_cell", 1)])
@pytest.mark.parametrize("n", [1, 5, 40])
def test_cells_match_reference(cell, gates, n):
    rng = np.random.default_rng(n)
    hid, i_size = 70, 33
    x = rng.standard_normal((n, i_size)).astype(np.float32)
    h = rng.standard_normal((n, hid)).astype(np.float32)
    w_ih = (rng.standard_normal((gates * hid, i_size)) / 6).astype(np.float32)
    w_hh = (rng.standard_normal((gates * hid, hid)) / 8).astype(np.float32)
    b_ih, b_hh = rng.standard_normal((2, gates * hid)).astype(np.float32)
    gh = rng.standard_normal((n, hid)).astype(np.float32)
    res = {}
    for be in ("numpy", "cpu"):
        fn = getattr(nk, cell)
        if cell == "lstm_cell":
            c = rng.standard_normal((n, hid)).astype(np.float32) if be == "numpy" else res["c"]
            res["c"] = c
            (h1, c1), ws = fn(x, (h, c), w_ih, w_hh, b_ih, b_hh, return_workspace=True, backend=be)
            grads = nk.lstm_cell_backward(gh, gh * 0.5, ws)
            res[be] = [h1, c1, *grads]
        else:
            h1, ws = fn(x, h, w_ih, w_hh, b_ih, b_hh, return_workspace=True, backend=be)
            grads = getattr(nk, cell + "_backward")(gh, ws)
            res[be] = [h1, *grads]
    for a, b in zip(res["cpu"], res["numpy"]):
        assert_close(a, b, 2e-5, cell)


def test_concurrent_calls_match_serial():
    """Python threads calling the recurrent ops at once: one gets the pool's team, the others run as a team of
    one on their own thread (parallel_team's fallback); every result equals the serial one bit for bit."""
    import threading

    rng = np.random.default_rng(9)
    problems = []
    for k in range(6):
        mode = ("lstm", "gru", "rnn")[k % 3]
        x, hx, params = _problem(rng, mode, 8, 16 + k, 12, 64, 1, k % 2 == 1, np.float32)
        d = 2 if k % 2 else 1
        grads = (rng.standard_normal((8, 16 + k, d * 64)).astype(np.float32), None, None)
        problems.append((mode, x, hx, params, grads, dict(num_layers=1, bidirectional=k % 2 == 1)))
    serial = [[a.tobytes() for a in _run(m, "cpu", x, hx, p, g, **kw)] for m, x, hx, p, g, kw in problems]
    results = [None] * len(problems)
    errors = []

    def work(i):
        try:
            for _ in range(5):
                m, x, hx, p, g, kw = problems[i]
                got = [a.tobytes() for a in _run(m, "cpu", x, hx, p, g, **kw)]
                if got != serial[i]:
                    results[i] = False
                    return
            results[i] = True
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(problems))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert all(r is True for r in results), results


class _Params(list):
    """A list subclass: the sequence ops validate it on their general path, not the plain-list fast path."""


class _Array(np.ndarray):
    """An ndarray subclass: likewise validated on the general path."""


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn"])
def test_fast_and_general_argument_paths_agree(mode):
    """functional._seq_args checks plain host arrays without building messages; any other argument (a list
    subclass, a float dropout given as a NumPy scalar, a state given as an ndarray subclass) takes the general
    checks.
    Both give the same bits, and a wrong shape is reported the same way on both."""
    rng = np.random.default_rng(12)
    x, hx, params = _problem(rng, mode, 5, 4, 6, 16, 2, True, np.float32)
    fn = getattr(nk, mode)
    kw = dict(num_layers=2, bidirectional=True)
    fast = fn(x, hx, params, backend="cpu", **kw)
    general_hx = (hx[0], hx[1].view(_Array)) if mode == "lstm" else hx.view(_Array)
    for args in ((x, hx, _Params(params), kw), (x, general_hx, params, kw),
                 (x, hx, params, dict(kw, dropout=np.float32(0.0)))):
        general = fn(args[0], args[1], args[2], backend="cpu", **args[3])
        a = [general[0]] + (list(general[1]) if mode == "lstm" else [general[1]])
        b = [fast[0]] + (list(fast[1]) if mode == "lstm" else [fast[1]])
        for u, v in zip(a, b):
            assert u.tobytes() == v.tobytes()
    bad = list(params)
    bad[5] = bad[5][:, :-1]  # weight_hh_l0_reverse
    with pytest.raises(ValueError, match=r"params\[5\] \(weight_hh_l0_reverse\) must have shape"):
        fn(x, hx, bad, **kw)
    with pytest.raises(ValueError, match=r"params\[5\] \(weight_hh_l0_reverse\) must have shape"):
        fn(x, hx, _Params(bad), **kw)


INFERENCE_CONFIGS = CONFIGS + [
    (4, 3, 5, 12, 3, True),        # three layers: the layers below the top alternate two scratch buffers
    (50, 1, 64, 64, 1, False),     # the latency row (L2 / G2): projection helper at 2 threads
]


def _states(mode, result):
    out, states = result[0], result[1]
    return [out] + (list(states) if mode == "lstm" else [states])


@pytest.mark.parametrize("mode,nonlin", [("lstm", None), ("gru", None), ("rnn", "tanh"), ("rnn", "relu")])
@pytest.mark.parametrize("cfg", INFERENCE_CONFIGS, ids=lambda c: "T{}-N{}-I{}-H{}-L{}-{}".format(*c[:5], "bi" if c[5] else "uni"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_first,bias", [(False, True), (True, False)])
@pytest.mark.parametrize("threads", [1, 2])
def test_inference_sequence_has_the_workspace_bits(mode, nonlin, cfg, dtype, batch_first, bias, threads):
    """A call that keeps nothing for a backward runs every layer in one native call (rnn_seq_inference,
    csrc/rnn/rnn_sequence.cpp); it gives the bits of the layer-by-layer path and matches the reference."""
    t_len, n, i_size, hid, layers, bidir = cfg
    rng = np.random.default_rng(hash((mode, nonlin, cfg, batch_first)) % 2**32)
    x, hx, params = _problem(rng, mode, t_len, n, i_size, hid, layers, bidir, dtype, bias=bias)
    if batch_first:
        x = x.transpose(1, 0, 2)  # a non-contiguous (N, T, I) view
    kw = dict(num_layers=layers, bidirectional=bidir, batch_first=batch_first, has_biases=bias)
    if nonlin:
        kw["nonlinearity"] = nonlin
    fn = getattr(nk, mode)
    old = nk.get_num_threads()
    nk.set_num_threads(threads)
    try:
        fast = _states(mode, fn(x, hx, params, backend="cpu", **kw))
        layered = _states(mode, fn(x, hx, params, backend="cpu", return_workspace=True, **kw))
    finally:
        nk.set_num_threads(old)
    ref = _states(mode, fn(x, hx, params, backend="numpy", **kw))
    for k, (a, b, r) in enumerate(zip(fast, layered, ref)):
        assert a.shape == r.shape and a.dtype == r.dtype and a.flags.c_contiguous, f"result {k}"
        assert a.tobytes() == b.tobytes(), f"{mode} result {k}"
        assert_close(a, r, RTOL[dtype], f"{mode} result {k}")


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_inference_sequence_unbatched_default_state_strided_weights(mode):
    """2-D input, no initial state, and weights given as strided views: the one-call path converts them."""
    rng = np.random.default_rng(21)
    x, _, params = _problem(rng, mode, 7, 1, 9, 20, 2, True, np.float32)
    strided = [np.repeat(p, 2, axis=-1)[..., ::2] for p in params]  # the same values, not C-contiguous
    assert not strided[0].flags.c_contiguous
    fn = getattr(nk, mode)
    kw = dict(num_layers=2, bidirectional=True)
    got = _states(mode, fn(x[:, 0], None, strided, backend="cpu", **kw))
    ref = _states(mode, fn(x[:, 0], None, params, backend="numpy", **kw))
    for a, r in zip(got, ref):
        assert a.shape == r.shape
        assert_close(a, r, 2e-5, mode)
