"""The weight cache (csrc/core/weight_cache.h): packed and Winograd-transformed convolution weights
kept across calls.

What must hold: a weight seen twice is stored and then served from the cache (hits counted); a cached
result has the same bits as one computed without the cache; a weight changed in place (an optimizer
step, ``w *= 2``, a NaN written into it) is never served stale; ``nnkern.empty_cache()`` drops the
entries; ``NNKERN_WEIGHT_CACHE_MB`` bounds the bytes (0 turns the cache off); one-off weights take no
memory; concurrent Python threads share entries safely.
"""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import nnkern
import nnkern._cpu as _cpu
from nnkern.backends.native import conv as native
from nnkern.backends.numpy_ref import conv as ref

ISAS = _cpu.supported_isas()

# (x shape, weight shape, stride, padding): the GEMM path (3x3 stride 2), a grouped GEMM, a 1x1,
# and (float32, AVX-512) Winograd forward and grad_input
CASES = {
    "gemm 3x3 s2": ((2, 12, 11, 9), (20, 12, 3, 3), 2, 1),
    "gemm grouped": ((2, 12, 9, 8), (9, 4, 3, 3), 1, 1),
    "1x1": ((2, 24, 7, 6), (10, 24, 1, 1), 1, 0),
    "winograd": ((2, 32, 12, 11), (24, 32, 3, 3), 1, 1),
}


def _groups(case):
    xs, ws, _, _ = CASES[case]
    return xs[1] // ws[1]


def _data(case, seed=0, dtype=np.float32):
    xs, ws, _, _ = CASES[case]
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(xs).astype(dtype), (0.3 * rng.standard_normal(ws)).astype(dtype),
            rng.standard_normal(ws[0]).astype(dtype))


def _geo(case):
    """stride, padding (t, b, l, r), dilation in the native operator's form."""
    _, _, s, p = CASES[case]
    return (s, s), (p, p, p, p), (1, 1)


def _forward(case, x, w, b):
    s, p, d = _geo(case)
    return native.OPS["conv2d"](x, w, b, s, p, d, _groups(case), None, None)


def _grad_input(case, x, w, g):
    s, p, d = _geo(case)
    return native.OPS["conv2d_backward"](g, x, w, s, p, d, _groups(case), (True, False, False))[0]


@pytest.fixture(autouse=True)
def fresh_cache():
    nnkern.empty_cache()
    yield
    nnkern.empty_cache()


def test_counters_and_empty_cache():
    x, w, b = _data("gemm 3x3 s2")
    before = _cpu.weight_cache_info()
    outs = [_forward("gemm 3x3 s2", x, w, b) for _ in range(4)]
    info = _cpu.weight_cache_info()
    # call 1 builds and remembers the key, call 2 builds and stores, calls 3 and 4 hit
    assert info["stored"] - before["stored"] == 1
    assert info["hits"] - before["hits"] == 2
    assert info["entries"] == 1 and info["bytes"] >= w.nbytes and info["limit_bytes"] > 0
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])
    nnkern.empty_cache()
    assert _cpu.weight_cache_info()["entries"] == 0 and _cpu.weight_cache_info()["bytes"] == 0


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("case", list(CASES))
def test_cached_bits_equal_uncached_and_follow_in_place_changes(isa, case):
    x, w, b = _data(case, seed=1)
    g = np.random.default_rng(2).standard_normal(_forward(case, x, w, b).shape).astype(np.float32)
    first = _forward(case, x, w, b), _grad_input(case, x, w, g)  # built, not stored
    for _ in range(3):  # stored, then hits
        again = _forward(case, x, w, b), _grad_input(case, x, w, g)
        for a, c in zip(first, again):
            assert np.array_equal(a, c)
    # an in-place change of the weight (as an optimizer step makes): the next call sees it
    w *= np.float32(-1.5)
    w[0, 0, 0, 0] += np.float32(0.25)
    changed = _forward(case, x, w, b), _grad_input(case, x, w, g)
    nnkern.empty_cache()
    fresh = _forward(case, x, w, b), _grad_input(case, x, w, g)
    for a, c in zip(changed, fresh):
        assert np.array_equal(a, c)
    s, p, d = _geo(case)
    x64, w64, b64, g64 = (a.astype(np.float64) for a in (x, w, b, g))
    expected = ref.conv2d(x64, w64, b64, s, p, d, _groups(case), None, None)
    err = np.linalg.norm(changed[0] - expected) / np.linalg.norm(expected)
    assert err <= 1e-5
    expected_gx = ref.conv2d_backward(g64, x64, w64, s, p, d, _groups(case), (True, False, False))[0]
    err = np.linalg.norm(changed[1] - expected_gx) / np.linalg.norm(expected_gx)
    assert err <= 1e-5


