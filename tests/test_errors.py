"""The errors API.md promises: type and message, for bad input on every op family."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nnkern as nk

f32 = np.float32


def r(*shape, dtype=f32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


CASES = [
    # (id, exception, message fragment, thunk)
    ("conv2d rank", ValueError, "input must be 4-D", lambda: nk.conv2d(r(3, 4), r(2, 3, 3, 3))),
    ("conv2d channels", ValueError, "weight.shape[1] * groups", lambda: nk.conv2d(r(1, 4, 5, 5), r(2, 3, 3, 3))),
    ("conv2d groups divide", ValueError, "groups=3 must divide the input channels",
     lambda: nk.conv2d(r(1, 4, 5, 5), r(3, 1, 3, 3), groups=3)),
    ("conv2d output size", ValueError, "output size below 1", lambda: nk.conv2d(r(1, 1, 2, 2), r(1, 1, 3, 3))),
    ("conv2d zero stride", ValueError, "stride must be positive", lambda: nk.conv2d(r(1, 1, 5, 5), r(1, 1, 3, 3), stride=0)),
    ("conv2d negative stride", ValueError, "stride must be positive",
     lambda: nk.conv2d(r(1, 1, 5, 5), r(1, 1, 3, 3), stride=(1, -2))),
    ("conv2d negative padding", ValueError, "padding must be >= 0",
     lambda: nk.conv2d(r(1, 1, 5, 5), r(1, 1, 3, 3), padding=-1)),
    ("conv2d same strided", ValueError, "padding='same' needs stride 1",
     lambda: nk.conv2d(r(1, 1, 5, 5), r(1, 1, 3, 3), stride=2, padding="same")),
    ("conv2d bad padding string", ValueError, "padding must be", lambda: nk.conv2d(r(1, 1, 5, 5), r(1, 1, 3, 3), padding="full")),
    ("conv2d bias shape", ValueError, "bias must have shape (2,)", lambda: nk.conv2d(r(1, 1, 5, 5), r(2, 1, 3, 3), r(3))),
    ("conv2d residual shape", ValueError, "residual must have shape",
     lambda: nk.conv2d(r(1, 1, 5, 5), r(2, 1, 3, 3), activation="relu", residual=r(1, 2, 5, 5))),
    ("conv2d activation", ValueError, "activation must be None or 'relu'",
     lambda: nk.conv2d(r(1, 1, 5, 5), r(2, 1, 3, 3), activation="gelu")),
    ("conv2d float stride", TypeError, "stride must be an int or a pair",
     lambda: nk.conv2d(r(1, 1, 5, 5), r(1, 1, 3, 3), stride=1.5)),
    ("conv1d rank", ValueError, "input must be 3-D", lambda: nk.conv1d(r(1, 1, 5, 5), r(1, 1, 3))),
    ("mixed dtypes", TypeError, "float32 and weight float64", lambda: nk.conv2d(r(1, 1, 5, 5), r(1, 1, 3, 3, dtype=np.float64))),
    ("int dtype", TypeError, "input must have dtype float32 or float64, got int64",
     lambda: nk.relu(np.arange(5))),
    ("object dtype", TypeError, "got object", lambda: nk.relu(np.array([1.0, None], dtype=object))),
    ("complex dtype", TypeError, "got complex128", lambda: nk.tanh(np.ones(3, dtype=complex))),
    ("float16 dtype", TypeError, "got float16", lambda: nk.sigmoid(np.ones(3, dtype=np.float16))),
    ("string input", TypeError, "got <U1", lambda: nk.relu(np.array(["a"]))),
    ("max_pool output size", ValueError, "output size below 1", lambda: nk.max_pool2d(r(1, 1, 2, 2), 3)),
    ("max_pool zero stride", ValueError, "stride must be positive", lambda: nk.max_pool2d(r(1, 1, 6, 6), 2, stride=0)),
    ("max_pool padding too big", ValueError, "padding must be at most half",
     lambda: nk.max_pool2d(r(1, 1, 6, 6), 2, padding=2)),
    ("avg_pool rank", ValueError, "input must be 4-D", lambda: nk.avg_pool2d(r(6, 6), 2)),
    ("adaptive negative", ValueError, "output_size must be >= 0", lambda: nk.adaptive_avg_pool2d(r(1, 1, 6, 6), -1)),
    ("batch_norm channels", ValueError, "running_mean must have shape (3,)",
     lambda: nk.batch_norm(r(2, 3, 4, 4), r(4), r(4) ** 2)),
    ("batch_norm one value", ValueError, "more than 1 value per channel",
     lambda: nk.batch_norm(r(1, 3), None, None, training=True)),
    ("batch_norm eval no stats", ValueError, "required when training=False",
     lambda: nk.batch_norm(r(2, 3), None, None, training=False)),
    ("batch_norm read-only stats", ValueError, "read-only", lambda: nk.batch_norm(
        r(2, 3), np.broadcast_to(f32(0), (3,)), np.ones(3, f32), training=True)),
    ("linear features", ValueError, "input.shape[-1] must equal weight.shape[1]", lambda: nk.linear(r(2, 3), r(4, 5))),
    ("softmax dim", IndexError, "dim must be in [-2, 1]", lambda: nk.softmax(r(2, 3), 2)),
    ("dropout p", ValueError, "p must be in [0.0, 1.0]", lambda: nk.dropout(r(3), 1.5)),
    ("cross_entropy target range", ValueError, "target values must be in [0, 2]",
     lambda: nk.cross_entropy(r(2, 3), np.array([0, 3]))),
    ("cross_entropy float target", TypeError, "integer class indices", lambda: nk.cross_entropy(r(2, 3), r(2))),
    ("lstm_cell hidden vs weights", ValueError, "h must have shape (2, 3)",
     lambda: nk.lstm_cell(r(2, 4), (r(2, 5), r(2, 5)), r(12, 4), r(12, 3))),
    ("lstm_cell w_ih", ValueError, "w_ih must have shape (12, 4)",
     lambda: nk.lstm_cell(r(2, 4), None, r(12, 5), r(12, 3))),
    ("gru_cell gates", ValueError, "w_hh must have shape (9, 3)", lambda: nk.gru_cell(r(2, 4), None, r(9, 4), r(12, 3))),
    ("rnn_cell nonlinearity", ValueError, "nonlinearity must be 'tanh' or 'relu'",
     lambda: nk.rnn_cell(r(2, 4), None, r(3, 4), r(3, 3), nonlinearity="gelu")),
    ("lstm params count", ValueError, "params must hold 4 arrays", lambda: nk.lstm(r(3, 2, 4), None, [r(12, 4)])),
    ("lstm hidden size", ValueError, "h_0 must have shape (1, 2, 3)",
     lambda: nk.lstm(r(3, 2, 4), (r(1, 2, 5), r(1, 2, 5)), [r(12, 4), r(12, 3), r(12), r(12)])),
    ("lstm layer-2 weights", ValueError, "weight_ih_l1",
     lambda: nk.lstm(r(3, 2, 4), None, [r(12, 4), r(12, 3), r(12, 4), r(12, 3)], num_layers=2, has_biases=False)),
    ("gru empty sequence", ValueError, "sequence length must be at least 1",
     lambda: nk.gru(r(0, 2, 4), None, [r(9, 4), r(9, 3), r(9), r(9)])),
    ("bad backend", ValueError, "backend must be one of", lambda: nk.relu(r(3), backend="gpu")),
    ("huge output", ValueError, "more than nnkern can index", lambda: nk.conv2d(
        np.broadcast_to(f32(0), (2**20, 1, 2**20, 2**10)), np.broadcast_to(f32(0), (2**20, 1, 1, 1)))),
]


@pytest.mark.parametrize("exc,fragment,thunk", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error(exc, fragment, thunk):
    with pytest.raises(exc) as info:
        thunk()
    assert fragment in str(info.value), f"message {str(info.value)!r} lacks {fragment!r}"


def test_cuda_backend_says_what_is_missing():
    if nk.info()["cuda_available"]:
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError) as info:
        nk.relu(r(3), backend="cuda")
    message = str(info.value)
    assert ("not compiled" in message) or ("no CUDA device" in message), message


def test_use_backend_rejects_unknown_name():
    with pytest.raises(ValueError):
        with nk.use_backend("tpu"):
            pass


def test_nan_propagates_through_max_pool():
    x = r(1, 1, 4, 4)
    x[0, 0, 1, 1] = np.nan
    out, idx = nk.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(out[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 5
    assert not np.isnan(out[0, 0, 1, 1])


def test_inf_propagates():
    x = r(1, 2, 4, 4)
    x[0, 0, 0, 0] = np.inf
    assert np.isinf(nk.max_pool2d(x, 2)[0, 0, 0, 0])
    assert np.isinf(nk.avg_pool2d(x, 2)[0, 0, 0, 0])
    assert np.isinf(nk.conv2d(x, np.ones((1, 2, 1, 1), f32))[0, 0, 0, 0])


def test_zero_sized_batches_give_empty_results():
    assert nk.conv2d(r(0, 3, 5, 5), r(4, 3, 3, 3)).shape == (0, 4, 3, 3)
    assert nk.max_pool2d(r(0, 3, 4, 4), 2).shape == (0, 3, 2, 2)
    assert nk.adaptive_avg_pool2d(r(2, 3, 4, 4), 0).shape == (2, 3, 0, 0)
    assert nk.linear(r(0, 5), r(2, 5)).shape == (0, 2)


def test_unallocatable_output_is_memory_error():
    """An output too large to allocate: MemoryError (or ValueError), never a crash (run in a child)."""
    code = textwrap.dedent("""
        import numpy as np, nnkern as nk
        x = np.broadcast_to(np.float32(1), (1, 1, 2**21, 2**21))
        try:
            nk.avg_pool2d(x, 1, backend="numpy")
        except (MemoryError, ValueError) as e:
            print("raised", type(e).__name__)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "raised" in proc.stdout


