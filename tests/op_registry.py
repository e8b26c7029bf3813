"""One record per op (in the spirit of PyTorch's OpInfo) drives the generic tests.

A record says how to make sample inputs, how to run the op's forward and
backward through nnkern on a given backend, and how to run it in torch.
``test_ops`` compares every backend that implements an op against the
float64 NumPy reference, ``test_gradcheck`` checks every backward with
finite differences, ``test_torch`` checks the reference against torch.

Adding an op = adding one ``OpInfo`` to ``OPS``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import nnkern as nk
from nnkern._shapes import conv_output_size


@dataclass
class Sample:
    """Named float inputs (the differentiable ones), fixed options, and a label."""

    inputs: dict[str, np.ndarray]
    params: dict[str, Any]
    desc: str
    torch_ok: bool = True           # False where torch cannot express the same computation
    check_backward: bool = True     # False for forward-only precision stress samples

    def cast(self, dtype) -> "Sample":
        """The same sample with float inputs in ``dtype`` (non-contiguous layouts kept)."""
        return Sample({k: _astype_keep_layout(v, dtype) for k, v in self.inputs.items()},
                      dict(self.params), self.desc, self.torch_ok, self.check_backward)


def _astype_keep_layout(a: np.ndarray, dtype) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
        return a
    if a.flags.c_contiguous or a.ndim == 0:
        return a.astype(dtype)
    # rebuild the same kind of view (transposed / strided) over a converted base
    base = np.asarray(a.base if a.base is not None else a)
    if base.dtype.kind == "f" and base.size >= a.size:
        converted = base.astype(dtype)
        offset = (a.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // a.itemsize
        strides = tuple(s // a.itemsize * np.dtype(dtype).itemsize for s in a.strides)
        view = np.lib.stride_tricks.as_strided(converted.reshape(-1)[offset:], a.shape, strides)
        if np.array_equal(view.astype(np.float64), a.astype(np.float64), equal_nan=True):
            return view
    return a.astype(dtype)


@dataclass
class OpInfo:
    name: str
    samples: Callable[[np.random.Generator], list[Sample]]
    # forward(inputs, params, backend) -> (outputs tuple, saved)
    forward: Callable[..., tuple]
    # backward(inputs, params, outputs, saved, grads_of_outputs, backend) -> {input name: grad}
    backward: Callable[..., dict] | None
    # torch_forward(torch, tensors, params) -> outputs tuple (tensors)
    torch_forward: Callable[..., tuple] | None = None
    grad_inputs: Callable[[Sample], list[str]] = lambda s: [k for k, v in s.inputs.items() if v.dtype.kind == "f"]
    backward_op: str | None = None
    # per dtype: relative error bound ||out - ref|| / ||ref|| against the float64 reference
    rtol: dict = field(default_factory=lambda: {np.float32: 1e-5, np.float64: 1e-12})
    differentiable_outputs: Callable[[Sample], list[int]] | None = None

    @property
    def ops(self) -> list[str]:
        return [self.name] + ([self.backward_op] if self.backward_op else [])


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float64)


def transposed(a):
    """A non-contiguous view with the same values: stored transposed, viewed back."""
    return np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)


# ------------------------------------------------------------------------------------------------ conv2d

def conv2d_samples(rng):
    S = []

    def add(n, c, h, w, o, kh, kw, desc, bias=True, residual=False, noncontig=False, **p):
        p.setdefault("stride", 1)
        p.setdefault("padding", 0)
        p.setdefault("dilation", 1)
        p.setdefault("groups", 1)
        p.setdefault("activation", None)
        x = rand(rng, n, c, h, w)
        if noncontig:
            x = transposed(x)
        inputs = {"x": x, "weight": rand(rng, o, c // p["groups"], kh, kw, scale=0.5)}
        if bias:
            inputs["bias"] = rand(rng, o)
        if residual:
            oh = conv_output_size(h, kh, p["stride"], p["padding"], p["padding"], p["dilation"])
            ow = conv_output_size(w, kw, p["stride"], p["padding"], p["padding"], p["dilation"])
            inputs["residual"] = rand(rng, n, o, oh, ow)
        S.append(Sample(inputs, p, desc))

    add(2, 3, 7, 6, 4, 3, 3, "3x3 p1", padding=1)
    add(1, 4, 9, 8, 6, 3, 3, "s2 p(1,2) batch1", stride=2, padding=(1, 2))
    add(2, 4, 9, 9, 6, 3, 3, "dilation2 groups2", dilation=2, padding=2, groups=2)
    add(2, 5, 6, 7, 5, 3, 3, "depthwise", padding=1, groups=5)
    add(2, 6, 5, 5, 12, 3, 3, "depthwise x2 channels", padding=1, groups=6)
    add(3, 8, 5, 4, 3, 1, 1, "1x1 no bias", bias=False)
    add(2, 3, 6, 7, 4, 4, 2, "same (asymmetric)", padding="same")
    add(1, 2, 8, 7, 3, 5, 3, "valid 5x3", padding="valid")
    add(2, 3, 11, 13, 4, 7, 7, "7x7 s2 p3", stride=2, padding=3)
    add(2, 3, 6, 6, 4, 3, 3, "fused relu", padding=1, activation="relu")
    add(2, 3, 6, 6, 4, 3, 3, "fused relu + residual", padding=1, activation="relu", residual=True)
    add(2, 3, 6, 6, 4, 3, 3, "residual without activation", padding=1, residual=True)
    add(2, 3, 7, 5, 4, 3, 3, "non-contiguous input", padding=1, noncontig=True)
    add(0, 3, 6, 6, 4, 3, 3, "zero batch", padding=1)
    add(1, 1, 1, 1, 1, 1, 1, "1x1x1x1")
    add(2, 4, 6, 6, 4, 3, 3, "kernel = input size", groups=2, stride=3)
    return S


def conv2d_forward(inp, p, backend):
    out = nk.conv2d(inp["x"], inp["weight"], inp.get("bias"), p["stride"], p["padding"], p["dilation"],
                    p["groups"], activation=p["activation"], residual=inp.get("residual"), backend=backend)
    return (out,), None


def conv2d_backward(inp, p, outs, saved, grads, backend):
    g = grads[0]
    if p["activation"] == "relu":
        g = nk.relu_backward(g, outs[0], backend=backend if backend != "cpu" or _native("relu_backward") else "numpy")
    gx, gw, gb = nk.conv2d_backward(g, inp["x"], inp["weight"], p["stride"], p["padding"], p["dilation"],
                                    p["groups"], (True, True, "bias" in inp), backend=backend)
    res = {"x": gx, "weight": gw}
    if "bias" in inp:
        res["bias"] = gb
    if "residual" in inp:
        res["residual"] = g
    return res


def conv2d_torch(torch, t, p):
    F = torch.nn.functional
    x, pad = t["x"], p["padding"]
    if isinstance(pad, str) and pad == "same" and p["stride"] != 1:
        raise AssertionError
    out = F.conv2d(x, t["weight"], t.get("bias"), p["stride"], pad, p["dilation"], p["groups"])
    if "residual" in t:
        out = out + t["residual"]
    if p["activation"] == "relu":
        out = torch.relu(out)
    return (out,)


def _native(op):
    from nnkern import backends
    return backends.has_op("cpu", op)


# ------------------------------------------------------------------------------------------------ conv1d

def conv1d_samples(rng):
    S = []
    for n, c, l, o, k, p, desc in [(2, 3, 10, 4, 3, dict(padding=1), "k3 p1"),
                                   (1, 4, 11, 6, 5, dict(stride=2, padding=2, dilation=1, groups=2), "s2 g2"),
                                   (3, 2, 9, 3, 3, dict(padding="same", dilation=2), "same d2"),
                                   (0, 2, 9, 3, 3, dict(), "zero batch")]:
        p = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, **p}
        S.append(Sample({"x": rand(rng, n, c, l), "weight": rand(rng, o, c // p["groups"], k, scale=0.5),
                         "bias": rand(rng, o)}, p, desc))
    return S


def conv1d_forward(inp, p, backend):
    return (nk.conv1d(inp["x"], inp["weight"], inp["bias"], p["stride"], p["padding"], p["dilation"], p["groups"],
                      backend=backend),), None


def conv1d_backward(inp, p, outs, saved, grads, backend):
    gx, gw, gb = nk.conv1d_backward(grads[0], inp["x"], inp["weight"], p["stride"], p["padding"], p["dilation"],
                                    p["groups"], backend=backend)
    return {"x": gx, "weight": gw, "bias": gb}


def conv1d_torch(torch, t, p):
    return (torch.nn.functional.conv1d(t["x"], t["weight"], t["bias"], p["stride"], p["padding"], p["dilation"],
                                       p["groups"]),)


# ------------------------------------------------------------------------------------------------ pooling

def pool_samples(rng, with_dilation):
    S = []
    cases = [((2, 3, 9, 8), dict(kernel_size=3, stride=2, padding=1), "3x3 s2 p1"),
             ((1, 2, 7, 7), dict(kernel_size=2), "2x2 batch1"),
             ((2, 2, 10, 9), dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True), "ceil"),
             ((2, 2, 8, 11), dict(kernel_size=3, stride=2, ceil_mode=True), "ceil no pad"),
             ((2, 3, 5, 5), dict(kernel_size=5), "kernel = input"),
             ((0, 3, 6, 6), dict(kernel_size=2), "zero batch"),
             ((3, 6, 5), dict(kernel_size=2, stride=1), "unbatched 3-D")]
    if with_dilation:
        cases.append(((2, 2, 11, 10), dict(kernel_size=3, stride=2, padding=1, dilation=2), "dilation 2"))
        cases.append(((2, 2, 11, 10), dict(kernel_size=3, stride=1, padding=1, dilation=(1, 2), ceil_mode=True),
                      "dilation (1,2) ceil"))
    else:
        cases.append(((2, 2, 7, 9), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
                      "exclude pad"))
        cases.append(((2, 2, 8, 9), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                         count_include_pad=True), "ceil include pad"))
        cases.append(((2, 2, 8, 9), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                         count_include_pad=False), "ceil exclude pad"))
    for shape, p, desc in cases:
        S.append(Sample({"x": rand(rng, *shape)}, p, desc))
    S.append(Sample({"x": transposed(rand(rng, 2, 3, 9, 7))}, dict(kernel_size=3, stride=2), "non-contiguous"))
    return S


def _pool_kw(p, keys):
    return {k: v for k, v in p.items() if k in keys}


_MAXK = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
_AVGK = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")


def max_pool_forward(inp, p, backend):
    out, idx = nk.max_pool2d(inp["x"], return_indices=True, backend=backend, **_pool_kw(p, _MAXK))
    return (out, idx), idx


def max_pool_backward(inp, p, outs, saved, grads, backend):
    return {"x": nk.max_pool2d_backward(grads[0], inp["x"], saved, backend=backend, **_pool_kw(p, _MAXK))}


def max_pool_torch(torch, t, p):
    return torch.nn.functional.max_pool2d(t["x"], return_indices=True, **_pool_kw(p, _MAXK))


def avg_pool_forward(inp, p, backend):
    return (nk.avg_pool2d(inp["x"], backend=backend, **_pool_kw(p, _AVGK)),), None


def avg_pool_backward(inp, p, outs, saved, grads, backend):
    return {"x": nk.avg_pool2d_backward(grads[0], inp["x"], backend=backend, **_pool_kw(p, _AVGK))}


def avg_pool_torch(torch, t, p):
    return (torch.nn.functional.avg_pool2d(t["x"], **_pool_kw(p, _AVGK)),)


def adaptive_samples(rng):
    S = []
    for shape, size, desc in [((2, 3, 7, 7), (1, 1), "global"), ((2, 3, 10, 9), (3, 5), "uneven bins"),
                              ((1, 2, 5, 5), (7, 7), "upsampling bins"), ((2, 3, 6, 8), 4, "int size"),
                              ((2, 3, 6, 8), (None, 3), "None keeps height"), ((0, 2, 4, 4), 2, "zero batch"),
                              ((2, 3, 4, 4), 0, "output size 0"), ((3, 5, 7), (2, 3), "unbatched 3-D")]:
        S.append(Sample({"x": rand(rng, *shape)}, {"output_size": size}, desc))
    S.append(Sample({"x": transposed(rand(rng, 2, 3, 9, 7))}, {"output_size": (2, 2)}, "non-contiguous"))
    return S


def adaptive_forward(inp, p, backend):
    return (nk.adaptive_avg_pool2d(inp["x"], p["output_size"], backend=backend),), None


def adaptive_backward(inp, p, outs, saved, grads, backend):
    return {"x": nk.adaptive_avg_pool2d_backward(grads[0], inp["x"], backend=backend)}


def adaptive_torch(torch, t, p):
    return (torch.nn.functional.adaptive_avg_pool2d(t["x"], p["output_size"]),)


# ------------------------------------------------------------------------------------------------ batch norm

def bn_samples(rng):
    S = []
    for shape, training, affine, desc in [((4, 3, 5, 6), True, True, "2d training"),
                                          ((4, 3, 5, 6), False, True, "2d eval"),
                                          ((5, 4), True, True, "1d (N, C) training"),
                                          ((3, 4, 7), True, False, "1d (N, C, L) training, no affine"),
                                          ((1, 3, 4, 4), True, True, "batch 1 training"),
                                          ((2, 3, 4, 5), False, False, "eval no affine")]:
        c = shape[1]
        inputs = {"x": rand(rng, *shape, scale=2.0) + 0.5}
        if affine:
            inputs["weight"] = rand(rng, c)
            inputs["bias"] = rand(rng, c)
        params = {"training": training, "running_mean": rand(rng, c, scale=0.3),
                  "running_var": np.abs(rand(rng, c)) + 0.5}
        S.append(Sample(inputs, params, desc))
    # a large mean and a small spread: E[x^2] - E[x]^2 would cancel catastrophically in float32.
    # Forward only: the float32 mean the forward saves is itself rounded (by up to 5e-4 here),
    # and the backward's normalized input inherits that rounding, as in PyTorch.
    x = rand(rng, 3, 2, 4, 4) + 1e4
    S.append(Sample({"x": x, "weight": rand(rng, 2), "bias": rand(rng, 2)},
                    {"training": True, "running_mean": np.zeros(2), "running_var": np.ones(2)},
                    "large mean small spread", check_backward=False))
    S.append(Sample({"x": transposed(rand(rng, 3, 2, 5, 4))}, {"training": True, "running_mean": np.zeros(2),
                                                                "running_var": np.ones(2)}, "non-contiguous"))
    # the fused forms relu(bn(x) + residual) of a ResNet block, bn(x) + residual, relu(bn(x)); drawn from a
    # spawned generator, which leaves rng's stream (and what callers draw after the samples) as it was
    rng = rng.spawn(1)[0]
    for training, activation, residual, desc in [(True, "relu", True, "fused relu + residual training"),
                                                 (False, "relu", True, "fused relu + residual eval"),
                                                 (True, "relu", False, "fused relu training"),
                                                 (False, None, True, "residual without activation eval")]:
        inputs = {"x": rand(rng, 2, 3, 5, 4, scale=2.0), "weight": rand(rng, 3), "bias": rand(rng, 3)}
        if residual:
            inputs["residual"] = transposed(rand(rng, 2, 3, 5, 4)) if training else rand(rng, 2, 3, 5, 4)
        S.append(Sample(inputs, {"training": training, "running_mean": rand(rng, 3, scale=0.3),
                                 "running_var": np.abs(rand(rng, 3)) + 0.5, "activation": activation}, desc))
    return S


def bn_forward(inp, p, backend):
    dt = inp["x"].dtype
    rm, rv = p["running_mean"].astype(dt), p["running_var"].astype(dt)  # fresh copies: updated in place
    out, mean, invstd = nk.batch_norm(inp["x"], rm, rv, inp.get("weight"), inp.get("bias"), p["training"],
                                      0.1, 1e-5, activation=p.get("activation"), residual=inp.get("residual"),
                                      return_stats=True, backend=backend)
    return (out, rm, rv), (mean, invstd)


def bn_backward(inp, p, outs, saved, grads, backend):
    mean, invstd = saved
    g = grads[0]
    if p.get("activation") == "relu":
        g = nk.relu_backward(g, outs[0], backend=backend if backend != "cpu" or _native("relu_backward") else "numpy")
    gx, gw, gb = nk.batch_norm_backward(g, inp["x"], inp.get("weight"), mean, invstd, p["training"],
                                        backend=backend)
    res = {"x": gx}
    if "weight" in inp:
        res.update(weight=gw, bias=gb)
    if "residual" in inp:
        res["residual"] = g
    return res


def bn_torch(torch, t, p):
    rm = torch.tensor(p["running_mean"], dtype=t["x"].dtype)
    rv = torch.tensor(p["running_var"], dtype=t["x"].dtype)
    out = torch.nn.functional.batch_norm(t["x"], rm, rv, t.get("weight"), t.get("bias"), p["training"], 0.1, 1e-5)
    if "residual" in t:
        out = out + t["residual"]
    if p.get("activation") == "relu":
        out = torch.relu(out)
    return (out, rm, rv)


# ------------------------------------------------------------------------------------------------ linear & pointwise

def linear_samples(rng):
    return [Sample({"x": rand(rng, 5, 7), "weight": rand(rng, 4, 7), "bias": rand(rng, 4)}, {}, "2-D"),
            Sample({"x": rand(rng, 2, 3, 6), "weight": rand(rng, 5, 6)}, {}, "3-D no bias"),
            Sample({"x": rand(rng, 6), "weight": rand(rng, 3, 6), "bias": rand(rng, 3)}, {}, "1-D"),
            Sample({"x": rand(rng, 0, 6), "weight": rand(rng, 3, 6), "bias": rand(rng, 3)}, {}, "zero batch"),
            Sample({"x": transposed(rand(rng, 7, 5)), "weight": transposed(rand(rng, 4, 5)), "bias": rand(rng, 4)},
                   {}, "non-contiguous")]


def linear_forward(inp, p, backend):
    return (nk.linear(inp["x"], inp["weight"], inp.get("bias"), backend=backend),), None


def linear_backward(inp, p, outs, saved, grads, backend):
    gx, gw, gb = nk.linear_backward(grads[0], inp["x"], inp["weight"], (True, True, "bias" in inp), backend=backend)
    return {"x": gx, "weight": gw, **({"bias": gb} if "bias" in inp else {})}


def linear_torch(torch, t, p):
    return (torch.nn.functional.linear(t["x"], t["weight"], t.get("bias")),)


def pointwise_samples(rng, scale=3.0):
    return [Sample({"x": rand(rng, 4, 5, scale=scale)}, {}, "2-D"),
            Sample({"x": rand(rng, 2, 3, 4, 5, scale=scale)}, {}, "4-D"),
            Sample({"x": rand(rng, 17, scale=scale)}, {}, "odd 1-D"),
            Sample({"x": rand(rng, 0, 3)}, {}, "empty"),
            Sample({"x": transposed(rand(rng, 6, 5, scale=scale))}, {}, "non-contiguous"),
            Sample({"x": rand(rng, 40, scale=30.0)}, {}, "large |x|")]


def pointwise(name):
    def forward(inp, p, backend):
        return (getattr(nk, name)(inp["x"], backend=backend),), None

    def backward(inp, p, outs, saved, grads, backend):
        return {"x": getattr(nk, name + "_backward")(grads[0], outs[0], backend=backend)}

    def torch_forward(torch, t, p):
        return (getattr(torch, name)(t["x"]),)

    return forward, backward, torch_forward


def softmax_samples(rng):
    return [Sample({"x": rand(rng, 4, 6, scale=3)}, {"dim": 1}, "dim 1"),
            Sample({"x": rand(rng, 3, 4, 5, scale=3)}, {"dim": 0}, "dim 0"),
            Sample({"x": rand(rng, 3, 4, 5, scale=3)}, {"dim": -1}, "dim -1"),
            # torch's float64 softmax backward loses ~6e-9 here (one probability ~1 makes g - sum(g y)
            # cancel); test_softmax_backward_extended_precision checks this sample against long double
            Sample({"x": rand(rng, 2, 5) * 100 + 1000}, {"dim": 1}, "large logits", torch_ok=False),
            Sample({"x": transposed(rand(rng, 5, 4))}, {"dim": 1}, "non-contiguous"),
            Sample({"x": rand(rng, 0, 4)}, {"dim": 1}, "empty")]


def softmax_like(name):
    def forward(inp, p, backend):
        return (getattr(nk, name)(inp["x"], p["dim"], backend=backend),), None

    def backward(inp, p, outs, saved, grads, backend):
        return {"x": getattr(nk, name + "_backward")(grads[0], outs[0], p["dim"], backend=backend)}

    def torch_forward(torch, t, p):
        return (getattr(torch.nn.functional, name)(t["x"], dim=p["dim"]),)

    return forward, backward, torch_forward


def dropout_samples(rng):
    return [Sample({"x": rand(rng, 6, 7)}, {"p": 0.3, "seed": 1234}, "p 0.3", torch_ok=False),
            Sample({"x": rand(rng, 3, 4, 5)}, {"p": 0.5, "seed": 7}, "p 0.5", torch_ok=False),
            Sample({"x": transposed(rand(rng, 5, 9))}, {"p": 0.2, "seed": 99}, "non-contiguous", torch_ok=False),
            Sample({"x": rand(rng, 0, 4)}, {"p": 0.5, "seed": 1}, "empty", torch_ok=False)]


def dropout_forward(inp, p, backend):
    out, mask = nk.dropout(inp["x"], p["p"], True, seed=p["seed"], return_mask=True, backend=backend)
    return (out,), mask


def dropout_backward(inp, p, outs, saved, grads, backend):
    return {"x": nk.dropout_backward(grads[0], saved, p["p"], backend=backend)}


def ce_samples(rng):
    S = []
    for n, c, desc in [(6, 5, "6x5"), (1, 3, "batch 1"), (4, 10, "10 classes")]:
        S.append(Sample({"logits": rand(rng, n, c, scale=2)}, {"target": rng.integers(0, c, n)}, desc))
    S.append(Sample({"logits": rand(rng, 3, 4) * 50 + 500}, {"target": np.array([0, 3, 1])}, "large logits"))
    S.append(Sample({"logits": transposed(rand(rng, 4, 5))}, {"target": np.array([1, 0, 4, 2])},
                    "non-contiguous"))
    return S


def ce_forward(inp, p, backend):
    return (nk.cross_entropy(inp["logits"], p["target"], backend=backend),), None


def ce_backward(inp, p, outs, saved, grads, backend):
    return {"logits": nk.cross_entropy_backward(grads[0], inp["logits"], p["target"], backend=backend)}


def ce_torch(torch, t, p):
    return (torch.nn.functional.cross_entropy(t["logits"], torch.as_tensor(p["target"])),)


# ------------------------------------------------------------------------------------------------ recurrent cells

def cell_samples(rng, gates, extra=None):
    S = []
    for n, i, h, bias, desc in [(3, 4, 5, True, "3x4->5"), (1, 3, 2, False, "batch 1 no bias"),
                                (4, 6, 3, True, "4x6->3"), (0, 3, 2, True, "zero batch")]:
        inp = {"x": rand(rng, n, i), "h": rand(rng, n, h) * 0.5, "w_ih": rand(rng, gates * h, i, scale=0.5),
               "w_hh": rand(rng, gates * h, h, scale=0.5)}
        if gates == 4:
            inp["c"] = rand(rng, n, h)
        if bias:
            inp["b_ih"], inp["b_hh"] = rand(rng, gates * h, scale=0.5), rand(rng, gates * h, scale=0.5)
        for p in (extra or [{}]):
            S.append(Sample(dict(inp), dict(p), desc + "".join(f" {v}" for v in p.values())))
    inp = {"x": rand(rng, 4), "h": rand(rng, 3), "w_ih": rand(rng, gates * 3, 4), "w_hh": rand(rng, gates * 3, 3)}
    if gates == 4:
        inp["c"] = rand(rng, 3)
    S.append(Sample(inp, dict((extra or [{}])[0]), "unbatched"))
    S.append(Sample({**S[0].inputs, "x": transposed(rand(rng, 3, 4))}, dict(S[0].params),
                    "non-contiguous x"))
    return S


def rnn_cell_forward(inp, p, backend):
    h, ws = nk.rnn_cell(inp["x"], inp["h"], inp["w_ih"], inp["w_hh"], inp.get("b_ih"), inp.get("b_hh"),
                        p.get("nonlinearity", "tanh"), return_workspace=True, backend=backend)
    return (h,), ws


def _cell_grads(inp, g, names):
    res = dict(zip(names, g))
    return {k: v for k, v in res.items() if k in inp}


def rnn_cell_backward(inp, p, outs, saved, grads, backend):
    return _cell_grads(inp, nk.rnn_cell_backward(grads[0], saved), ["x", "h", "w_ih", "w_hh", "b_ih", "b_hh"])


def rnn_cell_torch(torch, t, p):
    act = torch.tanh if p.get("nonlinearity", "tanh") == "tanh" else torch.relu
    pre = t["x"] @ t["w_ih"].T + t["h"] @ t["w_hh"].T
    if "b_ih" in t:
        pre = pre + t["b_ih"] + t["b_hh"]
    ref = act(pre)
    # the module form, where it accepts the shapes
    cell = torch.nn.RNNCell(t["x"].shape[-1], t["h"].shape[-1], bias="b_ih" in t,
                            nonlinearity=p.get("nonlinearity", "tanh")).to(t["x"].dtype)
    with torch.no_grad():
        cell.weight_ih.copy_(t["w_ih"])
        cell.weight_hh.copy_(t["w_hh"])
        if "b_ih" in t:
            cell.bias_ih.copy_(t["b_ih"])
            cell.bias_hh.copy_(t["b_hh"])
    assert torch.allclose(cell(t["x"].detach(), t["h"].detach()), ref.detach())
    return (ref,)


def lstm_cell_forward(inp, p, backend):
    (h, c), ws = nk.lstm_cell(inp["x"], (inp["h"], inp["c"]), inp["w_ih"], inp["w_hh"], inp.get("b_ih"),
                              inp.get("b_hh"), return_workspace=True, backend=backend)
    return (h, c), ws


def lstm_cell_backward(inp, p, outs, saved, grads, backend):
    return _cell_grads(inp, nk.lstm_cell_backward(grads[0], grads[1], saved),
                       ["x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh"])


def _batched(t):
    """torch's fused cell ops take batched inputs only: add the batch axis to an unbatched sample."""
    if t["x"].dim() == 2:
        return t, lambda a: a
    return {k: (v.unsqueeze(0) if k in ("x", "h", "c") else v) for k, v in t.items()}, lambda a: a.squeeze(0)


