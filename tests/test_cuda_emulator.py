"""The launch primitives of csrc/cuda/launch.h as the host emulator runs them
(barriers, per-block shared memory, partial blocks, atomics, divergent barriers)."""
from __future__ import annotations

import numpy as np
import pytest

from nnkern import _cuda_emu as emu


@pytest.mark.parametrize("threads", [1, 2, 32, 96, 256])
@pytest.mark.parametrize("n", [1, 95, 96, 97, 1000])
def test_selftest_kernel(threads, n):
    out = np.full(3 * n, -12345, dtype=np.int32)
    counter = np.zeros(1, dtype=np.int32)
    emu.selftest(out.ctypes.data, counter.ctypes.data, n, threads, 0)
    out = out.reshape(n, 3)
    i = np.arange(n)
    block, t = np.divmod(i, threads)
    # the neighbour's index, read after the barrier (the block's last thread wraps to its first)
    assert np.array_equal(out[:, 0], block * threads + (t + 1) % threads)
    # thread 0's shared write is seen by its own block only
    assert np.array_equal(out[:, 1], block)
    # a value written after the second barrier is seen by the neighbour after the third
    assert np.array_equal(out[:, 2], i)
    # one atomic increment per thread inside the range (the partial last block's other threads skip it)
    assert counter[0] == n


def test_divergent_barrier_is_an_error():
    out = np.zeros(64, dtype=np.int32)
    with pytest.raises(RuntimeError, match="divergent __syncthreads.*32 of 64 threads wait at barrier 1"):
        emu._divergent_barrier(out.ctypes.data, 64)
    # the emulator is usable again after the error
    counter = np.zeros(1, dtype=np.int32)
    res = np.zeros(3 * 10, dtype=np.int32)
    emu.selftest(res.ctypes.data, counter.ctypes.data, 10, 4, 0)
    assert counter[0] == 10


@pytest.mark.parametrize("threads", [1025, 2048])
def test_block_size_limits(threads):
    with pytest.raises(RuntimeError, match="CUDA allows 1 to 1024"):
        emu.selftest(0, 0, 10, threads, 0)


def test_zero_sized_grid_launches_nothing():
    emu.selftest(0, 0, 0, 32, 0)  # null pointers: a launched kernel would crash
