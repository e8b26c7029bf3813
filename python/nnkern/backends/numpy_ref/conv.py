"""NumPy reference: 2-D convolution, forward and backward, by im2col + matmul.

Layout is NCHW. Arguments arrive validated and normalized (see
``docs/design.md``, "The backend contract"); arrays may be non-contiguous and
are computed in the dtype they are given (float32 stays float32).

The idea, for ``groups = G``, ``K = (C/G) * kh * kw`` and ``P = OH * OW``:

* im2col: a strided *view* of the padded input with shape
  ``(N, C, kh, kw, OH, OW)`` (no copy), reshaped to ``(N, G, K, P)`` (one copy);
* forward: ``weight (G, O/G, K) @ cols (N, G, K, P) -> (N, G, O/G, P)``, which
  is already NCHW once reshaped: one batched GEMM, no transpose of the output;
* grad_weight: ``grad (N, G, O/G, P) @ cols^T`` summed over the batch;
* grad_input: ``weight^T @ grad`` gives the columns' gradient, which col2im
  scatters back with one strided ``+=`` per kernel tap (kh * kw of them).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..._shapes import conv_output_size


def _pad(x, pt, pb, pl, pr):
    """Zero-pad the two spatial axes (once); without padding, ``x`` itself (no copy)."""
    if pt == pb == pl == pr == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))


def _windows(xp, kernel, out_hw, stride, dilation):
    """Read-only view ``v`` of shape ``(N, C, kh, kw, OH, OW)`` of the (padded) input ``xp`` with
    ``v[n, c, i, j, y, x] == xp[n, c, y*sh + i*dh, x*sw + j*dw]``.

    Built from ``xp``'s own strides, so any layout (transposed, sliced, negative strides) works
    without a copy. The caller guarantees every window lies inside ``xp``.
    """
    n, c = xp.shape[:2]
    (kh, kw), (oh, ow), (sh, sw), (dh, dw) = kernel, out_hw, stride, dilation
    s_n, s_c, s_h, s_w = xp.strides

    def step(length, byte_stride, by):
        # an axis of length 1 never steps: a huge stride or dilation there (stride=2**60 giving one
        # output column) must not overflow the byte stride
        return byte_stride * by if length > 1 else 0

    return as_strided(xp, shape=(n, c, kh, kw, oh, ow),
                      strides=(s_n, s_c, step(kh, s_h, dh), step(kw, s_w, dw), step(oh, s_h, sh), step(ow, s_w, sw)),
                      writeable=False)


def _im2col(x, kernel, out_hw, stride, padding, dilation, groups):
    """Columns ``(N, G, (C/G)*kh*kw, OH*OW)`` of the input (rows ordered c, i, j like the weight)."""
    n, c = x.shape[:2]
    (kh, kw), (oh, ow) = kernel, out_hw
    view = _windows(_pad(x, *padding), kernel, out_hw, stride, dilation)
    # reshape copies the strided view into contiguous columns (a view when already possible,
    # e.g. a 1x1 stride-1 convolution of a contiguous input)
    return view.reshape(n, groups, (c // groups) * kh * kw, oh * ow)


def _out_hw(x, weight, stride, padding, dilation):
    (h, w), (kh, kw) = x.shape[2:], weight.shape[2:]
    (sh, sw), (pt, pb, pl, pr), (dh, dw) = stride, padding, dilation
    return conv_output_size(h, kh, sh, pt, pb, dh), conv_output_size(w, kw, sw, pl, pr, dw)


def conv2d(x, weight, bias, stride, padding, dilation, groups, activation, residual):
    """``act(conv2d(x, weight) + bias + residual)``, as ``torch.nn.functional.conv2d`` (cross-correlation).

    x (N, C, H, W); weight (O, C/groups, kh, kw); bias (O,) or None; stride (sh, sw);
    padding (pt, pb, pl, pr), possibly asymmetric; dilation (dh, dw); activation None or
    "relu"; residual (N, O, OH, OW) or None. Returns a new (N, O, OH, OW) array of x's dtype.
    """
    n = x.shape[0]
    o, cg, kh, kw = weight.shape
    oh, ow = _out_hw(x, weight, stride, padding, dilation)
    cols = _im2col(x, (kh, kw), (oh, ow), stride, padding, dilation, groups)
    w = weight.reshape(groups, o // groups, cg * kh * kw)
    # (G, O/G, K) @ (N, G, K, P) -> (N, G, O/G, P): one GEMM per (sample, group), NCHW order
    out = np.matmul(w, cols).reshape(n, o, oh, ow)
    if bias is not None:
        out += bias.reshape(1, o, 1, 1)
    if residual is not None:
        out += residual
    if activation == "relu":
        np.maximum(out, 0, out=out)  # NaN propagates, as torch.relu
    return out


def conv2d_backward(grad_output, x, weight, stride, padding, dilation, groups, output_mask):
    """Gradients of the convolution (before any bias/residual/activation) w.r.t. x, weight and bias.

    Returns ``(grad_input, grad_weight, grad_bias)``, ``None`` where ``output_mask`` is False.
    Input pixels that no window reaches (stride > 1, cropped by the output size) get 0.
    """
    n, c, h, w_in = x.shape
    o, cg, kh, kw = weight.shape
    oh, ow = grad_output.shape[2:]
    g, og, k = groups, o // groups, cg * kh * kw
    go = grad_output.reshape(n, g, og, oh * ow)
    w = weight.reshape(g, og, k)
    grad_input = grad_weight = grad_bias = None

    if output_mask[2]:
        grad_bias = grad_output.sum(axis=(0, 2, 3))

    if output_mask[1]:
        cols = _im2col(x, (kh, kw), (oh, ow), stride, padding, dilation, groups)
        # per-sample (O/G, P) @ (P, K) GEMMs on the transposed view (no copy of the columns),
        # then a sum over the batch; N = 0 sums to zeros
        grad_weight = np.matmul(go, cols.swapaxes(2, 3)).sum(axis=0).reshape(o, cg, kh, kw)

    if output_mask[0]:
        (sh, sw), (pt, pb, pl, pr), (dh, dw) = stride, padding, dilation
        # columns' gradient: (G, K, O/G) @ (N, G, O/G, P) -> (N, G, K, P), viewed per tap
        gcols = np.matmul(w.swapaxes(1, 2), go).reshape(n, c, kh, kw, oh, ow)
        # col2im: tap (i, j) of every window hits a distinct strided grid of the padded input,
        # so one slice-add per tap accumulates overlapping windows correctly
        gxp = np.zeros((n, c, h + pt + pb, w_in + pl + pr), dtype=gcols.dtype)
        for i in range(kh):
            rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
            for j in range(kw):
                gxp[:, :, rows, j * dw:j * dw + (ow - 1) * sw + 1:sw] += gcols[:, :, i, j]
        grad_input = gxp[:, :, pt:pt + h, pl:pl + w_in]
        if pt or pb or pl or pr:
            grad_input = grad_input.copy()  # a compact array, not a view that keeps the border alive
    return grad_input, grad_weight, grad_bias
