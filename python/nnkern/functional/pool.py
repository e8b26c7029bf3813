"""max / avg / adaptive-avg 2-D pooling and their backward: validation and dispatch."""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from .._arrays import FLOAT_DTYPES
from .._config import default_backend
from .._shapes import pool_output_size
from . import _common as c

IntOrPair = Union[int, Tuple[int, int]]


def _float_input(op: str, x: Any) -> tuple[Any, bool, bool]:
    """``x`` as a 4-D float array, whether it was 3-D (unbatched), and whether it lives on the GPU.

    A 4-D NumPy float32 / float64 array, the common case, has nothing to
    convert or check and goes through no further call: right after a large
    pool the interpreter's data is out of the caches, and every Python call
    made then costs microseconds.
    """
    if type(x) is np.ndarray and x.dtype in FLOAT_DTYPES and x.size <= c.MAX_ELEMENTS:
        on_device = False
    else:
        a, on_device = c.float_arrays(op, input=x)
        x = a["input"]
    if x.ndim == 4:
        return x, False, on_device
    x4, unbatched = _input(op, x)
    return x4, unbatched, on_device


def _input(op: str, x: Any) -> tuple[Any, bool]:
    if x.ndim not in (3, 4):
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape {tuple(x.shape)}")
    return (x[None], True) if x.ndim == 3 else (x, False)


def _window_checked(op: str, x: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: Any):
    """Normalize and check a pooling window; return it with the output (OH, OW)."""
    kernel = c.pair(op, "kernel_size", kernel_size, minimum=1)
    stride = kernel if stride is None or (isinstance(stride, Sequence) and len(stride) == 0) else \
        c.pair(op, "stride", stride, minimum=1)
    pad = c.pair(op, "padding", padding, minimum=0)
    dil = c.pair(op, "dilation", dilation, minimum=1)
    for axis in range(2):
        limit = (dil[axis] * (kernel[axis] - 1) + 1) // 2
        if pad[axis] > limit:
            raise ValueError(
                f"{op}: padding must be at most half of the (dilated) kernel size: padding {pad} "
                f"with kernel_size {kernel} and dilation {dil}"
            )
    h, w = int(x.shape[-2]), int(x.shape[-1])
    ceil_mode = bool(ceil_mode)
    oh = pool_output_size(h, kernel[0], stride[0], pad[0], dil[0], ceil_mode)
    ow = pool_output_size(w, kernel[1], stride[1], pad[1], dil[1], ceil_mode)
    c.output_size_ok(op, (oh, ow), f"input {h}x{w}, kernel_size {kernel}, stride {stride}, padding {pad}, dilation {dil}")
    c.elements_ok(op, tuple(x.shape[:-2]) + (oh, ow))
    return kernel, stride, pad, dil, ceil_mode, (oh, ow)


def _plain_key(v: Any) -> Any:
    """``v`` as a hashable cache key when it is a plain int, None or a pair of plain ints; else ``_NO_KEY``."""
    if v is None or type(v) is int:
        return v
    if type(v) in (tuple, list) and all(type(e) is int for e in v):
        return tuple(v)
    return _NO_KEY


_NO_KEY = object()


class _Shape:
    """Stands in for the input in the cached check: ``_window_checked`` reads its shape alone."""

    __slots__ = ("shape",)

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


@functools.lru_cache(maxsize=256)
def _window_cached(shape: tuple[int, ...], kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                   ceil_mode: bool):
    return _window_checked("", _Shape(shape), kernel_size, stride, padding, dilation, ceil_mode)


def _window(op: str, x: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: Any):
    """Normalize and check a pooling window; return it with the output (OH, OW).

    Plain int / pair arguments hit a cache of earlier successful checks (the
    per-call checks cost several microseconds, a tenth of a small pool); any
    other argument, and every failing one, goes through the checks with ``op``
    in the message.
    """
    if type(kernel_size) is int and (stride is None or type(stride) is int) and type(padding) is int \
            and type(dilation) is int and type(ceil_mode) is bool:
        keys = (kernel_size, stride, padding, dilation)  # the common call: plain ints
    else:
        keys = tuple(_plain_key(v) for v in (kernel_size, stride, padding, dilation))
    if type(ceil_mode) is bool and _NO_KEY not in keys:
        try:
            return _window_cached(tuple(x.shape), *keys, ceil_mode)
        except (TypeError, ValueError):
            pass  # raised again below, naming op
    return _window_checked(op, x, kernel_size, stride, padding, dilation, ceil_mode)


