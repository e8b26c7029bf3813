"""Validation helpers shared by the functional ops.

Every message names the op, the argument, what was expected and what was
given, so that a user can fix the call without reading nnkern's source.
"""
from __future__ import annotations

import numbers
from typing import Any, Sequence

from .. import backends
from .._arrays import as_array, check_float, check_same_device

# Element counts past this cannot be indexed by the native kernels (int64) with room to spare.
MAX_ELEMENTS = 2**62


class DimensionError(ValueError, IndexError):
    """A ``dim`` argument out of range (an ``IndexError`` as in PyTorch, and a ``ValueError``)."""


def is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def int_arg(op: str, name: str, v: Any, *, minimum: int | None = None) -> int:
    if not is_int(v):
        raise TypeError(f"{op}: {name} must be an int, got {v!r}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {v}")
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
    return values


def single(op: str, name: str, v: Any, *, minimum: int) -> int:
    """An int or a 1-sequence of ints (conv1d's arguments), >= ``minimum``."""
    if isinstance(v, Sequence) and not isinstance(v, str) and len(v) == 1:
        v = v[0]
    return int_arg(op, name, v, minimum=minimum)


def arrays(op: str, **named: Any) -> dict[str, Any]:
    """Convert every non-None argument to an array (NumPy or CuPy)."""
    return {k: (None if v is None else as_array(v, k, op)) for k, v in named.items()}


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


def elements_ok(op: str, shape_: Sequence[int]) -> None:
    count = 1
    for s in shape_:
        count *= int(s)
    if count > MAX_ELEMENTS:
        raise ValueError(f"{op}: the output shape {tuple(shape_)} has {count} elements, more than nnkern can index")


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


def dispatch(op: str, backend: str | None, on_device: bool):
    """The backend module that runs ``op`` for this call."""
    return backends.resolve(op, backend, on_device)[1]


def dispatch_named(op: str, backend: str | None, on_device: bool):
    return backends.resolve(op, backend, on_device)
