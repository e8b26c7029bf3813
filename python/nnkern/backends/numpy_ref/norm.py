"""NumPy reference: batch normalization."""
from __future__ import annotations

import numpy as np


def _axes(x):
    """Reduction axes of a (N, C, *) array, and the shape that broadcasts a (C,) vector over it."""
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    return axes, bshape


def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, activation, residual):
    """``act(batch_norm(x) + residual)``; activation None or "relu", residual of x's shape or None."""
    axes, bshape = _axes(x)
    count = x.size // max(x.shape[1], 1)
    if training and count == 0:
        # an empty batch has no statistics: PyTorch leaves the running ones alone
        mean = np.zeros(x.shape[1], dtype=x.dtype)
        invstd = np.full(x.shape[1], 1 / np.sqrt(eps), dtype=x.dtype)
        centered = x - mean.reshape(bshape)
    elif training:
        # Shift each channel by one of its own values (exact when values are
        # within a factor 2 of it), then two passes over the shifted data:
        # accurate for channels with a large mean and a small spread, where
        # E[x^2] - E[x]^2, or even a rounded float32 mean, would lose the spread.
        shift = x[(0, slice(None)) + (0,) * (x.ndim - 2)].reshape(bshape)
        shifted = x - shift
        shifted_mean = shifted.mean(axis=axes, keepdims=True)
        centered = shifted - shifted_mean
        var = (centered * centered).mean(axis=axes)
        mean = (shift + shifted_mean).reshape(-1)
        invstd = 1 / np.sqrt(var + x.dtype.type(eps))
        if running_mean is not None:
            m = running_mean.dtype.type(momentum)
            unbiased = var * (count / (count - 1)) if count > 1 else var
            running_mean *= 1 - m
            running_mean += m * mean
            running_var *= 1 - m
            running_var += m * unbiased
    else:
        mean = np.array(running_mean, dtype=x.dtype)
        invstd = (1 / np.sqrt(running_var + x.dtype.type(eps))).astype(x.dtype, copy=False)
        centered = x - mean.reshape(bshape)
    scale = invstd if weight is None else invstd * weight
    out = centered * scale.reshape(bshape)
    if bias is not None:
        out += bias.reshape(bshape)
    if residual is not None:
        out += residual
    if activation == "relu":
        np.maximum(out, 0, out=out)  # NaN propagates, as torch.relu
    return out, mean, invstd


def batch_norm_backward(grad_output, x, weight, mean, invstd, training, output_mask):
    axes, bshape = _axes(x)
    xhat = (x - mean.reshape(bshape)) * invstd.reshape(bshape)
    grad_bias = grad_output.sum(axis=axes)
    grad_weight = (grad_output * xhat).sum(axis=axes)
    gx = None
    if output_mask[0]:
        scale = invstd if weight is None else invstd * weight
        if training:
            count = x.size // max(x.shape[1], 1)
            # d/dx of (x - mean) * invstd with mean and invstd depending on x
            inner = grad_output - (grad_bias / count).reshape(bshape) - xhat * (grad_weight / count).reshape(bshape)
            gx = inner * scale.reshape(bshape)
        else:
            gx = grad_output * scale.reshape(bshape)
    return (gx, grad_weight if output_mask[1] else None, grad_bias if output_mask[2] else None)