def lstm_cell_torch(torch, t, p):
    t, unb = _batched(t)
    h, c = torch._VF.lstm_cell(t["x"], (t["h"], t["c"]), t["w_ih"], t["w_hh"], t.get("b_ih"), t.get("b_hh"))
    return (unb(h), unb(c))


def gru_cell_forward(inp, p, backend):
    h, ws = nk.gru_cell(inp["x"], inp["h"], inp["w_ih"], inp["w_hh"], inp.get("b_ih"), inp.get("b_hh"),
                        return_workspace=True, backend=backend)
    return (h,), ws


def gru_cell_backward(inp, p, outs, saved, grads, backend):
    return _cell_grads(inp, nk.gru_cell_backward(grads[0], saved), ["x", "h", "w_ih", "w_hh", "b_ih", "b_hh"])


def gru_cell_torch(torch, t, p):
    t, unb = _batched(t)
    return (unb(torch._VF.gru_cell(t["x"], t["h"], t["w_ih"], t["w_hh"], t.get("b_ih"), t.get("b_hh"))),)


# ------------------------------------------------------------------------------------------------ sequences

_SEQ_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def seq_samples(rng, mode):
    gates = _SEQ_GATES[mode]
    S = []
    configs = [dict(T=5, N=3, I=4, H=3, L=1, bidir=False, bf=False, bias=True, h0=False, desc="1 layer"),
               dict(T=4, N=2, I=3, H=2, L=2, bidir=True, bf=False, bias=True, h0=True, desc="2 layers bidir h0"),
               dict(T=3, N=2, I=3, H=3, L=2, bidir=False, bf=True, bias=False, h0=True,
                    desc="batch_first no bias"),
               dict(T=1, N=1, I=2, H=2, L=1, bidir=True, bf=True, bias=True, h0=False, desc="T=1 N=1 bidir"),
               dict(T=6, N=2, I=3, H=2, L=3, bidir=False, bf=False, bias=True, h0=False, desc="3 layers"),
               dict(T=3, N=0, I=3, H=2, L=1, bidir=False, bf=False, bias=True, h0=False, desc="zero batch"),
               dict(T=4, N=3, I=3, H=2, L=2, bidir=True, bf=False, bias=True, h0=False, dropout=0.4,
                    desc="dropout training")]
    if mode == "rnn":
        configs.append(dict(T=4, N=2, I=3, H=3, L=2, bidir=True, bf=False, bias=True, h0=True,
                            nonlinearity="relu", desc="relu 2 layers bidir"))
    for cfg in configs:
        d = 2 if cfg["bidir"] else 1
        x = rand(rng, cfg["N"], cfg["T"], cfg["I"]) if cfg["bf"] else rand(rng, cfg["T"], cfg["N"], cfg["I"])
        if cfg["desc"] == "3 layers":
            x = transposed(x)  # non-contiguous
        inp = {"x": x}
        k = 0
        for layer in range(cfg["L"]):
            for _ in range(d):
                layer_in = cfg["I"] if layer == 0 else d * cfg["H"]
                inp[f"p{k}"] = rand(rng, gates * cfg["H"], layer_in, scale=0.5)
                inp[f"p{k + 1}"] = rand(rng, gates * cfg["H"], cfg["H"], scale=0.5)
                k += 2
                if cfg["bias"]:
                    inp[f"p{k}"] = rand(rng, gates * cfg["H"], scale=0.5)
                    inp[f"p{k + 1}"] = rand(rng, gates * cfg["H"], scale=0.5)
                    k += 2
        if cfg["h0"]:
            inp["h0"] = rand(rng, cfg["L"] * d, cfg["N"], cfg["H"]) * 0.5
            if mode == "lstm":
                inp["c0"] = rand(rng, cfg["L"] * d, cfg["N"], cfg["H"])
        params = dict(num_layers=cfg["L"], bidirectional=cfg["bidir"], batch_first=cfg["bf"],
                      has_biases=cfg["bias"], n_params=k, dropout=cfg.get("dropout", 0.0),
                      nonlinearity=cfg.get("nonlinearity", "tanh"))
        S.append(Sample(inp, params, cfg["desc"], torch_ok="dropout" not in cfg))
    return S


