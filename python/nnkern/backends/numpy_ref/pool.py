"""NumPy reference: max, average and adaptive-average 2-D pooling, forward and backward.

Layout is NCHW. Arguments arrive validated and normalized (see
``docs/design.md``, "The backend contract"); arrays may be non-contiguous and
are computed in the dtype they are given. Results match PyTorch's CPU kernels
rule for rule: max-pool index and NaN semantics, the ``ceil_mode`` output size
(``_shapes.pool_output_size``), avg-pool divisors, adaptive bins.

Max and average pooling loop over the kernel taps (kh * kw of them): tap
``(i, j)`` of every window is one strided slice of the padded input, so each
step is a whole-array operation over all (N, C, OH, OW) windows at once.
Adaptive average pooling is separable (the sum over a rectangle is the sum
over rows of the sums over columns): two ``np.add.reduceat`` over the bins,
which, unlike products with averaging matrices, keep a NaN or Inf inside the
bins that hold it.
"""
from __future__ import annotations

import numpy as np

from ..._shapes import adaptive_bounds, pool_output_size


def _out_hw(x, kernel, stride, padding, dilation, ceil_mode):
    h, w = x.shape[2:]
    return (pool_output_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode),
            pool_output_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode))


def _pads(hw, kernel, out_hw, stride, padding, dilation):
    """Spatial ``(lo, hi)`` pads that put every window inside the padded input.

    The low side gets ``padding``; the high side whatever the windows reach past
    the input: ``padding`` or less, more with ``ceil_mode`` (the last window may
    run past the padded input).
    """
    pads = []
    for size, k, o, s, p, d in zip(hw, kernel, out_hw, stride, padding, dilation):
        span = (o - 1) * s + (k - 1) * d + 1 if o > 0 else 0  # extent of all windows, from -p
        pads.append((p, max(span - size - p, 0)))
    return pads


def _padded(x, kernel, out_hw, stride, padding, dilation, value):
    """``x`` padded with ``value`` (see :func:`_pads`), or ``x`` itself when no padding is needed."""
    pads = _pads(x.shape[2:], kernel, out_hw, stride, padding, dilation)
    if all(lo == hi == 0 for lo, hi in pads):
        return x
    return np.pad(x, [(0, 0), (0, 0)] + pads, constant_values=value)


