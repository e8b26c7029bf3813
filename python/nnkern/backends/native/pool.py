"""Native pool ops: max, average and adaptive-average pooling, forward and backward.

Thin wrappers over ``nnkern._cpu``: the output size comes from ``nnkern._shapes``
(the one definition of the ``ceil_mode`` rule), the kernels do the rest.
"""
from __future__ import annotations

import functools

from ... import _cpu
from ..._shapes import pool_output_size


def _out_hw_uncached(h, w, kernel, stride, padding, dilation, ceil_mode):
    return (pool_output_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode),
            pool_output_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode))


_out_hw_cached = functools.lru_cache(maxsize=256)(_out_hw_uncached)


def _out_hw(x, kernel, stride, padding, dilation, ceil_mode):
    h, w = x.shape[2:]
    try:
        # the functional layer passes tuples of ints: hashable, and the same few shapes call after call
        return _out_hw_cached(h, w, kernel, stride, padding, dilation, ceil_mode)
    except TypeError:  # a list argument (unhashable)
        return _out_hw_uncached(h, w, kernel, stride, padding, dilation, ceil_mode)


def max_pool2d(x, kernel, stride, padding, dilation, ceil_mode):
    oh, ow = _out_hw(x, kernel, stride, padding, dilation, ceil_mode)
    return _cpu.max_pool2d(x, kernel, stride, padding, dilation, oh, ow)


def max_pool2d_values(x, kernel, stride, padding, dilation, ceil_mode):
    """``max_pool2d``'s output alone (the same values): no int64 indices computed, allocated or stored."""
    oh, ow = _out_hw(x, kernel, stride, padding, dilation, ceil_mode)
    return _cpu.max_pool2d(x, kernel, stride, padding, dilation, oh, ow, False)[0]


# An optional variant of the contract op, not an op of its own: functional.max_pool2d
# calls it when the caller does not ask for the indices (a backward needs them, so it asks).
max_pool2d.values_only = max_pool2d_values


# Optional `bind` forms: bind(x, *options) gives the native function and the arguments that compute
# the op for any input of x's shape and dtype (`fn(x, *args)`), so that functional's call cache
# goes straight to the kernel.
def _bind_max(x, kernel, stride, padding, dilation, ceil_mode):
    return _cpu.max_pool2d, (kernel, stride, padding, dilation) + _out_hw(x, kernel, stride, padding, dilation,
                                                                          ceil_mode)


def _values(x, kernel, stride, padding, dilation, oh, ow):
    return _cpu.max_pool2d(x, kernel, stride, padding, dilation, oh, ow, False)[0]


max_pool2d.bind = _bind_max
max_pool2d_values.bind = lambda x, *options: (_values, _bind_max(x, *options)[1])


def max_pool2d_backward(grad_output, x, indices, kernel, stride, padding, dilation, ceil_mode):
    return _cpu.max_pool2d_backward(grad_output, x, indices)


def avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad):
    oh, ow = _out_hw(x, kernel, stride, padding, (1, 1), ceil_mode)
    return _cpu.avg_pool2d(x, kernel, stride, padding, count_include_pad, oh, ow)


def _bind_avg(x, kernel, stride, padding, ceil_mode, count_include_pad):
    return _cpu.avg_pool2d, (kernel, stride, padding, count_include_pad) + _out_hw(x, kernel, stride, padding,
                                                                                 (1, 1), ceil_mode)


avg_pool2d.bind = _bind_avg


def avg_pool2d_backward(grad_output, x, kernel, stride, padding, ceil_mode, count_include_pad):
    return _cpu.avg_pool2d_backward(grad_output, x, kernel, stride, padding, count_include_pad)


def adaptive_avg_pool2d(x, output_size):
    return _cpu.adaptive_avg_pool2d(x, output_size[0], output_size[1])


adaptive_avg_pool2d.bind = lambda x, output_size: (_cpu.adaptive_avg_pool2d, tuple(output_size))


def adaptive_avg_pool2d_backward(grad_output, x):
    return _cpu.adaptive_avg_pool2d_backward(grad_output, x)


OPS = {
    "max_pool2d": max_pool2d,
    "max_pool2d_backward": max_pool2d_backward,
    "avg_pool2d": avg_pool2d,
    "avg_pool2d_backward": avg_pool2d_backward,
    "adaptive_avg_pool2d": adaptive_avg_pool2d,
    "adaptive_avg_pool2d_backward": adaptive_avg_pool2d_backward,
}
