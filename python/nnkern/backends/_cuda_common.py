"""Helpers shared by the CUDA backend's op modules (cuda_ops.py, cuda_rnn.py)."""
from __future__ import annotations

import numpy as np

from ._device import Device


def f64(a) -> bool:
    return a.dtype == np.float64


def at(dev: Device, a, elements: int = 0) -> int:
    """The address of element ``elements`` of C-contiguous ``a`` (0 for None)."""
    return 0 if a is None else dev.ptr(a) + elements * a.itemsize


def gemm(dev: Device, a, b, out, m, n, k, a_strides, b_strides, ldc, *, a_off=0, b_off=0, c_off=0, batch=1,
         c_batch=0, row_bias=None, rb_off=0, col_bias=None, addend=None, accumulate=False, relu=False,
         k_split=None):
    """out = A B (+ out) (+ biases, addend) on the device's GEMM kernel.

    A(m, k) = a[a_off + m * a_m + k * a_k] with ``a_strides = (a_m, a_k, a_batch)``, B(k, n) =
    b[b_off + k * b_k + n * b_n] with ``b_strides = (b_k, b_n, b_batch)``, out(m, n) at
    ``c_off + m * ldc + n``; ``batch`` GEMMs offset by the batch strides (``c_batch`` for out and addend).
    ``k_split = (k_inner, a_ko, b_ko)`` makes the reduction run over two axes: k = q * k_inner + r
    addresses ``q * a_ko + r * a_k`` in A and ``q * b_ko + r * b_k`` in B.
    """
    k_inner, a_ko, b_ko = k_split if k_split is not None else (max(k, 1), 0, 0)
    dev.native.gemm(f64(out), at(dev, a, a_off), at(dev, b, b_off), at(dev, out, c_off),
                    at(dev, row_bias, rb_off), at(dev, col_bias), at(dev, addend, c_off),
                    [m, n, k, *a_strides, *b_strides, ldc, c_batch, batch, k_inner, a_ko, b_ko], accumulate, relu,
                    dev.stream())