def test_cpu_backend_without_kernel_is_not_implemented():
    from nnkern.functional import OPS
    missing = [op for op in OPS if op not in nk.info()["native_ops"]["cpu"]]
    if "relu" in missing:
        pytest.fail("relu must be native")
    if not missing:
        pytest.skip("every op is native")
    if "max_pool2d" in missing:
        with pytest.raises(NotImplementedError, match="no native kernel"):
            nk.max_pool2d(r(1, 1, 4, 4), 2, backend="cpu")


def test_repeated_conv_calls_still_validate_each_call():
    """conv2d keeps the checks of calls that passed (per shapes and typed options): a later call that
    differs only in an option's type (True or 1.0 for 1), or in a shape, is still checked and rejected."""
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    for _ in range(2):
        assert nk.conv2d(x, w, stride=1, padding=(1, 1)).shape == (2, 4, 8, 8)
        assert nk.conv2d_backward(np.ones((2, 4, 8, 8), np.float32), x, w, 1, (1, 1))[1].shape == w.shape
    for bad, exc in [(True, TypeError), (1.0, TypeError), ((1, True), TypeError), ([1, 1.5], TypeError), (0, ValueError)]:
        with pytest.raises(exc, match="stride"):
            nk.conv2d(x, w, stride=bad, padding=(1, 1))
    with pytest.raises(ValueError, match="padding"):
        nk.conv2d(x, w, stride=1, padding=(1, -1))
    with pytest.raises(ValueError):
        nk.conv2d(x, np.ones((4, 2, 3, 3), np.float32), stride=1, padding=(1, 1))
    with pytest.raises(ValueError, match="grad_output"):
        nk.conv2d_backward(np.ones((2, 4, 7, 8), np.float32), x, w, 1, (1, 1))


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_repeated_pool_calls_still_validate_each_call(backend):
    """The pools keep the resolved call of a NumPy input that passed (per shape, dtype, typed options
    and default backend): a later call that differs only in an option's type (True for 1, 2.0 for 2),
    in a shape or in the default backend is still checked, and a repeated call gives the first's
    result (values, indices, output size)."""
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 8)).astype(np.float32)
    with nk.use_backend(backend):
        first = [nk.max_pool2d(x, 3, 2, 1), nk.max_pool2d(x, 3, 2, 1, return_indices=True),
                 nk.avg_pool2d(x, 2, None, 1, True, False), nk.adaptive_avg_pool2d(x, (2, None))]
        for _ in range(2):
            again = [nk.max_pool2d(x, 3, 2, 1), nk.max_pool2d(x, 3, 2, 1, return_indices=True),
                     nk.avg_pool2d(x, 2, None, 1, True, False), nk.adaptive_avg_pool2d(x, (2, None))]
            np.testing.assert_array_equal(again[0], first[0])
            np.testing.assert_array_equal(again[1][0], first[1][0])
            np.testing.assert_array_equal(again[1][1], first[1][1])
            np.testing.assert_array_equal(again[2], first[2])
            np.testing.assert_array_equal(again[3], first[3])
            assert again[3].shape == (2, 3, 2, 8)
        for bad in (True, 2.0):
            with pytest.raises(TypeError, match="kernel_size"):
                nk.avg_pool2d(x, bad, None, 1, True, False)
            with pytest.raises(TypeError, match="kernel_size"):
                nk.max_pool2d(x, bad, 2, 1)
        with pytest.raises(ValueError, match="padding"):
            nk.max_pool2d(x, 3, 2, 2)
        with pytest.raises(ValueError, match="output size"):
            nk.avg_pool2d(x[:, :, :2, :2], 3, None, 0, False, False)
        np.testing.assert_array_equal(nk.avg_pool2d(x, 2, None, 1, 1, 0), first[2])  # int flags, as torch takes them
        with pytest.raises((TypeError, ValueError), match="output_size"):
            nk.adaptive_avg_pool2d(x, (2, -1))
    with nk.use_backend("numpy" if backend == "cpu" else "cpu"):
        np.testing.assert_allclose(nk.avg_pool2d(x, 2, None, 1, True, False), first[2], rtol=1e-6)
    with nk.use_backend("cuda"):  # resolved again: host arrays cannot run there
        with pytest.raises((TypeError, RuntimeError)):
            nk.avg_pool2d(x, 2, None, 1, True, False)