# Repeated pooling calls (a training step, a benchmark): by op, input shape and dtype, the plain
# options and the default backend, the backend function and arguments an earlier call validated
# and resolved. A hit is one dict lookup and the kernel call: right after a large pool the
# interpreter's data is out of the caches, and each of the ~8 Python calls of the checked path
# costs microseconds (P2: 30 of 207 us, P3: 14 of 63). Taken only for 4-D NumPy inputs of at most
# 1 GiB (no materialization check needed), no ``backend`` argument, and options of exactly the
# types the key position expects (ints; bools for the flags), so a call that differs only in an
# option's type (True for 1) is checked again. Bounded by clearing when full.
_CALLS: dict = {}
_CALLS_SIZE = 256


def _call_key(op: str, x: Any, ints: tuple, flags: tuple) -> Any:
    """The ``_CALLS`` key of this call, or None when it cannot take the cache."""
    if type(x) is not np.ndarray or x.ndim != 4 or x.nbytes > c.ALWAYS_FITS:
        return None
    for v in ints:
        if type(v) is not int and v is not None:
            return None
    for v in flags:
        if type(v) is not bool:
            return None
    return op, x.shape, x.dtype, ints, flags, default_backend()


def _remember(key: Any, impl: Any, x: Any, *args: Any) -> None:
    """Keep ``impl(x, *args)`` for ``key``: the backend's pre-bound form when it has one (``impl.bind``)."""
    if key is None:
        return
    bind = getattr(impl, "bind", None)
    call = bind(x, *args) if bind is not None else (impl, args)
    if len(_CALLS) >= _CALLS_SIZE:
        _CALLS.clear()
    _CALLS[key] = call


