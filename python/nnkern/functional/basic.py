"""linear, activations, softmax, dropout and cross-entropy: validation and dispatch."""
from __future__ import annotations

import secrets
from typing import Any, Optional

import numpy as np

from . import _common as c


def linear(x: Any, weight: Any, bias: Any = None, *, backend: Optional[str] = None) -> Any:
    """``x @ weight.T + bias`` for ``x`` (*, in_features), ``weight`` (out_features, in_features)."""
    native = _linear_native(x, weight, bias, backend)
    if native is not None:
        return native(x, weight, bias)
    op = "linear"
    a, on_device = c.float_arrays(op, input=x, weight=weight, bias=bias)
    x, weight, bias = a["input"], a["weight"], a["bias"]
    _linear_shapes(op, x, weight, bias)
    return c.dispatch(op, backend, on_device, input=x, weight=weight, bias=bias).linear(x, weight, bias)


def _linear_native(x: Any, weight: Any, bias: Any, backend: Optional[str]) -> Any:
    """The native ``linear`` for the common call (:func:`_common.native_op`) whose shapes fit; ``None``
    sends every other call, and every call that would fail, through the checks."""
    arrays = (x, weight) if bias is None else (x, weight, bias)
    native = c.native_op("linear", backend, *arrays)
    if native is None or not _fits(x, weight):
        return None
    if bias is not None and bias.shape != (weight.shape[0],):
        return None
    return None if x.size // x.shape[-1] * weight.shape[0] > c.MAX_ELEMENTS else native


def _fits(x: Any, weight: Any) -> bool:
    """Whether the arrays ``x`` (*, in_features > 0) and ``weight`` (out_features, in_features) fit
    together: the shapes the common-call paths take (the checked ones raise on the rest)."""
    return weight.ndim == 2 and x.ndim >= 1 and x.shape[-1] == weight.shape[1] != 0


def _linear_shapes(op: str, x: Any, weight: Any, bias: Any) -> None:
    c.rank(op, "weight", weight, (2,), "(out_features, in_features)")
    if x.ndim < 1:
        raise ValueError(f"{op}: input must be at least 1-D (*, in_features), got a 0-D array")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{op}: input.shape[-1] must equal weight.shape[1] (in_features): got input {tuple(x.shape)} "
            f"and weight {tuple(weight.shape)}"
        )
    if bias is not None:
        c.shape(op, "bias", bias, (int(weight.shape[0]),))
    c.elements_ok(op, tuple(x.shape[:-1]) + (int(weight.shape[0]),))


def linear_backward(grad_output: Any, x: Any, weight: Any, output_mask: tuple = (True, True, True), *,
                    backend: Optional[str] = None):
    """Gradients ``(grad_input, grad_weight, grad_bias)`` of :func:`linear`."""
    op = "linear_backward"
    native = c.native_op(op, backend, grad_output, x, weight)
    if native is not None and _fits(x, weight) and grad_output.shape == x.shape[:-1] + (weight.shape[0],):
        return native(grad_output, x, weight, c.mask3(op, output_mask))
    a, on_device = c.float_arrays(op, grad_output=grad_output, input=x, weight=weight)
    g, x, weight = a["grad_output"], a["input"], a["weight"]
    _linear_shapes(op, x, weight, None)
    c.shape(op, "grad_output", g, tuple(x.shape[:-1]) + (int(weight.shape[0]),))
    return c.dispatch(op, backend, on_device, grad_output=g, input=x, weight=weight).linear_backward(g, x, weight, c.mask3(op, output_mask))


def _unary(op: str, x: Any, backend: Optional[str]) -> Any:
    native = c.native_op(op, backend, x)
    if native is not None:
        return native(x)
    a, on_device = c.float_arrays(op, input=x)
    return getattr(c.dispatch(op, backend, on_device, input=a["input"]), op)(a["input"])


def _unary_backward(op: str, grad_output: Any, output: Any, backend: Optional[str]) -> Any:
    native = c.native_op(op, backend, grad_output, output)
    if native is not None and grad_output.shape == output.shape:
        return native(grad_output, output)
    a, on_device = c.float_arrays(op, grad_output=grad_output, output=output)
    c.shape(op, "grad_output", a["grad_output"], tuple(a["output"].shape))
    return getattr(c.dispatch(op, backend, on_device, grad_output=a["grad_output"], output=a["output"]), op)(
        a["grad_output"], a["output"])


def relu(x: Any, *, backend: Optional[str] = None) -> Any:
    """``max(x, 0)``; NaN stays NaN."""
    return _unary("relu", x, backend)


def sigmoid(x: Any, *, backend: Optional[str] = None) -> Any:
    """``1 / (1 + exp(-x))``, without overflow for large ``|x|``."""
    return _unary("sigmoid", x, backend)


