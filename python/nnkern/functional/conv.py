"""conv1d / conv2d and their backward: validation and dispatch."""
from __future__ import annotations

from typing import Any, Optional, Tuple, Union

from .._shapes import conv_output_size, same_padding
from . import _common as c

IntOrPair = Union[int, Tuple[int, int]]
Padding = Union[int, Tuple[int, int], str]
Grads = Tuple[Optional[Any], Optional[Any], Optional[Any]]


def _padding4(op: str, padding: Padding, kernel: tuple[int, int], dilation: tuple[int, int],
              stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """``padding`` as (top, bottom, left, right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{op}: padding='same' needs stride 1, got stride {stride}")
            return same_padding(kernel[0], dilation[0]) + same_padding(kernel[1], dilation[1])
        raise ValueError(f"{op}: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    ph, pw = c.pair(op, "padding", padding, minimum=0)
    return (ph, ph, pw, pw)


# Validated calls, by op, shapes and options (typed: 1, True and 1.0 are different keys): a repeated
# call (every training step) skips the checks, ~8 of a small conv2d's ~14 us. Only calls that passed
# are kept; bounded by clearing when full.
_ARGS_CACHE: dict = {}
_ARGS_CACHE_SIZE = 1024


def _typed_key(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return (type(v), tuple(_typed_key(e) for e in v))
    return (type(v), v)


def _conv_args(op: str, x: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any, groups: Any):
    """Validate a conv2d call; return the normalized arguments and the output shape (cached per shapes and
    options)."""
    try:
        key = (op, tuple(x.shape), tuple(weight.shape), None if bias is None else tuple(bias.shape),
               _typed_key(stride), _typed_key(padding), _typed_key(dilation), _typed_key(groups))
        hit = _ARGS_CACHE.get(key)
    except TypeError:  # an unhashable option: validate without the cache
        key, hit = None, None
    if hit is not None:
        return hit
    result = _check_conv_args(op, x, weight, bias, stride, padding, dilation, groups)
    if key is not None:
        if len(_ARGS_CACHE) >= _ARGS_CACHE_SIZE:
            _ARGS_CACHE.clear()
        _ARGS_CACHE[key] = result
    return result


def _check_conv_args(op: str, x: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any,
                     groups: Any):
    """The checks of :func:`_conv_args`."""
    if x.ndim != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape {tuple(x.shape)}")
    c.rank(op, "weight", weight, (4,), "(out_channels, in_channels/groups, kH, kW)")
    groups = c.int_arg(op, "groups", groups, minimum=1)
    stride = c.pair(op, "stride", stride, minimum=1)
    dilation = c.pair(op, "dilation", dilation, minimum=1)
    n, ch, h, w = (int(s) for s in x.shape)
    o, cg, kh, kw = (int(s) for s in weight.shape)
    if ch % groups:
        raise ValueError(f"{op}: groups={groups} must divide the input channels, got {ch} channels")
    if o % groups:
        raise ValueError(f"{op}: groups={groups} must divide the output channels (weight.shape[0]), got {o}")
    if cg * groups != ch:
        raise ValueError(
            f"{op}: weight.shape[1] * groups must equal the input channels: expected weight.shape[1] = "
            f"{ch // groups} for {ch} channels and groups={groups}, got weight shape {tuple(weight.shape)}"
        )
    if min(kh, kw) < 1:
        raise ValueError(f"{op}: kernel size must be positive, got weight shape {tuple(weight.shape)}")
    if bias is not None:
        c.shape(op, "bias", bias, (o,))
    pad = _padding4(op, padding, (kh, kw), dilation, stride)
    if max(pad) > c.MAX_OPTION:  # padding="same" with a huge dilated kernel
        raise ValueError(f"{op}: padding {pad} (from padding={padding!r}, kernel {kh}x{kw}, dilation {dilation}) "
                         f"must be at most 2**60")
    oh = conv_output_size(h, kh, stride[0], pad[0], pad[1], dilation[0])
    ow = conv_output_size(w, kw, stride[1], pad[2], pad[3], dilation[1])
    c.output_size_ok(op, (oh, ow), f"input {h}x{w}, kernel {kh}x{kw}, stride {stride}, padding {pad}, dilation {dilation}")
    c.elements_ok(op, (n, o, oh, ow))
    return stride, pad, dilation, groups, (n, o, oh, ow)


def conv2d(x: Any, weight: Any, bias: Any = None, stride: IntOrPair = 1, padding: Padding = 0,
           dilation: IntOrPair = 1, groups: int = 1, *, activation: Optional[str] = None,
           residual: Any = None, backend: Optional[str] = None) -> Any:
    """2-D convolution (cross-correlation) of ``x`` (N, C, H, W) with ``weight`` (O, C/groups, kH, kW).

    As ``torch.nn.functional.conv2d``; ``padding`` is an int, a pair, ``"same"``
    or ``"valid"``. ``activation="relu"`` with an optional ``residual``
    (N, O, OH, OW) computes ``relu(conv + bias + residual)`` in one pass.
    A 3-D input (C, H, W) is treated as a batch of one and returns 3-D.
    """
    op = "conv2d"
    native = _conv2d_native(x, weight, bias, residual, backend)
    if native is not None and activation in (None, "relu"):
        stride, pad, dilation, groups, out_shape = _conv_args(op, x, weight, bias, stride, padding, dilation, groups)
        if residual is None or residual.shape == out_shape:
            return native(x, weight, bias, stride, pad, dilation, groups, activation, residual)
    a, on_device = c.float_arrays(op, input=x, weight=weight, bias=bias, residual=residual)
    x, weight, bias, residual = a["input"], a["weight"], a["bias"], a["residual"]
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
        if residual is not None and residual.ndim == 3:
            residual = residual[None]
    stride, pad, dilation, groups, out_shape = _conv_args(op, x, weight, bias, stride, padding, dilation, groups)
    if activation not in (None, "relu"):
        raise ValueError(f"{op}: activation must be None or 'relu', got {activation!r}")
    if residual is not None:
        c.shape(op, "residual", residual, out_shape)
    out = c.dispatch(op, backend, on_device, input=x, weight=weight, bias=bias, residual=residual).conv2d(
        x, weight, bias, stride, pad, dilation, groups, activation, residual)
    return out[0] if unbatched else out


def _conv2d_native(x: Any, weight: Any, bias: Any, residual: Any, backend: Optional[str]) -> Any:
    """The native ``conv2d`` for the common call (:func:`_common.native_op`: NumPy float arrays of one
    dtype, the cpu backend) on a batched input and a 4-D weight; ``None`` sends every other call through
    the checks. The caller still validates the options and shapes (cached, :func:`_conv_args`): a call
    that would fail raises the checked path's error."""
    arrays = [a for a in (x, weight, bias, residual) if a is not None]
    native = c.native_op("conv2d", backend, *arrays)
    if native is None or x.ndim != 4 or weight.ndim != 4:
        return None
    return native


def conv2d_backward(grad_output: Any, x: Any, weight: Any, stride: IntOrPair = 1, padding: Padding = 0,
                    dilation: IntOrPair = 1, groups: int = 1, output_mask: tuple = (True, True, True), *,
                    backend: Optional[str] = None) -> Grads:
    """Gradients ``(grad_input, grad_weight, grad_bias)`` of :func:`conv2d`.

    ``grad_output`` is the gradient of the convolution's output before any
    fused activation or residual (apply :func:`relu_backward` first).
    Entries whose ``output_mask`` flag is False are ``None``.
    """
    op = "conv2d_backward"
    native = c.native_op(op, backend, grad_output, x, weight)
    if native is not None and x.ndim == 4 and grad_output.ndim == 4 and weight.ndim == 4:
        stride, pad, dilation, groups, out_shape = _conv_args(op, x, weight, None, stride, padding, dilation, groups)
        if grad_output.shape == out_shape:
            return native(grad_output, x, weight, stride, pad, dilation, groups, c.mask3(op, output_mask))
    a, on_device = c.float_arrays(op, grad_output=grad_output, input=x, weight=weight)
    g, x, weight = a["grad_output"], a["input"], a["weight"]
    unbatched = x.ndim == 3
    if unbatched:
        x, g = x[None], (g[None] if g.ndim == 3 else g)
    stride, pad, dilation, groups, out_shape = _conv_args(op, x, weight, None, stride, padding, dilation, groups)
    c.shape(op, "grad_output", g, out_shape)
    mask = c.mask3(op, output_mask)
    gx, gw, gb = c.dispatch(op, backend, on_device, grad_output=g, input=x, weight=weight).conv2d_backward(
        g, x, weight, stride, pad, dilation, groups, mask)
    if unbatched and gx is not None:
        gx = gx[0]
    return gx, gw, gb


def _conv1d_as_2d(op: str, x: Any, weight: Any, stride: Any, padding: Any, dilation: Any):
    """Map conv1d arguments onto conv2d with a height of 1."""
    if x.ndim not in (2, 3):
        raise ValueError(f"{op}: input must be 3-D (N, C, L) or 2-D (C, L), got shape {tuple(x.shape)}")
    c.rank(op, "weight", weight, (3,), "(out_channels, in_channels/groups, kL)")
    s = c.single(op, "stride", stride, minimum=1)
    d = c.single(op, "dilation", dilation, minimum=1)
    if isinstance(padding, str):
        p2: Any = padding
    else:
        p = c.single(op, "padding", padding, minimum=0)
        p2 = (0, p)
    return x[..., None, :], weight[:, :, None, :], (1, s), p2, (1, d)


def conv1d(x: Any, weight: Any, bias: Any = None, stride: int = 1, padding: Union[int, str] = 0,
           dilation: int = 1, groups: int = 1, *, backend: Optional[str] = None) -> Any:
    """1-D convolution of ``x`` (N, C, L) with ``weight`` (O, C/groups, kL), as ``torch.nn.functional.conv1d``."""
    op = "conv1d"
    a, _ = c.float_arrays(op, input=x, weight=weight, bias=bias)
    x2, w2, s2, p2, d2 = _conv1d_as_2d(op, a["input"], a["weight"], stride, padding, dilation)
    out = conv2d(x2, w2, a["bias"], s2, p2, d2, groups, backend=backend)
    return out[..., 0, :]


def conv1d_backward(grad_output: Any, x: Any, weight: Any, stride: int = 1, padding: Union[int, str] = 0,
                    dilation: int = 1, groups: int = 1, output_mask: tuple = (True, True, True), *,
                    backend: Optional[str] = None) -> Grads:
    """Gradients ``(grad_input, grad_weight, grad_bias)`` of :func:`conv1d`."""
    op = "conv1d_backward"
    a, _ = c.float_arrays(op, grad_output=grad_output, input=x, weight=weight)
    x2, w2, s2, p2, d2 = _conv1d_as_2d(op, a["input"], a["weight"], stride, padding, dilation)
    g = a["grad_output"]
    if g.ndim not in (2, 3):
        raise ValueError(f"{op}: grad_output must be 3-D or 2-D, got shape {tuple(g.shape)}")
    gx, gw, gb = conv2d_backward(g[..., None, :], x2, w2, s2, p2, d2, groups, output_mask, backend=backend)
    return (None if gx is None else gx[..., 0, :]), (None if gw is None else gw[:, :, 0, :]), gb