def _seq_kwargs(p):
    kw = dict(num_layers=p["num_layers"], bidirectional=p["bidirectional"], batch_first=p["batch_first"],
              has_biases=p["has_biases"], dropout=p["dropout"], training=p["dropout"] > 0, seed=5)
    return kw


def seq_ops(mode):
    def forward(inp, p, backend):
        params = [inp[f"p{k}"] for k in range(p["n_params"])]
        kw = _seq_kwargs(p)
        if mode == "lstm":
            hx = (inp["h0"], inp["c0"]) if "h0" in inp else None
            out, (h_n, c_n), ws = nk.lstm(inp["x"], hx, params, return_workspace=True, backend=backend, **kw)
            return (out, h_n, c_n), ws
        fn = nk.gru if mode == "gru" else nk.rnn
        if mode == "rnn":
            kw["nonlinearity"] = p["nonlinearity"]
        out, h_n, ws = fn(inp["x"], inp.get("h0"), params, return_workspace=True, backend=backend, **kw)
        return (out, h_n), ws

    def backward(inp, p, outs, saved, grads, backend):
        if mode == "lstm":
            g = nk.lstm_backward(grads[0], grads[1], grads[2], saved)
            gh0, gc0 = g.hx
        else:
            g = (nk.gru_backward if mode == "gru" else nk.rnn_backward)(grads[0], grads[1], saved)
            gh0, gc0 = g.hx, None
        res = {"x": g.input, **{f"p{k}": v for k, v in enumerate(g.params)}}
        if "h0" in inp:
            res["h0"] = gh0
        if "c0" in inp:
            res["c0"] = gc0
        return res

    def torch_forward(torch, t, p):
        cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[mode]
        extra = {"nonlinearity": p["nonlinearity"]} if mode == "rnn" else {}
        hidden = t["p1"].shape[1]
        m = cls(t["x"].shape[-1], hidden, num_layers=p["num_layers"], bias=p["has_biases"],
                batch_first=p["batch_first"], bidirectional=p["bidirectional"], **extra).to(t["x"].dtype)
        params = [t[f"p{k}"] for k in range(p["n_params"])]
        names = [n for n, _ in m.named_parameters()]
        hx = None
        if "h0" in t:
            hx = (t["h0"], t["c0"]) if mode == "lstm" else t["h0"]
        out, h = torch.func.functional_call(m, dict(zip(names, params)), (t["x"], hx))
        return (out, *h) if mode == "lstm" else (out, h)

    return forward, backward, torch_forward


