"""The counter-based generator behind dropout masks.

Element ``i`` of a mask drawn with ``seed`` depends only on ``(seed, i)``, so
every backend (NumPy, native CPU with any thread count, CUDA) draws the same
mask for the same seed. The draw is splitmix64 of ``key(seed) + (i + 1) * phi``;
its top 24 bits ``u`` give the decision ``keep = u >= threshold(p)``, an
integer comparison that every backend can make exactly.
"""
from __future__ import annotations

import numpy as np

_PHI = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_U64 = (1 << 64) - 1


def _mix_int(z: int) -> int:
    """splitmix64's finalizer on a Python int (mod 2**64)."""
    z &= _U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    return z ^ (z >> 31)


def key(seed: int) -> int:
    """The stream key of a seed (so that nearby seeds give unrelated streams)."""
    return _mix_int(int(seed) + 0x9E3779B97F4A7C15)


def derive(seed: int, k: int) -> int:
    """A sub-seed for the k-th independent mask drawn from one user seed (e.g. per RNN layer)."""
    return _mix_int(key(seed) ^ (int(k) * 0xD1B54A32D192ED03 & _U64))


def threshold(p: float) -> int:
    """Drop an element when its 24-bit draw is below this."""
    return int(p * (1 << 24))


def bits24(seed: int, n: int) -> np.ndarray:
    """24-bit draws for counters 0..n-1, as uint32."""
    k = np.uint64(key(seed))
    with np.errstate(over="ignore"):
        z = k + (np.arange(1, n + 1, dtype=np.uint64) * _PHI)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.uint32)


def keep_mask(seed: int, shape: tuple[int, ...], p: float) -> np.ndarray:
    """Boolean keep-mask of ``shape`` (C order counters) for drop probability ``p``."""
    n = int(np.prod(shape, dtype=np.int64))
    return (bits24(seed, n) >= np.uint32(threshold(p))).reshape(shape)