def max_pool2d(x: Any, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
               dilation: IntOrPair = 1, ceil_mode: bool = False, return_indices: bool = False, *,
               backend: Optional[str] = None) -> Any:
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    With ``return_indices=True`` returns ``(out, indices)``: int64 flat
    indices ``h * W + w`` into each input plane, equal to PyTorch's. A NaN in
    a window gives NaN.
    """
    op = "max_pool2d"
    key = None if backend is not None else _call_key(op, x, (kernel_size, stride, padding, dilation),
                                                       (ceil_mode, return_indices))
    hit = _CALLS.get(key) if key is not None else None
    if hit is not None:
        return hit[0](x, *hit[1])
    x4, unbatched, on_device = _float_input(op, x)
    k, s, p, d, cm, _ = _window(op, x4, kernel_size, stride, padding, dilation, ceil_mode)
    impl = c.dispatch(op, backend, on_device, input=x4).max_pool2d
    # a backend may offer a values-only variant (no int64 indices to compute and store)
    values_only = None if return_indices else getattr(impl, "values_only", None)
    if values_only is not None:
        out = values_only(x4, k, s, p, d, cm)
        _remember(key, values_only, x4, k, s, p, d, cm)
        return out[0] if unbatched else out
    out, idx = impl(x4, k, s, p, d, cm)
    if return_indices:
        _remember(key, impl, x4, k, s, p, d, cm)
    if unbatched:
        out, idx = out[0], idx[0]
    return (out, idx) if return_indices else out


def max_pool2d_backward(grad_output: Any, x: Any, indices: Any, kernel_size: IntOrPair,
                        stride: Optional[IntOrPair] = None, padding: IntOrPair = 0, dilation: IntOrPair = 1,
                        ceil_mode: bool = False, *, backend: Optional[str] = None) -> Any:
    """Gradient of :func:`max_pool2d` w.r.t. its input, from the saved ``indices``."""
    op = "max_pool2d_backward"
    native = c.native_op(op, backend, grad_output, x)
    if (native is not None and x.ndim == 4 and type(indices) is np.ndarray and indices.dtype == np.int64
            and indices.nbytes <= c.ALWAYS_FITS):
        k, s, p, d, cm, (oh, ow) = _window(op, x, kernel_size, stride, padding, dilation, ceil_mode)
        expected = tuple(x.shape[:2]) + (oh, ow)
        if grad_output.shape == expected and indices.shape == expected:
            return native(grad_output, x, indices, k, s, p, d, cm)
    a, on_device = c.float_arrays(op, grad_output=grad_output, input=x)
    idx = c.arrays(op, indices=indices)["indices"]
    x4, unbatched = _input(op, a["input"])
    g = a["grad_output"][None] if unbatched else a["grad_output"]
    idx = idx[None] if unbatched else idx
    k, s, p, d, cm, (oh, ow) = _window(op, x4, kernel_size, stride, padding, dilation, ceil_mode)
    expected = tuple(x4.shape[:2]) + (oh, ow)
    c.shape(op, "grad_output", g, expected)
    c.shape(op, "indices", idx, expected)
    if np.dtype(idx.dtype) != np.int64:
        raise TypeError(f"{op}: indices must have dtype int64, got {idx.dtype}")
    gx = c.dispatch(op, backend, on_device, grad_output=g, input=x4, indices=idx).max_pool2d_backward(
        g, x4, idx, k, s, p, d, cm)
    return gx[0] if unbatched else gx


def _avg_window(op, x4, kernel_size, stride, padding, ceil_mode):
    k, s, p, _, cm, out_hw = _window(op, x4, kernel_size, stride, padding, 1, ceil_mode)
    return k, s, p, cm, out_hw


def avg_pool2d(x: Any, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
               ceil_mode: bool = False, count_include_pad: bool = True, *, backend: Optional[str] = None) -> Any:
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d`` (same divisor rules)."""
    op = "avg_pool2d"
    key = None if backend is not None else _call_key(op, x, (kernel_size, stride, padding),
                                                       (ceil_mode, count_include_pad))
    hit = _CALLS.get(key) if key is not None else None
    if hit is not None:
        return hit[0](x, *hit[1])
    x4, unbatched, on_device = _float_input(op, x)
    k, s, p, _, cm, _ = _window(op, x4, kernel_size, stride, padding, 1, ceil_mode)
    impl = c.dispatch(op, backend, on_device, input=x4).avg_pool2d
    out = impl(x4, k, s, p, cm, bool(count_include_pad))
    _remember(key, impl, x4, k, s, p, cm, bool(count_include_pad))
    return out[0] if unbatched else out


def avg_pool2d_backward(grad_output: Any, x: Any, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
                        padding: IntOrPair = 0, ceil_mode: bool = False, count_include_pad: bool = True, *,
                        backend: Optional[str] = None) -> Any:
    """Gradient of :func:`avg_pool2d` w.r.t. its input."""
    op = "avg_pool2d_backward"
    a, on_device = c.float_arrays(op, grad_output=grad_output, input=x)
    x4, unbatched = _input(op, a["input"])
    g = a["grad_output"][None] if unbatched else a["grad_output"]
    k, s, p, cm, (oh, ow) = _avg_window(op, x4, kernel_size, stride, padding, ceil_mode)
    c.shape(op, "grad_output", g, tuple(x4.shape[:2]) + (oh, ow))
    gx = c.dispatch(op, backend, on_device, grad_output=g, input=x4).avg_pool2d_backward(
        g, x4, k, s, p, cm, bool(count_include_pad))
    return gx[0] if unbatched else gx


def _adaptive_size(op: str, output_size: Any, x4: Any) -> tuple[int, int]:
    """The output (OH, OW) of an adaptive pool, checked; plain int / pair sizes hit a cache (see ``_window``)."""
    key = output_size if type(output_size) is int else _plain_key(output_size)
    if key is not _NO_KEY and key is not None:
        try:
            return _adaptive_size_cached(key, tuple(x4.shape))
        except (TypeError, ValueError):
            pass  # raised again below, naming op
    return _adaptive_size_checked(op, output_size, x4)


