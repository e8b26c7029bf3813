"""The CUDA backend's ops, written once over a :class:`~._device.Device`.

``make_ops(device)`` returns the backend-contract functions (docs/design.md,
same positional signatures as ``numpy_ref``) running the kernels of
``csrc/cuda`` on that device: for ``backends.cuda`` the real GPU, for the
test-only ``backends.cuda_emulated`` the CPU emulator. Arguments arrive
validated; inputs are made C-contiguous here, outputs and scratch are
allocated here (the kernels never allocate), and every launch goes on the
device's stream.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .._shapes import conv_output_size, pool_output_size
from ._cuda_common import at as _at, f64, gemm as _gemm
from ._device import Device
from .cuda_rnn import add_rnn_ops
from .numpy_ref.counter_rng import key as _rng_key, threshold as _rng_threshold

_ACTIVATIONS = {"relu": 0, "sigmoid": 1, "tanh": 2}


def _split(shape, dim):
    """``(outer, d, inner)`` of an array seen as rows along ``dim``."""
    return math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1:])


# the sequence functions of the contract serve three functional ops each
_SEQUENCE_OPS = {"rnn_seq": ("lstm", "gru", "rnn"), "rnn_seq_backward": ("lstm_backward", "gru_backward", "rnn_backward")}


def native_op_names(ops: dict) -> frozenset:
    """The functional op names (``NATIVE_OPS``) that the contract functions ``ops`` run."""
    return frozenset(name for k in ops for name in _SEQUENCE_OPS.get(k, (k,)))


def make_ops(dev: Device) -> dict[str, Callable]:
    lib, ptr, stream = dev.native, dev.ptr, dev.stream
    c, empty = dev.contiguous, dev.empty

    ops: dict[str, Callable] = {}

    def activation(name):
        which = _ACTIVATIONS[name]

        def forward(x):
            x = c(x)
            y = empty(x.shape, x.dtype)
            lib.activation(which, f64(x), ptr(x), ptr(y), x.size, stream())
            return y

        def backward(grad_output, output):
            g, y = c(grad_output), c(output)
            gx = empty(g.shape, g.dtype)
            lib.activation_backward(which, f64(g), ptr(g), ptr(y), ptr(gx), g.size, stream())
            return gx

        ops[name], ops[name + "_backward"] = forward, backward

    for name in _ACTIVATIONS:
        activation(name)

    def dropout(x, p, seed):
        x = c(x)
        y = empty(x.shape, x.dtype)
        mask = empty(x.shape, np.bool_)
        lib.dropout(f64(x), ptr(x), ptr(y), ptr(mask), x.size, _rng_key(seed), _rng_threshold(p), 1.0 / (1.0 - p),
                    stream())
        return y, mask

    def dropout_backward(grad_output, mask, p):
        g, m = c(grad_output), c(mask)
        gx = empty(g.shape, g.dtype)
        lib.dropout_backward(f64(g), ptr(g), ptr(m), ptr(gx), g.size, 1.0 / (1.0 - p), stream())
        return gx

    def softmax_like(log):
        def forward(x, dim):
            x = c(x)
            y = empty(x.shape, x.dtype)
            outer, d, inner = _split(x.shape, dim)
            lib.softmax(f64(x), log, ptr(x), ptr(y), outer * inner, d, inner, stream())
            return y

        def backward(grad_output, output, dim):
            g, y = c(grad_output), c(output)
            gx = empty(g.shape, g.dtype)
            outer, d, inner = _split(g.shape, dim)
            lib.softmax_backward(f64(g), log, ptr(g), ptr(y), ptr(gx), outer * inner, d, inner, stream())
            return gx

        return forward, backward

    ops["softmax"], ops["softmax_backward"] = softmax_like(False)
    ops["log_softmax"], ops["log_softmax_backward"] = softmax_like(True)

    def cross_entropy(logits, target):
        x, t = c(logits), c(target)
        n, k = x.shape
        nll = dev.xp().empty(n, dtype=np.float64)  # per-row scratch, summed in a fixed order
        out = empty((), x.dtype)
        lib.cross_entropy(f64(x), ptr(x), ptr(t), ptr(nll), ptr(out), n, k, stream())
        return out

    def cross_entropy_backward(grad_loss, logits, target):
        gl, x, t = c(grad_loss), c(logits), c(target)
        gx = empty(x.shape, x.dtype)
        lib.cross_entropy_backward(f64(x), ptr(gl), ptr(x), ptr(t), ptr(gx), x.shape[0], x.shape[1], stream())
        return gx

    ops.update(dropout=dropout, dropout_backward=dropout_backward, cross_entropy=cross_entropy,
               cross_entropy_backward=cross_entropy_backward)
    _pool_ops(dev, ops)
    _norm_ops(dev, ops)
    _gemm_ops(dev, ops)
    add_rnn_ops(dev, ops)
    return ops


def _pool_ops(dev: Device, ops: dict) -> None:
    lib, stream, c, empty = dev.native, dev.stream, dev.contiguous, dev.empty

    def geom(x, out_hw, kernel, stride, padding, dilation):
        return [*x.shape[2:], *out_hw, *kernel, *stride, *padding, *dilation]

    def out_hw(x, kernel, stride, padding, dilation, ceil_mode):
        return tuple(pool_output_size(x.shape[2 + a], kernel[a], stride[a], padding[a], dilation[a], ceil_mode)
                     for a in (0, 1))

    def planes(x):
        return x.shape[0] * x.shape[1]

    def max_pool2d(x, kernel, stride, padding, dilation, ceil_mode):
        x = c(x)
        hw = out_hw(x, kernel, stride, padding, dilation, ceil_mode)
        y = empty(x.shape[:2] + hw, x.dtype)
        idx = empty(x.shape[:2] + hw, np.int64)
        lib.max_pool(f64(x), _at(dev, x), _at(dev, y), _at(dev, idx), planes(x),
                     geom(x, hw, kernel, stride, padding, dilation), stream())
        return y, idx

    def max_pool2d_backward(grad_output, x, indices, kernel, stride, padding, dilation, ceil_mode):
        g, idx = c(grad_output), c(indices)
        gx = empty(x.shape, g.dtype)
        lib.max_pool_backward(f64(g), _at(dev, g), _at(dev, idx), _at(dev, gx), planes(x),
                              geom(x, g.shape[2:], kernel, stride, padding, dilation), stream())
        return gx

    def avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad):
        x = c(x)
        hw = out_hw(x, kernel, stride, padding, (1, 1), ceil_mode)
        y = empty(x.shape[:2] + hw, x.dtype)
        lib.avg_pool(f64(x), _at(dev, x), _at(dev, y), planes(x), geom(x, hw, kernel, stride, padding, (1, 1)),
                     count_include_pad, stream())
        return y

    def avg_pool2d_backward(grad_output, x, kernel, stride, padding, ceil_mode, count_include_pad):
        g = c(grad_output)
        gx = empty(x.shape, g.dtype)
        lib.avg_pool_backward(f64(g), _at(dev, g), _at(dev, gx), planes(x),
                              geom(x, g.shape[2:], kernel, stride, padding, (1, 1)), count_include_pad, stream())
        return gx

    def adaptive_avg_pool2d(x, output_size):
        x = c(x)
        y = empty(x.shape[:2] + tuple(output_size), x.dtype)
        lib.adaptive_avg_pool(f64(x), _at(dev, x), _at(dev, y), planes(x), [*x.shape[2:], *output_size], stream())
        return y

    def adaptive_avg_pool2d_backward(grad_output, x):
        g = c(grad_output)
        gx = empty(x.shape, g.dtype)
        lib.adaptive_avg_pool_backward(f64(g), _at(dev, g), _at(dev, gx), planes(x), [*x.shape[2:], *g.shape[2:]],
                                       stream())
        return gx

    ops.update(max_pool2d=max_pool2d, max_pool2d_backward=max_pool2d_backward, avg_pool2d=avg_pool2d,
               avg_pool2d_backward=avg_pool2d_backward, adaptive_avg_pool2d=adaptive_avg_pool2d,
               adaptive_avg_pool2d_backward=adaptive_avg_pool2d_backward)


def _ncs(x):
    """A (N, C, *) array as (N, C, S)."""
    return x.shape[0], x.shape[1], math.prod(x.shape[2:])


def _norm_ops(dev: Device, ops: dict) -> None:
    lib, stream, c, empty = dev.native, dev.stream, dev.contiguous, dev.empty

    def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, activation=None,
                   residual=None):
        x = c(x)
        n, ch, s = _ncs(x)
        w = None if weight is None else c(weight)
        b = None if bias is None else c(bias)
        shift_mean = dev.xp().empty(2 * ch, dtype=np.float64)  # per channel: the shift and the mean after it
        mean, invstd = empty(ch, x.dtype), empty(ch, x.dtype)
        if training:
            # the kernel updates running statistics in place: give it contiguous ones, copy back if it had to
            rm = None if running_mean is None else c(running_mean)
            rv = None if running_var is None else c(running_var)
            lib.bn_stats(f64(x), _at(dev, x), _at(dev, shift_mean), _at(dev, mean), _at(dev, invstd),
                         _at(dev, rm), _at(dev, rv), n, ch, s, momentum, eps, stream())
            if rm is not None and rm is not running_mean:
                running_mean[...] = rm
            if rv is not None and rv is not running_var:
                running_var[...] = rv
        else:
            rm, rv = c(running_mean), c(running_var)
            lib.bn_eval_stats(f64(x), _at(dev, rm), _at(dev, rv), _at(dev, shift_mean), _at(dev, mean),
                              _at(dev, invstd), ch, eps, stream())
        y = empty(x.shape, x.dtype)
        lib.bn_output(f64(x), _at(dev, x), _at(dev, shift_mean), _at(dev, invstd), _at(dev, w), _at(dev, b),
                      _at(dev, y), n, ch, s, stream())
        # the fused tail as separate device passes for now (same values as one pass: one rounding each)
        if residual is not None:
            y += residual
        if activation == "relu":
            dev.xp().maximum(y, 0, out=y)
        return y, mean, invstd

    def batch_norm_backward(grad_output, x, weight, mean, invstd, training, output_mask):
        g, x, mean, invstd = c(grad_output), c(x), c(mean), c(invstd)
        w = None if weight is None else c(weight)
        n, ch, s = _ncs(x)
        gw, gb = empty(ch, g.dtype), empty(ch, g.dtype)
        lib.bn_grad_sums(f64(g), _at(dev, g), _at(dev, x), _at(dev, mean), _at(dev, invstd), _at(dev, gw),
                         _at(dev, gb), n, ch, s, stream())
        gx = None
        if output_mask[0]:
            gx = empty(x.shape, g.dtype)
            lib.bn_grad_input(f64(g), _at(dev, g), _at(dev, x), _at(dev, mean), _at(dev, invstd), _at(dev, w),
                              _at(dev, gw), _at(dev, gb), _at(dev, gx), n, ch, s, training, stream())
        return gx, gw if output_mask[1] else None, gb if output_mask[2] else None

    ops.update(batch_norm=batch_norm, batch_norm_backward=batch_norm_backward)


def _gemm_ops(dev: Device, ops: dict) -> None:
    lib, stream, c, empty = dev.native, dev.stream, dev.contiguous, dev.empty

    def gemm(*args, **kw):
        _gemm(dev, *args, **kw)

    def linear(x, weight, bias):
        w = c(weight)
        o, k = w.shape
        x2 = c(x).reshape(-1, k)
        m = x2.shape[0]
        out = empty((m, o), w.dtype)
        gemm(x2, w, out, m, o, k, (k, 1, 0), (1, k, 0), o, col_bias=None if bias is None else c(bias))
        return out.reshape(x.shape[:-1] + (o,))

    def linear_backward(grad_output, x, weight, output_mask):
        w = c(weight)
        o, k = w.shape
        g2 = c(grad_output).reshape(-1, o)
        x2 = c(x).reshape(-1, k)
        m = g2.shape[0]
        gx = gw = gb = None
        if output_mask[0]:
            gx = empty((m, k), w.dtype)
            gemm(g2, w, gx, m, k, o, (o, 1, 0), (k, 1, 0), k)
            gx = gx.reshape(x.shape)
        if output_mask[1]:
            gw = empty((o, k), w.dtype)
            gemm(g2, x2, gw, o, k, m, (1, o, 0), (k, 1, 0), k)
        if output_mask[2]:
            gb = empty(o, w.dtype)
            lib.channel_sum(f64(w), _at(dev, g2), _at(dev, gb), m, o, 1, stream())
        return gx, gw, gb

    def conv_geom(x, weight, stride, padding, dilation):
        n, ch, h, w = x.shape
        kh, kw = weight.shape[2:]
        oh = conv_output_size(h, kh, stride[0], padding[0], padding[1], dilation[0])
        ow = conv_output_size(w, kw, stride[1], padding[2], padding[3], dilation[1])
        return [n, ch, h, w, oh, ow, kh, kw, stride[0], stride[1], padding[0], padding[2], dilation[0], dilation[1]]

    def depthwise(x, weight, groups):
        return groups == x.shape[1] and weight.shape[1] == 1

    def conv2d(x, weight, bias, stride, padding, dilation, groups, activation, residual):
        x, w = c(x), c(weight)
        b = None if bias is None else c(bias)
        r = None if residual is None else c(residual)
        geo = conv_geom(x, w, stride, padding, dilation)
        n, ch, _, _, oh, ow, kh, kw = geo[:8]
        o, p = w.shape[0], oh * ow
        out = empty((n, o, oh, ow), x.dtype)
        relu = activation == "relu"
        if depthwise(x, w, groups):
            lib.depthwise(f64(x), _at(dev, x), _at(dev, w), _at(dev, b), _at(dev, r), _at(dev, out), geo,
                          o // ch, relu, stream())
            return out
        rows = ch * kh * kw
        col = dev.xp().empty((n, rows, p), dtype=x.dtype)
        lib.im2col(f64(x), _at(dev, x), _at(dev, col), geo, stream())
        og, kg = o // groups, rows // groups
        for gi in range(groups):
            # out[:, group rows] = W[group] (og, kg) @ col[:, group rows] (kg, p), batched over the images
            gemm(w, col, out, og, p, kg, (kg, 1, 0), (p, 1, rows * p), p, a_off=gi * og * kg, b_off=gi * kg * p,
                 c_off=gi * og * p, batch=n, c_batch=o * p, row_bias=b, rb_off=gi * og, addend=r, relu=relu)
        return out

    def conv2d_backward(grad_output, x, weight, stride, padding, dilation, groups, output_mask):
        g, x, w = c(grad_output), c(x), c(weight)
        geo = conv_geom(x, w, stride, padding, dilation)
        n, ch, _, _, oh, ow, kh, kw = geo[:8]
        o, p = w.shape[0], oh * ow
        gx = gw = gb = None
        if output_mask[2]:
            gb = empty(o, g.dtype)
            lib.channel_sum(f64(g), _at(dev, g), _at(dev, gb), n, o, p, stream())
        if depthwise(x, w, groups):
            if output_mask[0]:
                gx = empty(x.shape, g.dtype)
                lib.depthwise_backward_input(f64(g), _at(dev, g), _at(dev, w), _at(dev, gx), geo, o // ch, stream())
            if output_mask[1]:
                gw = empty(w.shape, g.dtype)
                lib.depthwise_backward_weight(f64(g), _at(dev, g), _at(dev, x), _at(dev, gw), geo, o // ch, stream())
            return gx, gw, gb
        rows = ch * kh * kw
        og, kg = o // groups, rows // groups
        if output_mask[0]:
            gcol = dev.xp().empty((n, rows, p), dtype=g.dtype)
            for gi in range(groups):
                # gcol[:, group rows] = W[group]^T (kg, og) @ grad[:, group channels] (og, p)
                gemm(w, g, gcol, kg, p, og, (1, kg, 0), (p, 1, o * p), p, a_off=gi * og * kg, b_off=gi * og * p,
                     c_off=gi * kg * p, batch=n, c_batch=rows * p)
            gx = empty(x.shape, g.dtype)
            lib.col2im(f64(g), _at(dev, gcol), _at(dev, gx), geo, stream())
        if output_mask[1]:
            col = dev.xp().empty((n, rows, p), dtype=g.dtype)
            lib.im2col(f64(g), _at(dev, x), _at(dev, col), geo, stream())
            gw = empty(w.shape, g.dtype)
            for gi in range(groups):
                # gw[group] (og, kg) = sum over images and pixels (one reduction index q * p + r) of
                # grad[q, group channel, r] * col[q, group row, r]
                gemm(g, col, gw, og, kg, n * p, (p, 1, 0), (1, p, 0), kg, a_off=gi * og * p, b_off=gi * kg * p,
                     c_off=gi * og * kg, k_split=(max(p, 1), o * p, rows * p))
        return gx, gw, gb

    ops.update(linear=linear, linear_backward=linear_backward, conv2d=conv2d, conv2d_backward=conv2d_backward)