def tanh(x: Any, *, backend: Optional[str] = None) -> Any:
    """Hyperbolic tangent."""
    return _unary("tanh", x, backend)


def relu_backward(grad_output: Any, output: Any, *, backend: Optional[str] = None) -> Any:
    """Gradient of :func:`relu` from its output: ``grad_output * (output > 0)``."""
    return _unary_backward("relu_backward", grad_output, output, backend)


def sigmoid_backward(grad_output: Any, output: Any, *, backend: Optional[str] = None) -> Any:
    """Gradient of :func:`sigmoid` from its output: ``grad_output * y * (1 - y)``."""
    return _unary_backward("sigmoid_backward", grad_output, output, backend)


def tanh_backward(grad_output: Any, output: Any, *, backend: Optional[str] = None) -> Any:
    """Gradient of :func:`tanh` from its output: ``grad_output * (1 - y**2)``."""
    return _unary_backward("tanh_backward", grad_output, output, backend)


def _softmax_like(op: str, x: Any, dim: Any, backend: Optional[str]) -> Any:
    a, on_device = c.float_arrays(op, input=x)
    x = a["input"]
    d = c.dim_arg(op, dim, x.ndim)
    if x.ndim == 0:
        x = x.reshape(1)
        return getattr(c.dispatch(op, backend, on_device), op)(x, 0).reshape(())
    return getattr(c.dispatch(op, backend, on_device, input=x), op)(x, d)


def softmax(x: Any, dim: int, *, backend: Optional[str] = None) -> Any:
    """Softmax along ``dim``, stable for large logits."""
    return _softmax_like("softmax", x, dim, backend)


def log_softmax(x: Any, dim: int, *, backend: Optional[str] = None) -> Any:
    """``log(softmax(x))`` along ``dim``, computed without forming the softmax."""
    return _softmax_like("log_softmax", x, dim, backend)


def _softmax_like_backward(op: str, grad_output: Any, output: Any, dim: Any, backend: Optional[str]) -> Any:
    a, on_device = c.float_arrays(op, grad_output=grad_output, output=output)
    g, y = a["grad_output"], a["output"]
    c.shape(op, "grad_output", g, tuple(y.shape))
    d = c.dim_arg(op, dim, y.ndim)
    if y.ndim == 0:
        return getattr(c.dispatch(op, backend, on_device), op)(g.reshape(1), y.reshape(1), 0).reshape(())
    return getattr(c.dispatch(op, backend, on_device, grad_output=g, output=y), op)(g, y, d)


def softmax_backward(grad_output: Any, output: Any, dim: int, *, backend: Optional[str] = None) -> Any:
    """Gradient of :func:`softmax` from its output."""
    return _softmax_like_backward("softmax_backward", grad_output, output, dim, backend)


def log_softmax_backward(grad_output: Any, output: Any, dim: int, *, backend: Optional[str] = None) -> Any:
    """Gradient of :func:`log_softmax` from its output."""
    return _softmax_like_backward("log_softmax_backward", grad_output, output, dim, backend)


def new_seed() -> int:
    """A fresh 63-bit seed for the counter-based generator."""
    return secrets.randbits(63)


def seed_arg(op: str, seed: Any) -> int:
    if seed is None:
        return new_seed()
    if not c.is_int(seed) or int(seed) < 0:
        raise TypeError(f"{op}: seed must be None or a non-negative int, got {seed!r}")
    return int(seed) & (2**64 - 1)