def test_nan_written_into_a_cached_winograd_weight_gives_the_ieee_result():
    x, w, b = _data("winograd", seed=3)
    for _ in range(3):
        _forward("winograd", x, w, b)
    w[1, 2, 1, 1] = np.nan
    out = _forward("winograd", x, w, b)
    s, p, d = _geo("winograd")
    expected = ref.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), s, p, d, 1, None, None)
    # output channel 1 is NaN where the NaN tap met the input, the other channels untouched (a
    # Winograd tile would smear the NaN: the direct path runs instead)
    assert np.array_equal(np.isnan(out), np.isnan(expected))
    assert np.isnan(out[:, 1]).any() and not np.isnan(out[:, 0]).any()
    fin = ~np.isnan(expected)
    assert np.abs(out[fin] - expected[fin]).max() <= 1e-4 * np.abs(expected[fin]).max()


def test_a_new_array_at_a_reused_address_is_compared_not_trusted():
    # the same shape allocated again (often at the same address) with other values
    x, _, b = _data("gemm 3x3 s2")
    rng = np.random.default_rng(4)
    for i in range(6):
        w = rng.standard_normal(CASES["gemm 3x3 s2"][1]).astype(np.float32)
        got = [_forward("gemm 3x3 s2", x, w, b) for _ in range(3)]
        s, p, d = _geo("gemm 3x3 s2")
        expected = ref.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), s, p, d, 1, None,
                              None)
        for o in got:
            assert np.linalg.norm(o - expected) / np.linalg.norm(expected) <= 1e-5, i
        del w


def test_one_off_weights_are_not_stored():
    x, _, b = _data("gemm 3x3 s2")
    rng = np.random.default_rng(5)
    keep = []  # distinct live arrays: distinct addresses
    for _ in range(10):
        keep.append(rng.standard_normal(CASES["gemm 3x3 s2"][1]).astype(np.float32))
        _forward("gemm 3x3 s2", x, keep[-1], b)
    assert _cpu.weight_cache_info()["entries"] == 0


def test_concurrent_threads_share_entries():
    x, w, b = _data("winograd", seed=6)
    expected = _forward("winograd", x, w, b)
    errors = []

    def work():
        try:
            for _ in range(20):
                if not np.array_equal(_forward("winograd", x, w, b), expected):
                    errors.append("bits differ")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert _cpu.weight_cache_info()["entries"] == 1


@pytest.mark.parametrize("limit_mb,max_entries", [("0", 0), ("1", None)])
def test_limit_from_environment(limit_mb, max_entries):
    code = textwrap.dedent(f"""
        import numpy as np, nnkern._cpu as c
        from nnkern.backends.native import conv as native
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, 64, 8, 8)).astype(np.float32)
        ws = [rng.standard_normal((64, 64, 3, 3)).astype(np.float32) for _ in range(6)]  # 147 KiB each
        outs = []
        for w in ws:
            for _ in range(3):
                outs.append(native.OPS["conv2d"](x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, None, None))
        info = c.weight_cache_info()
        assert info["limit_bytes"] == {int(limit_mb)} << 20, info
        assert info["bytes"] <= info["limit_bytes"], info
        if {max_entries!r} is not None:
            assert info["entries"] <= {max_entries!r}, info
        else:
            assert info["entries"] >= 1, info
        print("ok")
    """)
    env = dict(os.environ, NNKERN_WEIGHT_CACHE_MB=limit_mb)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


