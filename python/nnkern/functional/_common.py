"""Validation helpers shared by the functional ops.

Every message names the op, the argument, what was expected and what was
given, so that a user can fix the call without reading nnkern's source.
"""
from __future__ import annotations

import functools
import math
import numbers
import os
try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]
from typing import Any, Sequence

import numpy as np

from .. import backends
from .._arrays import FLOAT_DTYPES, as_array, check_float, check_same_device
from .._config import default_backend

# Element counts past this cannot be indexed by the native kernels (int64) with room to spare.
MAX_ELEMENTS = 2**62
# Integer options (sizes, strides, paddings, dilations, groups, ...) are at most this: with every
# array extent below MAX_ELEMENTS, a sum such as size + 2 * padding then stays inside int64 in the
# native kernels, and a larger option could not give a valid output anyway.
MAX_OPTION = 2**60


class DimensionError(ValueError, IndexError):
    """A ``dim`` argument out of range (an ``IndexError`` as in PyTorch, and a ``ValueError``)."""


def is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _option_in_range(op: str, name: str, v: int, given: Any) -> None:
    """Integer options beyond MAX_OPTION (or int64) would overflow native index arithmetic."""
    if abs(v) > MAX_OPTION:
        raise ValueError(f"{op}: {name} must be at most 2**60 in magnitude, got {given!r}")


def int_arg(op: str, name: str, v: Any, *, minimum: int | None = None) -> int:
    if not is_int(v):
        raise TypeError(f"{op}: {name} must be an int, got {v!r}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {v}")
    _option_in_range(op, name, v, v)
    return v


