"""Shape arithmetic shared by ``functional`` and every backend.

One definition of each rule, so that validation and computation can never
disagree about an output size.
"""
from __future__ import annotations

import math


def conv_output_size(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dilation: int) -> int:
    """Output length of a convolution along one axis (may be < 1: the caller checks)."""
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """Output length of a max/avg pool along one axis, PyTorch's rule.

    With ``ceil_mode`` the last window may start past the input, but never
    entirely inside the right padding: such a window is dropped.
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def adaptive_bounds(size: int, out: int, i: int) -> tuple[int, int]:
    """Input range [start, end) of adaptive-pool output cell ``i``."""
    start = (i * size) // out
    end = -((-(i + 1) * size) // out)
    return start, end


def same_padding(kernel: int, dilation: int) -> tuple[int, int]:
    """``padding="same"`` for stride 1: total ``d*(k-1)``, the odd extra on the high side (as PyTorch)."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


def numel(shape) -> int:
    return math.prod(int(s) for s in shape)