# ------------------------------------------------------------------------------------------------ the registry

def _op(name, samples, fwd_bwd_torch, **kw):
    f, b, t = fwd_bwd_torch
    return OpInfo(name, samples, f, b, t, backward_op=kw.pop("backward_op", name + "_backward"), **kw)


def _make_registry() -> list[OpInfo]:
    ops = [
        _op("conv2d", conv2d_samples, (conv2d_forward, conv2d_backward, conv2d_torch)),
        _op("conv1d", conv1d_samples, (conv1d_forward, conv1d_backward, conv1d_torch)),
        _op("max_pool2d", lambda r: pool_samples(r, True), (max_pool_forward, max_pool_backward, max_pool_torch),
            differentiable_outputs=lambda s: [0]),
        _op("avg_pool2d", lambda r: pool_samples(r, False), (avg_pool_forward, avg_pool_backward, avg_pool_torch)),
        _op("adaptive_avg_pool2d", adaptive_samples, (adaptive_forward, adaptive_backward, adaptive_torch)),
        _op("batch_norm", bn_samples, (bn_forward, bn_backward, bn_torch), differentiable_outputs=lambda s: [0]),
        _op("linear", linear_samples, (linear_forward, linear_backward, linear_torch)),
        _op("relu", pointwise_samples, pointwise("relu")),
        _op("sigmoid", pointwise_samples, pointwise("sigmoid")),
        _op("tanh", pointwise_samples, pointwise("tanh")),
        _op("softmax", softmax_samples, softmax_like("softmax")),
        _op("log_softmax", softmax_samples, softmax_like("log_softmax")),
        _op("dropout", dropout_samples, (dropout_forward, dropout_backward, None)),
        _op("cross_entropy", ce_samples, (ce_forward, ce_backward, ce_torch)),
        _op("rnn_cell", lambda r: cell_samples(r, 1, [{"nonlinearity": "tanh"}, {"nonlinearity": "relu"}]),
            (rnn_cell_forward, rnn_cell_backward, rnn_cell_torch)),
        _op("lstm_cell", lambda r: cell_samples(r, 4), (lstm_cell_forward, lstm_cell_backward, lstm_cell_torch)),
        _op("gru_cell", lambda r: cell_samples(r, 3), (gru_cell_forward, gru_cell_backward, gru_cell_torch)),
        _op("lstm", lambda r: seq_samples(r, "lstm"), seq_ops("lstm"), rtol={np.float32: 1e-5, np.float64: 1e-12}),
        _op("gru", lambda r: seq_samples(r, "gru"), seq_ops("gru")),
        _op("rnn", lambda r: seq_samples(r, "rnn"), seq_ops("rnn")),
    ]
    return ops


OPS: list[OpInfo] = _make_registry()
OPS_BY_NAME = {op.name: op for op in OPS}