def dropout(x: Any, p: float = 0.5, training: bool = True, *, seed: Optional[int] = None,
            return_mask: bool = False, backend: Optional[str] = None) -> Any:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    The mask comes from a counter-based generator: one ``seed`` gives the
    same mask on every backend and for any thread count. ``seed=None`` draws
    a fresh one. Not training, or ``p == 0``, returns ``x`` unchanged. A
    dropped element is ``x * 0``, as in PyTorch: NaN and +-Inf give NaN.
    ``return_mask=True`` also returns the boolean keep-mask for
    :func:`dropout_backward`.
    """
    op = "dropout"
    p = c.float_arg(op, "p", p, low=0.0, high=1.0)
    a, on_device = c.float_arrays(op, input=x)
    x = a["input"]
    seed = seed_arg(op, seed)
    xp = _array_module(x)
    if not training or p == 0.0:
        out, mask = x, (xp.ones(x.shape, dtype=bool) if return_mask else None)
    elif p == 1.0:
        out, mask = _times_zero(x), (xp.zeros(x.shape, dtype=bool) if return_mask else None)
    else:
        out, mask = c.dispatch(op, backend, on_device, input=x).dropout(x, p, seed)
    return (out, mask) if return_mask else out


def dropout_backward(grad_output: Any, mask: Any, p: float, *, backend: Optional[str] = None) -> Any:
    """Gradient of :func:`dropout`: ``grad_output * mask / (1 - p)`` (``grad_output * 0`` when ``p == 1``).

    As in PyTorch, a dropped position gets ``grad_output * 0``: NaN where the gradient is NaN or +-Inf.
    """
    op = "dropout_backward"
    p = c.float_arg(op, "p", p, low=0.0, high=1.0)
    a, on_device = c.float_arrays(op, grad_output=grad_output)
    g = a["grad_output"]
    m = c.arrays(op, mask=mask)["mask"]
    c.shape(op, "mask", m, tuple(g.shape))
    if m.dtype != np.bool_:
        raise TypeError(f"{op}: mask must be a bool array (from dropout(..., return_mask=True)), got {m.dtype}")
    if p == 1.0:
        return _times_zero(g)
    if p == 0.0:
        with np.errstate(invalid="ignore"):
            return g * m  # x * mask: a dropped NaN / Inf gradient gives NaN, as at any other p
    return c.dispatch(op, backend, on_device, grad_output=g, mask=m).dropout_backward(g, m, p)


def _times_zero(a: Any) -> Any:
    """``a * 0`` in ``a``'s dtype (NaN where ``a`` is NaN or +-Inf, -0 where it is negative), a fresh array."""
    if isinstance(a, np.ndarray):
        with np.errstate(invalid="ignore"):
            return a * a.dtype.type(0)
    return a * a.dtype.type(0)


def _array_module(a: Any):
    from .._arrays import is_device_array
    if is_device_array(a):
        import cupy
        return cupy
    return np


def _ce_args(op: str, logits: Any, target: Any):
    a, on_device = c.float_arrays(op, logits=logits)
    logits = a["logits"]
    t = c.arrays(op, target=target)["target"]
    c.rank(op, "logits", logits, (2,), "(N, C)")
    if t.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices, got dtype {t.dtype}")
    c.shape(op, "target", t, (int(logits.shape[0]),))
    ncls = int(logits.shape[1])
    if t.size and (int(t.min()) < 0 or int(t.max()) >= ncls):
        bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
        raise ValueError(f"{op}: target values must be in [0, {ncls - 1}] (C = {ncls}), got {bad}")
    return logits, t.astype(np.int64, copy=False), on_device


def _ce_native(op: str, logits: Any, target: Any, backend: Optional[str]) -> Any:
    """The native ``op`` for the common call (:func:`_common.native_op`) -- int64 class indices in range
    for (N, C) logits -- or ``None``: every other call, and every call that would fail, takes
    :func:`_ce_args`' checks."""
    native = c.native_op(op, backend, logits)
    if (native is None or logits.ndim != 2 or type(target) is not np.ndarray or target.dtype != np.int64
            or target.shape != logits.shape[:1] or target.nbytes > c.ALWAYS_FITS):
        return None
    if target.size and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        return None
    return native


def cross_entropy(logits: Any, target: Any, *, backend: Optional[str] = None) -> Any:
    """Mean over the batch of ``-log_softmax(logits)[i, target[i]]``; a 0-d array.

    ``logits`` (N, C) float, ``target`` (N,) integer class indices. An empty
    batch gives NaN, as in PyTorch.
    """
    op = "cross_entropy"
    native = _ce_native(op, logits, target, backend)
    if native is not None:
        return native(logits, target)
    logits, t, on_device = _ce_args(op, logits, target)
    return c.dispatch(op, backend, on_device, logits=logits).cross_entropy(logits, t)


def cross_entropy_backward(grad_loss: Any, logits: Any, target: Any, *, backend: Optional[str] = None) -> Any:
    """Gradient of :func:`cross_entropy` w.r.t. ``logits``, scaled by ``grad_loss`` (a scalar)."""
    op = "cross_entropy_backward"
    native = _ce_native(op, logits, target, backend)
    if native is not None and (type(grad_loss) is float or isinstance(grad_loss, np.floating)
                               or (type(grad_loss) is np.ndarray and grad_loss.size == 1)):
        return native(np.asarray(grad_loss).reshape(()).astype(logits.dtype), logits, target)
    logits, t, on_device = _ce_args(op, logits, target)
    g = c.arrays(op, grad_loss=grad_loss)["grad_loss"]
    if g.size != 1:
        raise ValueError(f"{op}: grad_loss must be a scalar, got shape {tuple(g.shape)}")
    g = g.reshape(()).astype(logits.dtype)
    return c.dispatch(op, backend, on_device, logits=logits).cross_entropy_backward(g, logits, t)
