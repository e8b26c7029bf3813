"""Property-based tests: random shapes and options for every op family, the default backend against the reference.

Each example draws sizes (1, primes, kernel = input size, padding up to the
limit, dilation, groups = channels, zero batches), a dtype and a memory
layout (contiguous, transposed, negative strides), runs the op on the default
backend (native where registered) and compares it with the float64 NumPy
reference on the same rounded inputs. CI runs the derandomized ``ci``
profile; ``--hypothesis-profile=long`` runs many more examples.
"""
from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, strategies as st  # noqa: E402

import nnkern as nk  # noqa: E402
from helpers import assert_close  # noqa: E402
from nnkern._shapes import conv_output_size, pool_output_size  # noqa: E402

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
dtypes = st.sampled_from([np.float32, np.float64])
layouts = st.sampled_from(["contiguous", "transposed", "reversed"])


def make(seed: int, shape, dtype, layout):
    """Random normal data of ``shape`` in ``dtype``, laid out as asked (the values do not depend on the layout)."""
    a = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    if layout == "transposed" and a.ndim >= 2:
        return np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    if layout == "reversed" and a.ndim >= 1:
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    return a


def exact(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def check(got, ref, dtype, what):
    got = got if isinstance(got, tuple) else (got,)
    ref = ref if isinstance(ref, tuple) else (ref,)
    for k, (g, r) in enumerate(zip(got, ref)):
        if g is None:
            continue
        if np.asarray(r).dtype.kind == "f":
            assert np.asarray(g).dtype == dtype, f"{what}[{k}] dtype {np.asarray(g).dtype}"
        assert_close(g, r, RTOL[dtype], f"{what}[{k}]")


def check_sums(got, ref, scale, dtype, what):
    """Results that are sums of products (linear in each input): per element |got - ref| <= rtol * scale, where
    scale is the same op on the inputs' absolute values. A float sum of k terms errs by at most about k * eps times
    the sum of its terms' magnitudes however much they cancel (the bound the BLAS test suites use), so a correct
    kernel meets this on any input, while a missing, doubled or misplaced term errs by a whole term. (A norm-relative
    check fails correct kernels on cancelling sums: a 6-term dot product with condition number 617 errs by 2e-5 in
    float32, whoever sums it.)"""
    got = got if isinstance(got, tuple) else (got,)
    ref = ref if isinstance(ref, tuple) else (ref,)
    scale = scale if isinstance(scale, tuple) else (scale,)
    tiny = np.finfo(dtype).tiny  # below it kernels may flush to zero
    for k, (g, r, m) in enumerate(zip(got, ref, scale)):
        if g is None:
            continue
        g, r, m = np.asarray(g), np.asarray(r, np.float64), np.asarray(m, np.float64)
        assert g.dtype == dtype, f"{what}[{k}] dtype {g.dtype}"
        assert g.shape == r.shape, f"{what}[{k}] shape {g.shape} != {r.shape}"
        assert np.isfinite(g).all(), f"{what}[{k}]: non-finite results"
        excess = np.abs(g.astype(np.float64) - r) - (RTOL[dtype] * m + tiny)
        assert excess.max(initial=0) <= 0, (f"{what}[{k}]: error beyond {RTOL[dtype]:.0e} x the sum of the terms' "
                                            f"magnitudes at {np.unravel_index(excess.argmax(), excess.shape)}")


def magnitude(a):
    return None if a is None else np.abs(np.asarray(a, dtype=np.float64))


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    depthwise = draw(st.booleans())
    if depthwise:
        groups, cin = cin, cin
    cout = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    same = stride == (1, 1) and draw(st.booleans())
    ph = draw(st.integers(0, kh - 1))
    pw = draw(st.integers(0, kw - 1))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 11))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 11))
    n = draw(st.sampled_from([0, 1, 2, 3]))
    return dict(n=n, cin=cin, cout=cout, k=(kh, kw), d=(dh, dw), stride=stride,
                padding="same" if same else (ph, pw), hw=(h, w), groups=groups,
                bias=draw(st.booleans()), relu=draw(st.booleans()), residual=draw(st.booleans()),
                dtype=draw(dtypes), layout=draw(layouts), seed=draw(st.integers(0, 2**16)))