def float_arg(op: str, name: str, v: Any, *, low: float | None = None, high: float | None = None,
              low_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a number, got {v!r}")
    v = float(v)
    if low is not None and (v < low or (low_open and v == low)) or high is not None and v > high:
        lo = "(" if low_open else "["
        raise ValueError(f"{op}: {name} must be in {lo}{low}, {high}], got {v}")
    return v


def pair(op: str, name: str, v: Any, *, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= ``minimum``, as a pair."""
    if is_int(v):
        values = (int(v), int(v))
    elif isinstance(v, Sequence) and not isinstance(v, str) and len(v) == 2 and all(is_int(e) for e in v):
        values = (int(v[0]), int(v[1]))
    else:
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
    if min(values) < minimum:
        what = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{op}: {name} must be {what}, got {v!r}")
    for e in values:
        _option_in_range(op, name, e, v)
    return values


def single(op: str, name: str, v: Any, *, minimum: int) -> int:
    """An int or a 1-sequence of ints (conv1d's arguments), >= ``minimum``."""
    if isinstance(v, Sequence) and not isinstance(v, str) and len(v) == 1:
        v = v[0]
    return int_arg(op, name, v, minimum=minimum)


def arrays(op: str, **named: Any) -> dict[str, Any]:
    """Convert every non-None argument to an array (NumPy or CuPy) and check its element count."""
    conv = {k: (None if v is None else as_array(v, k, op)) for k, v in named.items()}
    for k, a in conv.items():
        if a is not None and a.size > MAX_ELEMENTS:
            elements_ok(op, tuple(a.shape), f"{k} shape")
    return conv


# Views up to this many bytes are not checked against the machine's memory (the common case, kept
# cheap); a smaller view that cannot be copied still fails with NumPy's MemoryError. The pooling
# call cache (functional/pool.py) takes only inputs up to this size, for the same reason.
ALWAYS_FITS = 2**30


@functools.lru_cache(maxsize=1)
def _machine_memory() -> int | None:
    """Physical memory plus swap, capped by a cgroup (v2) limit; None when unknown."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("SwapTotal:"):
                    total += int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def memory_limit() -> int | None:
    """Bytes this process could ever hold: the machine's memory, or a lower address-space limit."""
    limit = _machine_memory()
    if resource is None:
        return limit
    try:
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limit = soft if limit is None else min(limit, soft)
    except (OSError, ValueError):
        pass
    return limit


def materializable(op: str, name: str, a: Any) -> None:
    """A ``MemoryError`` when the non-contiguous view ``a`` (e.g. ``np.broadcast_to(x, (1, 2**40))``)
    holds more bytes than this process could ever allocate.

    Native kernels copy such a view into contiguous memory, and an output of its size could not be
    allocated either: fail now rather than after minutes of reductions over a zero-stride view.
    """
    if not isinstance(a, np.ndarray):
        return
    nbytes = a.nbytes
    if nbytes <= ALWAYS_FITS or a.flags.c_contiguous:
        return
    limit = memory_limit()
    if limit is not None and nbytes > limit:
        raise MemoryError(
            f"{op}: {name} is a non-contiguous view of shape {tuple(a.shape)} ({nbytes} bytes), more than "
            f"this process can allocate ({limit} bytes); nnkern needs it as a contiguous array"
        )


def float_arrays(op: str, **named: Any) -> tuple[dict[str, Any], bool]:
    """Convert, check the shared float dtype and device; return ``(arrays, on_device)``."""
    conv = arrays(op, **named)
    check_float(conv, op)
    return conv, check_same_device(conv, op)


def rank(op: str, name: str, a: Any, ranks: Sequence[int], what: str) -> None:
    if a.ndim not in ranks:
        expected = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"{op}: {name} must be {expected} {what}, got shape {tuple(a.shape)}")


def shape(op: str, name: str, a: Any, expected: tuple[int, ...]) -> None:
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"{op}: {name} must have shape {tuple(expected)}, got {tuple(a.shape)}")


def output_size_ok(op: str, out_hw: Sequence[int], detail: str) -> None:
    if min(out_hw) < 1:
        raise ValueError(f"{op}: output size below 1: computed {tuple(out_hw)} from {detail}")


def elements_ok(op: str, shape_: Sequence[int], what: str = "output shape") -> None:
    """A ``ValueError`` when an array of ``shape_`` has more than ``MAX_ELEMENTS`` elements."""
    count = math.prod(map(int, shape_))
    if count > MAX_ELEMENTS:
        raise ValueError(f"{op}: the {what} {tuple(shape_)} has {count} elements, more than nnkern can index (2**62)")


def dim_arg(op: str, dim: Any, ndim: int) -> int:
    if not is_int(dim):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    d = int(dim)
    if not -max(ndim, 1) <= d < max(ndim, 1):
        raise DimensionError(f"{op}: dim must be in [{-max(ndim, 1)}, {max(ndim, 1) - 1}] for a {ndim}-D input, got {d}")
    return d % max(ndim, 1)


def mask3(op: str, output_mask: Any) -> tuple[bool, bool, bool]:
    if not (isinstance(output_mask, Sequence) and len(output_mask) == 3):
        raise TypeError(f"{op}: output_mask must be a sequence of 3 bools, got {output_mask!r}")
    return tuple(bool(m) for m in output_mask)  # type: ignore[return-value]


def native_op(op: str, backend: str | None, *arrays: Any) -> Any:
    """The cpu backend's ``op`` for the common call -- every array a NumPy float array of one dtype
    that always fits in memory, the cpu backend named or picked by ``auto`` -- found without the
    general checks (they cost 3-6 us of a call that can take 2); ``None`` otherwise, and the caller
    then takes its checked path (which also raises every error). The caller checks the shapes."""
    dt = arrays[0].dtype if type(arrays[0]) is np.ndarray else None
    if dt not in FLOAT_DTYPES:
        return None
    for a in arrays:
        if type(a) is not np.ndarray or a.dtype != dt or a.nbytes > ALWAYS_FITS:
            return None
    name = default_backend() if backend is None else backend
    if name not in ("auto", "cpu") or not backends.has_op("cpu", op):
        return None
    return getattr(backends.get("cpu"), op)


def dispatch(op: str, backend: str | None, on_device: bool, **inputs: Any):
    """The backend module that runs ``op`` for this call, once the validated ``inputs`` (name ->
    array or None) are known to fit in memory (:func:`materializable`)."""
    for name, a in inputs.items():
        if a is not None and a.nbytes > ALWAYS_FITS:
            materializable(op, name, a)
    return backends.resolve(op, backend, on_device)[1]


def dispatch_named(op: str, backend: str | None, on_device: bool):
    return backends.resolve(op, backend, on_device)
