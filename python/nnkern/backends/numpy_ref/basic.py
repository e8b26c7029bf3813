"""NumPy reference: linear, activations, softmax, dropout, cross-entropy."""
from __future__ import annotations

import numpy as np

from .counter_rng import keep_mask


def linear(x, weight, bias):
    out = x @ weight.T
    if bias is not None:
        out += bias
    return out


def linear_backward(grad_output, x, weight, output_mask):
    gx = grad_output @ weight if output_mask[0] else None
    g2 = grad_output.reshape(-1, weight.shape[0])
    gw = g2.T @ x.reshape(-1, weight.shape[1]) if output_mask[1] else None
    gb = g2.sum(axis=0) if output_mask[2] else None
    return gx, gw, gb


def relu(x):
    # np.maximum propagates NaN (PyTorch's relu keeps NaN too); adding 0 turns -0.0 into +0.0
    return np.maximum(x, 0) + x.dtype.type(0)


def relu_backward(grad_output, output):
    return np.where(output > 0, grad_output, grad_output.dtype.type(0))


def sigmoid(x):
    # exp of a non-positive number only: no overflow for large |x|
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def sigmoid_backward(grad_output, output):
    return grad_output * output * (1 - output)


def tanh(x):
    return np.tanh(x)


def tanh_backward(grad_output, output):
    # (1 - y)(1 + y), not 1 - y*y: near |y| = 1 the rounding of y*y would swamp the small result
    return grad_output * ((1 - output) * (1 + output))


def softmax(x, dim):
    shifted = x - x.max(axis=dim, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=dim, keepdims=True)


def log_softmax(x, dim):
    shifted = x - x.max(axis=dim, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))


def softmax_backward(grad_output, output, dim):
    # y * (g - sum(g y)), with g measured from its value at the largest y: when one probability is
    # close to 1, g - sum(g y) cancels almost completely, while (g - g_max) - sum(y (g - g_max))
    # has no large term left to cancel (sum(y) = 1 makes the two forms equal).
    if output.size == 0:
        return output * grad_output
    top = np.take_along_axis(grad_output, np.expand_dims(output.argmax(axis=dim), dim), axis=dim)
    shifted = grad_output - top
    return output * (shifted - (shifted * output).sum(axis=dim, keepdims=True))


def log_softmax_backward(grad_output, output, dim):
    return grad_output - np.exp(output) * grad_output.sum(axis=dim, keepdims=True)


def dropout(x, p, seed):
    # a dropped element is x * 0, as in PyTorch (x * mask / (1 - p)): NaN and +-Inf give NaN, -1 gives -0
    mask = keep_mask(seed, x.shape, p)
    scale = x.dtype.type(1.0 / (1.0 - p))
    with np.errstate(invalid="ignore"):
        return np.where(mask, x * scale, x * x.dtype.type(0)), mask


def dropout_backward(grad_output, mask, p):
    scale = grad_output.dtype.type(1.0 / (1.0 - p))
    with np.errstate(invalid="ignore"):
        return np.where(mask, grad_output * scale, grad_output * grad_output.dtype.type(0))


def cross_entropy(logits, target):
    logp = log_softmax(logits, 1)
    n = logits.shape[0]
    picked = logp[np.arange(n), target]
    with np.errstate(invalid="ignore"):
        return np.asarray(-picked.mean() if n else np.nan, dtype=logits.dtype)


def cross_entropy_backward(grad_loss, logits, target):
    n = logits.shape[0]
    grad = softmax(logits, 1)
    grad[np.arange(n), target] -= 1
    grad *= grad_loss / max(n, 1)
    return grad