@given(conv_cases())
def test_conv2d_forward_backward(c):
    dt = c["dtype"]
    x = make(c["seed"], (c["n"], c["cin"]) + c["hw"], dt, c["layout"])
    w = make(c["seed"] + 1, (c["cout"], c["cin"] // c["groups"]) + c["k"], dt, c["layout"])
    b = make(c["seed"] + 2, (c["cout"],), dt, "contiguous") if c["bias"] else None
    args = (c["stride"], c["padding"], c["d"], c["groups"])
    ref = nk.conv2d(exact(x), exact(w), exact(b), *args, backend="numpy")
    r = make(c["seed"] + 3, ref.shape, dt, "contiguous") if c["residual"] else None
    act = "relu" if c["relu"] else None
    ref = nk.conv2d(exact(x), exact(w), exact(b), *args, activation=act, residual=exact(r), backend="numpy")
    # ReLU moves no two values further apart, so the bound of the sums before it holds after it
    scale = nk.conv2d(magnitude(x), magnitude(w), magnitude(b), *args, residual=magnitude(r), backend="numpy")
    check_sums(nk.conv2d(x, w, b, *args, activation=act, residual=r), ref, scale, dt, "conv2d")
    g = make(c["seed"] + 4, ref.shape, dt, "contiguous")
    check_sums(nk.conv2d_backward(g, x, w, *args),
               nk.conv2d_backward(exact(g), exact(x), exact(w), *args, backend="numpy"),
               nk.conv2d_backward(magnitude(g), magnitude(x), magnitude(w), *args, backend="numpy"), dt,
               "conv2d_backward")


@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph = draw(st.integers(0, (dh * (kh - 1) + 1) // 2))
    pw = draw(st.integers(0, (dw * (kw - 1) + 1) // 2))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 12))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 12))
    return dict(k=(kh, kw), d=(dh, dw), p=(ph, pw), hw=(h, w), s=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                ceil=draw(st.booleans()), nc=(draw(st.sampled_from([0, 1, 2])), draw(st.integers(1, 4))),
                include_pad=draw(st.booleans()), dtype=draw(dtypes), layout=draw(layouts),
                seed=draw(st.integers(0, 2**16)))


@given(pool_cases())
def test_max_pool2d(c):
    dt = c["dtype"]
    x = make(c["seed"], c["nc"] + c["hw"], dt, c["layout"])
    kw = dict(kernel_size=c["k"], stride=c["s"], padding=c["p"], dilation=c["d"], ceil_mode=c["ceil"])
    oh = pool_output_size(c["hw"][0], c["k"][0], c["s"][0], c["p"][0], c["d"][0], c["ceil"])
    ow = pool_output_size(c["hw"][1], c["k"][1], c["s"][1], c["p"][1], c["d"][1], c["ceil"])
    if min(oh, ow) < 1:
        return
    out, idx = nk.max_pool2d(x, return_indices=True, **kw)
    ref, ref_idx = nk.max_pool2d(exact(x), return_indices=True, backend="numpy", **kw)
    check((out, idx), (ref, ref_idx), dt, "max_pool2d")
    g = make(c["seed"] + 1, out.shape, dt, "contiguous")
    check(nk.max_pool2d_backward(g, x, idx, **kw),
          nk.max_pool2d_backward(exact(g), exact(x), ref_idx, backend="numpy", **kw), dt, "max_pool2d_backward")


@given(pool_cases())
def test_avg_pool2d(c):
    dt = c["dtype"]
    k, p = c["k"], (min(c["p"][0], c["k"][0] // 2), min(c["p"][1], c["k"][1] // 2))
    hw = (max(c["hw"][0], k[0]), max(c["hw"][1], k[1]))
    x = make(c["seed"], c["nc"] + hw, dt, c["layout"])
    kw = dict(kernel_size=k, stride=c["s"], padding=p, ceil_mode=c["ceil"], count_include_pad=c["include_pad"])
    out = nk.avg_pool2d(x, **kw)
    check_sums(out, nk.avg_pool2d(exact(x), backend="numpy", **kw), nk.avg_pool2d(magnitude(x), backend="numpy", **kw),
               dt, "avg_pool2d")
    g = make(c["seed"] + 1, out.shape, dt, "contiguous")
    check_sums(nk.avg_pool2d_backward(g, x, **kw), nk.avg_pool2d_backward(exact(g), exact(x), backend="numpy", **kw),
               nk.avg_pool2d_backward(magnitude(g), exact(x), backend="numpy", **kw), dt, "avg_pool2d_backward")


@given(st.integers(0, 2), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.integers(0, 6),
       st.integers(0, 6), dtypes, layouts, st.integers(0, 2**16))
def test_adaptive_avg_pool2d(n, ch, h, w, oh, ow, dt, layout, seed):
    x = make(seed, (n, ch, h, w), dt, layout)
    out = nk.adaptive_avg_pool2d(x, (oh, ow))
    check_sums(out, nk.adaptive_avg_pool2d(exact(x), (oh, ow), backend="numpy"),
               nk.adaptive_avg_pool2d(magnitude(x), (oh, ow), backend="numpy"), dt, "adaptive_avg_pool2d")
    g = make(seed + 1, out.shape, dt, "contiguous")
    check_sums(nk.adaptive_avg_pool2d_backward(g, x),
               nk.adaptive_avg_pool2d_backward(exact(g), exact(x), backend="numpy"),
               nk.adaptive_avg_pool2d_backward(magnitude(g), exact(x), backend="numpy"), dt,
               "adaptive_avg_pool2d_backward")


# At least 3 channels: grad_weight and grad_bias are one sum per channel, and a single float32 sum of
# random terms that happens to cancel has an unbounded relative error; over several channels the
# norm is held by the ones that do not cancel.
@given(st.sampled_from([(5, 3), (4, 3, 7), (3, 4, 5, 2), (1, 3, 2, 2), (6, 3, 1, 1)]), st.booleans(),
       st.booleans(), dtypes, layouts, st.integers(0, 2**16), st.floats(-1e3, 1e3))
def test_batch_norm(shape, training, affine, dt, layout, seed, offset):
    x = (make(seed, shape, dt, layout) + dt(offset)).astype(dt)
    c = shape[1]
    w = make(seed + 1, (c,), dt, "contiguous") if affine else None
    b = make(seed + 2, (c,), dt, "contiguous") if affine else None
    rm, rv = make(seed + 3, (c,), dt, "contiguous"), (np.abs(make(seed + 4, (c,), dt, "contiguous")) + 0.5).astype(dt)
    rm64, rv64 = exact(rm).copy(), exact(rv).copy()
    out, mean, invstd = nk.batch_norm(x, rm, rv, w, b, training, return_stats=True)
    ref, ref_mean, ref_invstd = nk.batch_norm(exact(x), rm64, rv64, exact(w), exact(b), training,
                                              return_stats=True, backend="numpy")
    check((out, rm, rv), (ref, rm64, rv64), dt, "batch_norm")
    g = make(seed + 5, shape, dt, "contiguous")
    # the backward from the reference's own statistics, in each dtype, so that only the kernel differs
    got = nk.batch_norm_backward(g, x, w, ref_mean.astype(dt), ref_invstd.astype(dt), training)
    want = nk.batch_norm_backward(exact(g), exact(x), exact(w), exact(ref_mean.astype(dt)),
                                  exact(ref_invstd.astype(dt)), training, backend="numpy")
    check(got, want, dt, "batch_norm_backward")


@given(st.integers(0, 5), st.integers(1, 9), st.integers(1, 7), st.booleans(), dtypes, layouts,
       st.integers(0, 2**16))
def test_linear(n, fin, fout, bias, dt, layout, seed):
    x, w = make(seed, (n, fin), dt, layout), make(seed + 1, (fout, fin), dt, layout)
    b = make(seed + 2, (fout,), dt, "contiguous") if bias else None
    out = nk.linear(x, w, b)
    check_sums(out, nk.linear(exact(x), exact(w), exact(b), backend="numpy"),
               nk.linear(magnitude(x), magnitude(w), magnitude(b), backend="numpy"), dt, "linear")
    g = make(seed + 3, out.shape, dt, "contiguous")
    check_sums(nk.linear_backward(g, x, w), nk.linear_backward(exact(g), exact(x), exact(w), backend="numpy"),
               nk.linear_backward(magnitude(g), magnitude(x), magnitude(w), backend="numpy"), dt, "linear_backward")


@given(st.sampled_from(["relu", "sigmoid", "tanh"]), st.lists(st.integers(0, 7), min_size=1, max_size=3),
       dtypes, layouts, st.integers(0, 2**16), st.sampled_from([1.0, 10.0, 100.0]))
def test_pointwise(name, shape, dt, layout, seed, scale):
    x = (make(seed, tuple(shape), dt, layout) * dt(scale)).astype(dt)
    fn, bwd = getattr(nk, name), getattr(nk, name + "_backward")
    out = fn(x)
    check(out, fn(exact(x), backend="numpy"), dt, name)
    g = make(seed + 1, x.shape, dt, "contiguous")
    check(bwd(g, out), bwd(exact(g), exact(out), backend="numpy"), dt, name + "_backward")


@given(st.sampled_from(["softmax", "log_softmax"]), st.lists(st.integers(1, 6), min_size=1, max_size=3),
       st.integers(-3, 2), dtypes, layouts, st.integers(0, 2**16))
def test_softmax(name, shape, dim, dt, layout, seed):
    dim = dim % len(shape)
    x = (make(seed, tuple(shape), dt, layout) * dt(5)).astype(dt)
    fn, bwd = getattr(nk, name), getattr(nk, name + "_backward")
    out = fn(x, dim)
    check(out, fn(exact(x), dim, backend="numpy"), dt, name)
    g = make(seed + 1, x.shape, dt, "contiguous")
    check(bwd(g, out, dim), bwd(exact(g), exact(out), dim, backend="numpy"), dt, name + "_backward")


@given(st.integers(1, 9), st.integers(1, 8), dtypes, st.integers(0, 2**16))
def test_cross_entropy(n, c, dt, seed):
    logits = make(seed, (n, c), dt, "contiguous")
    target = np.random.default_rng(seed).integers(0, c, n)
    check(nk.cross_entropy(logits, target), nk.cross_entropy(exact(logits), target, backend="numpy"), dt, "ce")
    check(nk.cross_entropy_backward(dt(1.5), logits, target),
          nk.cross_entropy_backward(1.5, exact(logits), target, backend="numpy"), dt, "ce_backward")


@given(st.lists(st.integers(0, 9), min_size=1, max_size=3), st.floats(0.05, 0.95), st.integers(0, 2**40), dtypes)
def test_dropout_mask_is_backend_independent(shape, p, seed, dt):
    x = make(seed % 2**16, tuple(shape), dt, "contiguous")
    out, mask = nk.dropout(x, p, seed=seed, return_mask=True)
    ref, ref_mask = nk.dropout(x, p, seed=seed, return_mask=True, backend="numpy")
    assert np.array_equal(mask, ref_mask)
    assert np.array_equal(out, ref)


@st.composite
def rnn_cases(draw):
    dtype = draw(dtypes)
    # float32 with input or hidden size 1 makes a weight gradient a single cancelling sum of T*N terms,
    # whose float32 relative error no kernel can hold to 1e-5; those sizes are drawn in float64 only
    smallest = 1 if dtype == np.float64 else 2
    return dict(mode=draw(st.sampled_from(["lstm", "gru", "rnn"])), t=draw(st.integers(1, 5)),
                n=draw(st.integers(0, 3)), i=draw(st.integers(smallest, 4)), h=draw(st.integers(smallest, 4)),
                layers=draw(st.integers(1, 2)), bidir=draw(st.booleans()), bf=draw(st.booleans()),
                bias=draw(st.booleans()), h0=draw(st.booleans()), dtype=dtype,
                seed=draw(st.integers(0, 2**16)))


@given(rnn_cases())
def test_recurrent_sequences(c):
    dt, gates = c["dtype"], {"lstm": 4, "gru": 3, "rnn": 1}[c["mode"]]
    d = 2 if c["bidir"] else 1
    x = make(c["seed"], (c["n"], c["t"], c["i"]) if c["bf"] else (c["t"], c["n"], c["i"]), dt, "transposed")
    params, k = [], 1
    for layer in range(c["layers"]):
        for _ in range(d):
            fan_in = c["i"] if layer == 0 else d * c["h"]
            shapes = [(gates * c["h"], fan_in), (gates * c["h"], c["h"])]
            shapes += [(gates * c["h"],)] * 2 if c["bias"] else []
            for s in shapes:
                params.append((make(c["seed"] + k, s, dt, "contiguous") * dt(0.5)).astype(dt))
                k += 1
    state_shape = (c["layers"] * d, c["n"], c["h"])
    hx = None
    if c["h0"]:
        h0 = make(c["seed"] + 100, state_shape, dt, "contiguous")
        hx = (h0, make(c["seed"] + 101, state_shape, dt, "contiguous")) if c["mode"] == "lstm" else h0
    hx64 = None if hx is None else (tuple(map(exact, hx)) if c["mode"] == "lstm" else exact(hx))
    fn = {"lstm": nk.lstm, "gru": nk.gru, "rnn": nk.rnn}[c["mode"]]
    kw = dict(num_layers=c["layers"], bidirectional=c["bidir"], batch_first=c["bf"], has_biases=c["bias"],
              return_workspace=True)
    got = fn(x, hx, params, **kw)
    want = fn(exact(x), hx64, [exact(p) for p in params], backend="numpy", **kw)
    flat = (lambda r: (r[0], *r[1])) if c["mode"] == "lstm" else (lambda r: (r[0], r[1]))
    check(flat(got), flat(want), dt, c["mode"])
    g = make(c["seed"] + 200, got[0].shape, dt, "contiguous")
    if c["mode"] == "lstm":
        grads, ref = nk.lstm_backward(g, None, None, got[2]), nk.lstm_backward(exact(g), None, None, want[2])
        check((grads.input, *grads.hx, *grads.params), (ref.input, *ref.hx, *ref.params), dt, "lstm_backward")
    else:
        bwd = nk.gru_backward if c["mode"] == "gru" else nk.rnn_backward
        grads, ref = bwd(g, None, got[2]), bwd(exact(g), None, want[2])
        check((grads.input, grads.hx, *grads.params), (ref.input, ref.hx, *ref.params), dt, c["mode"] + "_backward")


def test_conv_output_sizes_agree_with_shapes_module():
    assert conv_output_size(7, 3, 2, 1, 1, 1) == 4