def _tap(xp, i, j, out_hw, stride, dilation):
    """Tap ``(i, j)`` of every window: the strided slice ``(N, C, OH, OW)`` of the padded input."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return xp[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]


# ----------------------------------------------------------------------------------------------
# max pooling


def max_pool2d(x, kernel, stride, padding, dilation, ceil_mode):
    """Max pooling; returns ``(out, indices)`` with int64 flat ``h*W + w`` indices into each plane.

    PyTorch's CPU scan, window by window in row-major tap order, starting from
    ``max = -inf`` at the window's first in-bounds element: an element replaces
    the max when ``val > max or isnan(val)``. So ties keep the first maximum, a
    window with NaNs gives NaN at its last NaN, and padding (here ``-inf``, which
    never replaces anything) is never a candidate.
    """
    n, c, _, w = x.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = _out_hw(x, kernel, stride, padding, dilation, ceil_mode)
    xp = _padded(x, kernel, (oh, ow), stride, padding, dilation, -np.inf)

    # window origins in input coordinates, and the first in-bounds tap row/column of each
    # window (PyTorch's `while (ih0 < 0) ih0 += dilation`): the index reported when no
    # element beats -inf
    rows = np.arange(oh) * sh - ph
    cols = np.arange(ow) * sw - pw
    first_row = rows + dh * (-(rows // dh)).clip(min=0)
    first_col = cols + dw * (-(cols // dw)).clip(min=0)

    # The scan, one tap (i, j) at a time over all windows, kept branch-free (masked copies
    # with data-dependent masks are slow): `take` is PyTorch's replacement test; the new max
    # is np.maximum, which propagates NaN and so gives exactly the value the test keeps;
    # `last` records 1 + the last tap that replaced the max (0: none did). Taps are visited
    # in increasing order, so a running maximum of `take * (tap + 1)` is that last tap.
    kh, kw = kernel
    taps = kh * kw
    out = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    last = np.zeros((n, c, oh, ow), dtype=np.min_scalar_type(taps))
    for i in range(kh):
        for j in range(kw):
            val = _tap(xp, i, j, (oh, ow), stride, dilation)
            take = val > out
            take |= np.isnan(val)
            np.maximum(last, take * last.dtype.type(i * kw + j + 1), out=last)
            np.maximum(out, val, out=out)

    # flat index h*W + w of the chosen element, looked up in a small per-window table
    # (OH, OW, 1 + taps): slot 0 is the window's first in-bounds element, slot t + 1 is tap t
    tap_i, tap_j = np.divmod(np.arange(taps), kw)
    tap_index = (rows[:, None, None] + tap_i * dh) * w + (cols[None, :, None] + tap_j * dw)
    first = (first_row[:, None] * w + first_col[None, :])[:, :, None]
    table = np.concatenate([first, tap_index], axis=2).reshape(-1)
    window = np.arange(oh * ow, dtype=np.int64).reshape(oh, ow) * (taps + 1)
    indices = table[window + last]
    return out, indices


def max_pool2d_backward(grad_output, x, indices, kernel, stride, padding, dilation, ceil_mode):
    """Scatter-add of ``grad_output`` to the saved ``indices`` (overlapping windows accumulate)."""
    n, c, h, w = x.shape
    plane = h * w
    # one flat index per output cell into the whole (N*C*H*W) gradient
    cells = indices.shape[2] * indices.shape[3]
    flat = (indices.reshape(n * c, cells) + (np.arange(n * c, dtype=np.int64) * plane)[:, None]).ravel()
    g = grad_output.reshape(-1)
    valid = (indices >= 0) & (indices < plane)
    if not valid.all():
        # only a window with no in-bounds element (possible with dilation) has such an index;
        # its gradient goes nowhere (PyTorch would write outside the plane)
        keep = valid.ravel()
        flat, g = flat[keep], g[keep]
    grad_input = np.zeros(n * c * plane, dtype=grad_output.dtype)
    np.add.at(grad_input, flat, g)  # unbuffered: repeated indices accumulate, in grad's dtype
    return grad_input.reshape(n, c, h, w)


# ----------------------------------------------------------------------------------------------
# average pooling


def _avg_divisor(size, kernel, stride, padding, out, count_include_pad):
    """Divisor of each output cell along one axis, PyTorch's CPU rule.

    The window ``[start, start + k)`` is first cut at the padded border ``size + padding``
    (with ``ceil_mode`` it may run past it) and measured: that is the divisor with
    ``count_include_pad``; otherwise it is the length of the part inside ``[0, size)``.
    The 2-D divisor is the outer product of the two axes' divisors.
    """
    start = np.arange(out) * stride - padding
    end = np.minimum(start + kernel, size + padding)
    if count_include_pad:
        return end - start
    # at least 1: a window entirely in the padding sums to 0 (pool_output_size excludes it anyway)
    return (np.minimum(end, size) - np.maximum(start, 0)).clip(min=1)


def _avg_divisors(x, kernel, stride, padding, out_hw, count_include_pad):
    """The (OH, OW) divisor map in x's dtype."""
    dh, dw = (_avg_divisor(size, k, s, p, o, count_include_pad)
              for size, k, s, p, o in zip(x.shape[2:], kernel, stride, padding, out_hw))
    return np.multiply.outer(dh, dw).astype(x.dtype)


def avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad):
    """Average pooling with PyTorch's divisors (see :func:`_avg_divisor`); no dilation."""
    out_hw = _out_hw(x, kernel, stride, padding, (1, 1), ceil_mode)
    xp = _padded(x, kernel, out_hw, stride, padding, (1, 1), 0)
    out = np.zeros(x.shape[:2] + out_hw, dtype=x.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            out += _tap(xp, i, j, out_hw, stride, (1, 1))
    out /= _avg_divisors(x, kernel, stride, padding, out_hw, count_include_pad)
    return out


def avg_pool2d_backward(grad_output, x, kernel, stride, padding, ceil_mode, count_include_pad):
    """Each output cell's gradient / divisor, added back to every tap of its window."""
    n, c, h, w = x.shape
    out_hw = tuple(grad_output.shape[2:])
    g = grad_output / _avg_divisors(x, kernel, stride, padding, out_hw, count_include_pad)
    (top, bottom), (left, right) = _pads((h, w), kernel, out_hw, stride, padding, (1, 1))
    gxp = np.zeros((n, c, top + h + bottom, left + w + right), dtype=g.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            # within one tap the windows hit distinct cells: a plain slice-add is exact
            _tap(gxp, i, j, out_hw, stride, (1, 1))[...] += g
    grad_input = gxp[:, :, top:top + h, left:left + w]
    return grad_input.copy() if grad_input.shape != gxp.shape else gxp


# ----------------------------------------------------------------------------------------------
# adaptive average pooling


def _bins(size, out):
    """Bounds ``(start, end)`` (arrays of ``out``) of the adaptive bins over ``size`` cells."""
    return adaptive_bounds(size, out, np.arange(out))  # the rule works on arrays too


def _bin_sums(a, axis, out):
    """Sums of ``a`` over the ``out`` adaptive bins along ``axis``, and the bin sizes.

    One ``np.add.reduceat`` over the interleaved bounds ``s0, e0, s1, e1, ...`` (every other
    result is a bin; bins may overlap, and ``out > size`` repeats cells): each bin sums only
    its own cells, so a NaN or Inf reaches exactly the bins that hold it. A zero cell appended
    along ``axis`` lets the last end (``size``) be an index.
    """
    start, end = _bins(a.shape[axis], out)
    pad = list(a.shape)
    pad[axis] = 1
    padded = np.concatenate([a, np.zeros(pad, a.dtype)], axis=axis)
    sums = np.add.reduceat(padded, np.stack([start, end], axis=1).reshape(-1), axis=axis)
    return np.take(sums, np.arange(0, 2 * out, 2), axis=axis), (end - start)


def _bin_spread(g, axis, size):
    """The transpose of :func:`_bin_sums`: cell ``k`` of the result sums ``g`` over the bins that hold ``k``.

    The (bin, cell) pairs sorted by cell, gathered and summed per cell with ``np.add.reduceat``
    (every cell lies in at least one bin): no product with zeros, so NaN and Inf stay in their bins.
    """
    start, end = _bins(size, g.shape[axis])
    lengths = end - start
    offsets = np.cumsum(lengths) - lengths
    cell = np.arange(lengths.sum()) - np.repeat(offsets, lengths) + np.repeat(start, lengths)
    order = np.argsort(cell, kind="stable")
    taken = np.take(g, np.repeat(np.arange(g.shape[axis]), lengths)[order], axis=axis)
    return np.add.reduceat(taken, np.searchsorted(cell[order], np.arange(size)), axis=axis)


def adaptive_avg_pool2d(x, output_size):
    """Adaptive average pooling: means over the row bins, then over the column bins (separable);
    the global (1, 1) case is a mean."""
    oh, ow = output_size
    n, c, h, w = x.shape
    if oh == 0 or ow == 0:
        return np.zeros((n, c, oh, ow), x.dtype)
    if (oh, ow) == (1, 1):
        return x.mean(axis=(2, 3), keepdims=True)
    rows, count_h = _bin_sums(x, 2, oh)
    cells, count_w = _bin_sums(rows, 3, ow)
    return cells / (count_h[:, None] * count_w).astype(x.dtype)


def adaptive_avg_pool2d_backward(grad_output, x):
    """Transpose of the forward: each output's gradient divided by its bin's size and spread over
    its bin (columns, then rows); the global case spreads grad / (H*W)."""
    oh, ow = grad_output.shape[2:]
    h, w = x.shape[2:]
    if oh == 0 or ow == 0:
        return np.zeros(x.shape, grad_output.dtype)
    if (oh, ow) == (1, 1):
        return np.broadcast_to(grad_output / (h * w), x.shape).copy()
    start_h, end_h = _bins(h, oh)
    start_w, end_w = _bins(w, ow)
    scaled = grad_output / ((end_h - start_h)[:, None] * (end_w - start_w)).astype(grad_output.dtype)
    return _bin_spread(_bin_spread(scaled, 3, w), 2, h)
