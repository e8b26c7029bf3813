"""batch_norm and its backward: validation and dispatch."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .._arrays import is_device_array
from . import _common as c


def _check_running(op: str, name: str, r: Any, channels: int, dtype: Any, training: bool) -> None:
    c.shape(op, name, r, (channels,))
    if training and not (isinstance(r, np.ndarray) or is_device_array(r)):
        raise TypeError(f"{op}: {name} is updated in place in training mode and must be an array, got {type(r).__name__}")
    if training and isinstance(r, np.ndarray) and not r.flags.writeable:
        raise ValueError(f"{op}: {name} is updated in place in training mode but is read-only")


def _check_no_overlap(op: str, running: dict[str, Any], others: dict[str, Any]) -> None:
    """In training mode the running statistics are written while the inputs are read: they must not
    share memory with each other or with any input (the result would depend on the order of the
    kernel's reads and writes). Only NumPy arrays are checked."""
    stats = [(k, v) for k, v in running.items() if isinstance(v, np.ndarray)]
    for i, (name, r) in enumerate(stats):
        later = stats[i + 1:] + [(k, v) for k, v in others.items() if isinstance(v, np.ndarray)]
        for other_name, other in later:
            if np.may_share_memory(r, other):
                raise ValueError(
                    f"{op}: {name} is updated in place in training mode and must not share memory with "
                    f"{other_name}; pass separate arrays (e.g. {other_name}.copy())")


def batch_norm(x: Any, running_mean: Any, running_var: Any, weight: Any = None, bias: Any = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5, *,
               activation: Optional[str] = None, residual: Any = None,
               return_stats: bool = False, backend: Optional[str] = None) -> Any:
    """Batch normalization over channel axis 1 of ``x`` (N, C, *), as ``torch.nn.functional.batch_norm``.

    In training mode the batch statistics (biased variance) normalize ``x``
    and ``running_mean`` / ``running_var`` (when given) are updated in place
    with ``momentum`` and the unbiased variance. ``return_stats=True`` also
    returns the ``mean`` and ``invstd`` that :func:`batch_norm_backward` needs.
    ``activation="relu"`` with an optional ``residual`` (the shape of ``x``)
    computes ``relu(batch_norm(x) + residual)`` in one pass (a ResNet block's
    tail); a residual without activation adds only.
    """
    op = "batch_norm"
    # running statistics are updated in place: keep the caller's objects (no conversion copies)
    raw_rm, raw_rv = running_mean, running_var
    a, on_device = c.float_arrays(op, input=x, running_mean=running_mean, running_var=running_var,
                                  weight=weight, bias=bias, residual=residual)
    x, weight, bias, residual = a["input"], a["weight"], a["bias"], a["residual"]
    rm, rv = a["running_mean"], a["running_var"]
    if x.ndim < 2:
        raise ValueError(f"{op}: input must be at least 2-D (N, C, *), got shape {tuple(x.shape)}")
    training = bool(training)
    momentum = c.float_arg(op, "momentum", momentum, low=0.0, high=1.0)
    eps = c.float_arg(op, "eps", eps, low=0.0, low_open=True)
    ch = int(x.shape[1])
    if (rm is None) != (rv is None):
        raise ValueError(f"{op}: running_mean and running_var must both be given or both be None")
    if rm is not None:
        _check_running(op, "running_mean", raw_rm, ch, x.dtype, training)
        _check_running(op, "running_var", raw_rv, ch, x.dtype, training)
        if training:
            _check_no_overlap(op, {"running_mean": raw_rm, "running_var": raw_rv},
                              {"input": x, "weight": weight, "bias": bias, "residual": residual})
    elif not training:
        raise ValueError(f"{op}: running_mean and running_var are required when training=False")
    if weight is not None:
        c.shape(op, "weight", weight, (ch,))
    if bias is not None:
        c.shape(op, "bias", bias, (ch,))
    if activation not in (None, "relu"):
        raise ValueError(f"{op}: activation must be None or 'relu', got {activation!r}")
    if residual is not None:
        c.shape(op, "residual", residual, tuple(x.shape))
    count = int(np.prod(x.shape, dtype=np.int64)) // max(ch, 1)
    if training and count == 1:
        raise ValueError(f"{op}: expected more than 1 value per channel when training, got input shape {tuple(x.shape)}")
    out, mean, invstd = c.dispatch(op, backend, on_device, input=x, residual=residual).batch_norm(
        x, rm, rv, weight, bias, training, momentum, eps, activation, residual)
    return (out, mean, invstd) if return_stats else out


def batch_norm_backward(grad_output: Any, x: Any, weight: Any, mean: Any, invstd: Any, training: bool = True,
                        output_mask: tuple = (True, True, True), *, backend: Optional[str] = None):
    """Gradients ``(grad_input, grad_weight, grad_bias)`` of :func:`batch_norm`.

    ``grad_output`` is the gradient of the normalized output before any fused
    activation or residual: with ``activation="relu"`` apply
    :func:`relu_backward` (with the fused output) first; the residual's
    gradient is that same relu-masked gradient.

    ``mean`` and ``invstd`` are what ``batch_norm(..., return_stats=True)``
    returned; with ``training=False`` the statistics are constants.
    ``grad_weight`` / ``grad_bias`` are computed even when ``weight`` is None
    (the gradient w.r.t. an implicit weight of ones / bias of zeros).
    """
    op = "batch_norm_backward"
    a, on_device = c.float_arrays(op, grad_output=grad_output, input=x, weight=weight, mean=mean, invstd=invstd)
    g, x, weight, mean, invstd = a["grad_output"], a["input"], a["weight"], a["mean"], a["invstd"]
    if x.ndim < 2:
        raise ValueError(f"{op}: input must be at least 2-D (N, C, *), got shape {tuple(x.shape)}")
    c.shape(op, "grad_output", g, tuple(x.shape))
    ch = int(x.shape[1])
    for name, v in (("weight", weight), ("mean", mean), ("invstd", invstd)):
        if v is not None:
            c.shape(op, name, v, (ch,))
    if mean is None or invstd is None:
        raise ValueError(f"{op}: mean and invstd are required (from batch_norm(..., return_stats=True))")
    mask = c.mask3(op, output_mask)
    return c.dispatch(op, backend, on_device, grad_output=g, input=x).batch_norm_backward(
        g, x, weight, mean, invstd, bool(training), mask)
