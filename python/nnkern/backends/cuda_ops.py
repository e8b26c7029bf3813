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

from ._device import Device
from .numpy_ref.counter_rng import key as _rng_key, threshold as _rng_threshold

_ACTIVATIONS = {"relu": 0, "sigmoid": 1, "tanh": 2}


def _split(shape, dim):
    """``(outer, d, inner)`` of an array seen as rows along ``dim``."""
    return math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1:])


def make_ops(dev: Device) -> dict[str, Callable]:
    lib, ptr, stream = dev.native, dev.ptr, dev.stream
    c, empty = dev.contiguous, dev.empty

    def f64(a) -> bool:
        return a.dtype == np.float64

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
    return ops