# ---- nnkern.set_conv_algorithm / NNKERN_CONV_ALGORITHM (Winograd on or off)

@pytest.fixture
def algorithm():
    before = nnkern.get_conv_algorithm()
    yield nnkern.set_conv_algorithm
    nnkern.set_conv_algorithm(before)


def test_set_conv_algorithm_direct_turns_winograd_off(algorithm):
    x, w, b = _data("winograd", seed=7)
    s, p, d = _geo("winograd")
    expected = ref.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), s, p, d, 1, None, None)
    algorithm("direct")
    assert nnkern.get_conv_algorithm() == "direct" and nnkern.info()["conv_algorithm"] == "direct"
    direct = nnkern.conv2d(x, w, b, padding=1)
    algorithm("auto")
    auto = nnkern.conv2d(x, w, b, padding=1)
    err = lambda o: np.linalg.norm(o - expected) / np.linalg.norm(expected)  # noqa: E731
    assert err(direct) <= 1e-6 and err(auto) <= 5e-4
    if _cpu.isa() == "avx512":  # Winograd exists only there: its rounding differs from the direct sum
        assert not np.array_equal(direct, auto)
        assert err(direct) < err(auto)


def test_set_conv_algorithm_rejects_unknown_names(algorithm):
    with pytest.raises(ValueError, match="auto"):
        nnkern.set_conv_algorithm("fast")
    with pytest.raises(TypeError):
        nnkern.set_conv_algorithm(1)
    assert nnkern.get_conv_algorithm() in ("auto", "direct")


@pytest.mark.parametrize("value,ok", [("direct", True), ("auto", True), ("winograd-please", False)])
def test_conv_algorithm_environment_variable(value, ok):
    code = "import nnkern; print(nnkern.get_conv_algorithm())"
    env = dict(os.environ, NNKERN_CONV_ALGORITHM=value)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0 and r.stdout.strip() == value, r.stderr
    else:
        assert r.returncode != 0 and "NNKERN_CONV_ALGORITHM" in r.stderr


# ---- linear: W^T packed once as the GEMM's B operand (batches above the dot-product rows)

@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("m,k,n", [(5, 7, 3), (33, 70, 45), (64, 400, 120), (130, 33, 200)])
def test_linear_cached_weight_bits_and_in_place_changes(isa, m, k, n):
    rng = np.random.default_rng(m + k + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    before = _cpu.weight_cache_info()
    outs = [nnkern.linear(x, w, b) for _ in range(4)]
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])
    assert _cpu.weight_cache_info()["hits"] - before["hits"] == 2
    expected = x.astype(np.float64) @ w.astype(np.float64).T + b
    assert np.linalg.norm(outs[0] - expected) / np.linalg.norm(expected) <= 1e-5
    w[n // 2] *= np.float32(-3.0)  # as an optimizer step would change it, in place
    changed = nnkern.linear(x, w, b)
    expected = x.astype(np.float64) @ w.astype(np.float64).T + b
    assert np.linalg.norm(changed - expected) / np.linalg.norm(expected) <= 1e-5
    nnkern.empty_cache()
    assert np.array_equal(nnkern.linear(x, w, b), changed)


def test_entries_are_capped():
    # many small weights, each used twice (so each is stored): at most 256 entries stay
    x, _, b = _data("gemm 3x3 s2")
    rng = np.random.default_rng(9)
    keep = []
    for _ in range(300):
        keep.append(rng.standard_normal(CASES["gemm 3x3 s2"][1]).astype(np.float32))
        _forward("gemm 3x3 s2", x, keep[-1], b)
        _forward("gemm 3x3 s2", x, keep[-1], b)
    info = _cpu.weight_cache_info()
    assert info["stored"] >= 300 and info["entries"] == 256