@functools.lru_cache(maxsize=256)
def _adaptive_size_cached(output_size: Any, shape: tuple[int, ...]) -> tuple[int, int]:
    return _adaptive_size_checked("", output_size, _Shape(shape))


def _adaptive_size_checked(op: str, output_size: Any, x4: Any) -> tuple[int, int]:
    if output_size is None or isinstance(output_size, (str, bytes)):
        raise TypeError(f"{op}: output_size must be an int or a pair of ints (or None entries), got {output_size!r}")
    size = (output_size, output_size) if c.is_int(output_size) else tuple(output_size)
    if len(size) != 2:
        raise TypeError(f"{op}: output_size must be an int or a pair, got {output_size!r}")
    result = []
    for axis, v in enumerate(size):
        if v is None:
            v = int(x4.shape[2 + axis])
        if not c.is_int(v):
            raise TypeError(f"{op}: output_size must hold ints, got {output_size!r}")
        if v < 0:
            raise ValueError(f"{op}: output_size must be >= 0, got {output_size!r}")
        result.append(int(v))
    if min(result) > 0 and min(int(x4.shape[2]), int(x4.shape[3])) < 1:
        raise ValueError(f"{op}: input height and width must be positive, got shape {tuple(x4.shape)}")
    _adaptive_indexable(op, (result[0], result[1]), x4)
    return result[0], result[1]


def _adaptive_indexable(op: str, out_hw: tuple[int, int], x4: Any) -> None:
    """The output fits nnkern's indexing, and so do the bin bounds ``(i + 1) * size`` of every cell."""
    c.elements_ok(op, tuple(x4.shape[:2]) + tuple(out_hw))
    for axis, o in enumerate(out_hw):
        size = int(x4.shape[2 + axis])
        if (o + 1) * size > c.MAX_ELEMENTS:
            raise ValueError(f"{op}: output size {tuple(out_hw)} over an input of {tuple(x4.shape[2:])} needs bin "
                             f"bounds beyond 2**62, more than nnkern can index")


def adaptive_avg_pool2d(x: Any, output_size: Any, *, backend: Optional[str] = None) -> Any:
    """Adaptive 2-D average pooling to ``output_size`` (int or pair; ``None`` keeps that input size).

    An output size of 0 gives an empty result, as in PyTorch.
    """
    op = "adaptive_avg_pool2d"
    plain = output_size if type(output_size) is int else _plain_key(output_size)
    key = None if backend is not None or plain is _NO_KEY or type(plain) is tuple and len(plain) != 2 else \
        _call_key(op, x, plain if type(plain) is tuple else (plain,), ())
    hit = _CALLS.get(key) if key is not None else None
    if hit is not None:
        return hit[0](x, *hit[1])
    x4, unbatched, on_device = _float_input(op, x)
    size = _adaptive_size(op, output_size, x4)
    impl = c.dispatch(op, backend, on_device, input=x4).adaptive_avg_pool2d
    out = impl(x4, size)
    _remember(key, impl, x4, size)
    return out[0] if unbatched else out


def adaptive_avg_pool2d_backward(grad_output: Any, x: Any, *, backend: Optional[str] = None) -> Any:
    """Gradient of :func:`adaptive_avg_pool2d` w.r.t. its input (the output size is ``grad_output``'s)."""
    op = "adaptive_avg_pool2d_backward"
    a, on_device = c.float_arrays(op, grad_output=grad_output, input=x)
    x4, unbatched = _input(op, a["input"])
    g = a["grad_output"][None] if unbatched else a["grad_output"]
    if g.ndim != 4 or tuple(g.shape[:2]) != tuple(x4.shape[:2]):
        raise ValueError(f"{op}: grad_output must have shape {tuple(x4.shape[:2])} + (OH, OW), got {tuple(g.shape)}")
    _adaptive_indexable(op, (int(g.shape[2]), int(g.shape[3])), x4)
    gx = c.dispatch(op, backend, on_device, grad_output=g, input=x4).adaptive_avg_pool2d_backward(g, x4)
    return gx[0] if unbatched else gx
