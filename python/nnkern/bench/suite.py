"""The benchmark suite of ``shared/BENCH.md``: every row, defined once.

A row names its op, the shape it runs at (``dims``) and a reduced shape for
smoke runs (``smoke``), the targets, and a *builder*. A builder takes a seeded
``numpy.random.Generator`` and the dims and returns a :class:`Case`: the
shape text, the work per call (FLOPs or bytes) and one *factory* per
contender. A factory, called once by the runner, prepares that contender's
own state (PyTorch tensors, a private copy of anything the call updates in
place) and returns the zero-argument callable that is timed. The callable
returns its main result (the output, or the gradient of the input for
forward+backward rows, or the loss for a training step), which the runner
compares across contenders once, after the warm-up.

Contenders:

- ``nnkern``: the functional API with ``backend="auto"`` (native where the
  ``cpu`` backend has the op, the NumPy reference otherwise);
- ``numpy``: the same code inside ``nnkern.use_backend("numpy")``;
- ``torch``: ``torch.nn.functional`` / ``torch.nn`` on ``torch.from_numpy``
  views of the same data, under ``torch.no_grad()`` for forward rows and
  autograd for backward rows;
- ``torch_channels_last`` (max / average pooling and batch norm rows): the
  same PyTorch calls on channels_last copies of the 4-D inputs, PyTorch's
  fastest layout for these ops on the CPU. It is reported beside the table,
  not against the targets (they are set against NCHW PyTorch; issue 4 chose
  them so as to beat this layout too).

Work metrics: FLOP rows count 2 x multiply-adds over the full kernel window
(forward + grad input + grad weight = 3 x forward for backward rows; bias,
activation and gate arithmetic are not counted). Byte rows count each input
read once and each output written once (max-pool indices are int64).

Importing this module has no side effects: it imports neither PyTorch nor
the native module; nnkern ops are looked up only when a callable runs, so a
missing op fails that contender alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

import nnkern

Factory = Callable[[], Callable[[], Any]]

F32 = np.float32
F32_BYTES = 4
I64_BYTES = 8


@dataclass
class Case:
    """One row made concrete: what it runs and how much work one call does."""

    shape: str
    work: float
    factories: Dict[str, Factory]


@dataclass(frozen=True)
class Row:
    """A row of BENCH.md."""

    id: str
    op: str
    build: Callable[..., Case]
    dims: Dict[str, Any]
    smoke: Dict[str, Any]
    metric: str                         # "flop" (GFLOP/s vs the FMA peak) or "byte" (GB/s vs copy bandwidth)
    ops: Tuple[str, ...]                # nnkern ops the nnkern contender calls (to flag NumPy fallbacks)
    target_vs_torch: Optional[float] = None
    target_vs_numpy: Optional[float] = None
    target_peak: Optional[float] = None  # fraction of the FMA peak (M1)
    torch_ref_ms: Optional[float] = None  # BENCH.md's PyTorch median at 2 threads, for reference
    note: str = ""

    def case(self, *, smoke: bool = False, seed: int = 0) -> Case:
        dims = {**self.dims, **self.smoke} if smoke else dict(self.dims)
        return self.build(np.random.default_rng(seed), **dims)

    def target_text(self) -> str:
        if self.target_peak is not None:
            return f"≥{self.target_peak:.0%} pk"
        return "—" if self.target_vs_torch is None else f"≥{self.target_vs_torch:g}"


# ---------------------------------------------------------------------------------------------- helpers

def randn(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    """Float32 standard-normal data (times ``scale``)."""
    a = rng.standard_normal(shape, dtype=F32)
    if scale != 1.0:
        a *= F32(scale)
    return a


def uniform(rng: np.random.Generator, bound: float, *shape: int) -> np.ndarray:
    return rng.uniform(-bound, bound, shape).astype(F32)


def nbytes(*arrays_or_counts: Any) -> int:
    """Bytes of float32 arrays (or of element counts given as ints)."""
    total = 0
    for a in arrays_or_counts:
        total += a.nbytes if isinstance(a, np.ndarray) else int(a) * F32_BYTES
    return total


def on_numpy(factory: Factory) -> Factory:
    """The same contender with every nnkern op on the NumPy reference backend."""
    def make():
        fn = factory()

        def call():
            with nnkern.use_backend("numpy"):
                return fn()
        return call
    return make


def nnkern_and_numpy(factory: Factory) -> Dict[str, Factory]:
    return {"nnkern": factory, "numpy": on_numpy(factory)}


def _torch():
    import torch
    return torch


def t_(a: np.ndarray, grad: bool = False, channels_last: bool = False):
    """A torch tensor sharing ``a``'s memory; or, with ``channels_last`` (4-D arrays), a copy of it in
    that memory format (the same values and shape, NHWC strides)."""
    t = _torch().from_numpy(a)
    if channels_last and t.dim() == 4:
        t = t.contiguous(memory_format=_torch().channels_last)
    return t.requires_grad_() if grad else t


def torch_forward(op: str, x: np.ndarray, *args: Any) -> Callable[[bool], Factory]:
    """For :func:`torch_layouts`: ``torch.nn.functional.<op>(x, *args)`` under ``no_grad``, on ``x`` as it
    is (False) or on a channels_last copy of it (True)."""
    def torch_factory(cl: bool) -> Factory:
        def make_torch():
            fn = getattr(_torch().nn.functional, op)
            tx = t_(x, channels_last=cl)

            def call():
                with _torch().no_grad():
                    return fn(tx, *args)
            return call
        return make_torch
    return torch_factory


def torch_layouts(factory: Callable[[bool], Factory]) -> Dict[str, Factory]:
    """PyTorch on NCHW tensors (``torch``, the peer of the targets) and on channels_last copies
    (``torch_channels_last``: issue 4 set the pooling and batch-norm targets so as to beat PyTorch's
    best layout, and on this layout PyTorch's CPU kernels are its fastest there)."""
    return {"torch": factory(False), "torch_channels_last": factory(True)}


def out_size(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


# ---------------------------------------------------------------------------------------------- builders

def conv(rng, *, n: int, c: int, o: int, hw: int, k: int, s: int = 1, p: int = 0, g: int = 1,
         backward: bool = False) -> Case:
    """conv2d with bias (forward, or forward + grad input, weight and bias)."""
    x = randn(rng, n, c, hw, hw)
    w = randn(rng, o, c // g, k, k, scale=1 / math.sqrt(c // g * k * k))
    b = randn(rng, o)
    oh = out_size(hw, k, s, p)
    gy = randn(rng, n, o, oh, oh)
    macs = n * o * oh * oh * (c // g) * k * k
    shape = f"N={n}, {c}→{o}, {hw}x{hw}" + (f", groups={g}" if g > 1 else "")

    if not backward:
        def make():
            return lambda: nnkern.conv2d(x, w, b, s, p, 1, g)

        def make_torch():
            F = _torch().nn.functional
            tx, tw, tb = t_(x), t_(w), t_(b)

            def call():
                with _torch().no_grad():
                    return F.conv2d(tx, tw, tb, s, p, 1, g)
            return call
    else:
        def make():
            def call():
                nnkern.conv2d(x, w, b, s, p, 1, g)
                return nnkern.conv2d_backward(gy, x, w, s, p, 1, g, output_mask=(True, True, True))
            return call

        def make_torch():
            torch = _torch()
            tx, tw, tb, tgy = t_(x, True), t_(w, True), t_(b, True), t_(gy)

            def call():
                y = torch.nn.functional.conv2d(tx, tw, tb, s, p, 1, g)
                return torch.autograd.grad(y, (tx, tw, tb), tgy)
            return call
    return Case(shape, 2 * macs * (3 if backward else 1), {**nnkern_and_numpy(make), "torch": make_torch})


def max_pool(rng, *, n: int, c: int, hw: int, k: int, s: int, p: int, backward: bool = False) -> Case:
    x = randn(rng, n, c, hw, hw)
    oh = out_size(hw, k, s, p)
    gy = randn(rng, n, c, oh, oh)
    n_in, n_out = x.size, gy.size
    if not backward:
        work = nbytes(n_in, n_out)

        def make():
            return lambda: nnkern.max_pool2d(x, k, s, p)

        torch_factory = torch_forward("max_pool2d", x, k, s, p)
    else:
        # forward: x, out, indices; backward: grad_out, indices, grad_in
        work = nbytes(n_in, n_out, n_out, n_in) + 2 * n_out * I64_BYTES

        def make():
            def call():
                _, idx = nnkern.max_pool2d(x, k, s, p, return_indices=True)
                return nnkern.max_pool2d_backward(gy, x, idx, k, s, p, 1, False)
            return call

        def torch_factory(cl: bool) -> Factory:
            def make_torch():
                torch = _torch()
                tx, tgy = t_(x, True, cl), t_(gy, channels_last=cl)

                def call():
                    y = torch.nn.functional.max_pool2d(tx, k, s, p)
                    return torch.autograd.grad(y, (tx,), tgy)
                return call
            return make_torch
    return Case(f"N={n}, C={c}, {hw}x{hw}", work, {**nnkern_and_numpy(make), **torch_layouts(torch_factory)})


def avg_pool(rng, *, n: int, c: int, hw: int, k: int, s: int) -> Case:
    x = randn(rng, n, c, hw, hw)
    oh = out_size(hw, k, s, 0)

    def make():
        return lambda: nnkern.avg_pool2d(x, k, s)

    return Case(f"N={n}, C={c}, {hw}x{hw}", nbytes(x.size, n * c * oh * oh),
                {**nnkern_and_numpy(make), **torch_layouts(torch_forward("avg_pool2d", x, k, s))})


def global_avg_pool(rng, *, n: int, c: int, hw: int) -> Case:
    x = randn(rng, n, c, hw, hw)

    def make():
        return lambda: nnkern.adaptive_avg_pool2d(x, 1)

    def make_torch():
        F = _torch().nn.functional
        tx = t_(x)

        def call():
            with _torch().no_grad():
                return F.adaptive_avg_pool2d(tx, 1)
        return call
    return Case(f"N={n}, C={c}, {hw}x{hw}", nbytes(x.size, n * c), {**nnkern_and_numpy(make), "torch": make_torch})


def batch_norm(rng, *, n: int, c: int, hw: int, training: bool, backward: bool = False) -> Case:
    """batch_norm with affine weight/bias and running statistics (each contender updates its own copy)."""
    x = randn(rng, n, c, hw, hw)
    w, b = 1 + randn(rng, c, scale=0.1), randn(rng, c, scale=0.1)
    rm, rv = randn(rng, c, scale=0.1), rng.uniform(0.5, 1.5, c).astype(F32)
    gy = randn(rng, n, c, hw, hw)
    # forward: x read, out written; backward: grad_out and x read, grad_in written
    work = nbytes(x, x) + (nbytes(gy, x, x) if backward else 0)

    if not backward:
        def make():
            mean, var = rm.copy(), rv.copy()
            return lambda: nnkern.batch_norm(x, mean, var, w, b, training=training)

        def torch_factory(cl: bool) -> Factory:
            def make_torch():
                F = _torch().nn.functional
                tx, tw, tb, tm, tv = t_(x, channels_last=cl), t_(w), t_(b), t_(rm.copy()), t_(rv.copy())

                def call():
                    with _torch().no_grad():
                        return F.batch_norm(tx, tm, tv, tw, tb, training=training)
                return call
            return make_torch
    else:
        def make():
            mean, var = rm.copy(), rv.copy()

            def call():
                _, bmean, invstd = nnkern.batch_norm(x, mean, var, w, b, training=True, return_stats=True)
                return nnkern.batch_norm_backward(gy, x, w, bmean, invstd, training=True)
            return call

        def torch_factory(cl: bool) -> Factory:
            def make_torch():
                torch = _torch()
                tx, tw, tb, tgy = t_(x, True, cl), t_(w, True), t_(b, True), t_(gy, channels_last=cl)
                tm, tv = t_(rm.copy()), t_(rv.copy())

                def call():
                    y = torch.nn.functional.batch_norm(tx, tm, tv, tw, tb, training=True)
                    return torch.autograd.grad(y, (tx, tw, tb), tgy)
                return call
            return make_torch
    return Case(f"N={n}, C={c}, {hw}x{hw}", work, {**nnkern_and_numpy(make), **torch_layouts(torch_factory)})


def rnn_params(rng, gates: int, inp: int, hidden: int, layers: int, dirs: int) -> list:
    """PyTorch's ``_flat_weights`` order and default init: U(-1/sqrt(hidden), 1/sqrt(hidden))."""
    bound = 1 / math.sqrt(hidden)
    params = []
    for layer in range(layers):
        layer_in = inp if layer == 0 else dirs * hidden
        for _ in range(dirs):
            params += [uniform(rng, bound, gates * hidden, layer_in), uniform(rng, bound, gates * hidden, hidden),
                       uniform(rng, bound, gates * hidden), uniform(rng, bound, gates * hidden)]
    return params


def recurrent(rng, *, mode: str, t: int, n: int, inp: int, hidden: int, layers: int = 1,
              bidirectional: bool = False, backward: bool = False) -> Case:
    """A whole LSTM or GRU sequence, no initial state (forward, or forward + backward through time)."""
    gates = {"lstm": 4, "gru": 3}[mode]
    dirs = 2 if bidirectional else 1
    params = rnn_params(rng, gates, inp, hidden, layers, dirs)
    x = randn(rng, t, n, inp)
    gy = randn(rng, t, n, dirs * hidden)
    macs = sum(dirs * t * n * gates * hidden * ((inp if layer == 0 else dirs * hidden) + hidden)
               for layer in range(layers))
    kw = dict(num_layers=layers, bidirectional=bidirectional)

    if not backward:
        def make():
            return lambda: getattr(nnkern, mode)(x, None, params, **kw)[0]
    elif mode == "lstm":
        def make():
            def call():
                _, _, ws = nnkern.lstm(x, None, params, return_workspace=True, **kw)
                return nnkern.lstm_backward(gy, None, None, ws)[0]
            return call
    else:
        def make():
            def call():
                _, _, ws = nnkern.gru(x, None, params, return_workspace=True, **kw)
                return nnkern.gru_backward(gy, None, ws)[0]
            return call

    def make_torch():
        torch = _torch()
        module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[mode](inp, hidden, **kw)
        with torch.no_grad():
            for name, a in zip(module._flat_weights_names, params):
                getattr(module, name).copy_(torch.from_numpy(a))
        if not backward:
            tx = t_(x)

            def call():
                with torch.no_grad():
                    return module(tx)[0]
            return call
        tx, tgy = t_(x, True), t_(gy)
        weights = list(module.parameters())

        def call():
            y = module(tx)[0]
            return torch.autograd.grad(y, [tx, *weights], tgy)
        return call

    shape = f"T={t}, N={n}, in={inp}, hidden={hidden}"
    if layers > 1 or bidirectional:
        shape += f", layers={layers}" + (", bidirectional" if bidirectional else "")
    return Case(shape, 2 * macs * (3 if backward else 1), {**nnkern_and_numpy(make), "torch": make_torch})


def gemm(rng, *, m: int, k: int, n: int) -> Case:
    """C = A B. nnkern: ``linear(A, B_T)`` (= A @ B_T.T, B_T = B.T made contiguous once); numpy: ``A @ B``."""
    a, b = randn(rng, m, k), randn(rng, k, n)
    b_t = np.ascontiguousarray(b.T)

    def make():
        return lambda: nnkern.linear(a, b_t)

    def make_numpy():
        return lambda: a @ b

    def make_torch():
        torch = _torch()
        ta, tb = t_(a), t_(b)

        def call():
            with torch.no_grad():
                return torch.mm(ta, tb)
        return call
    return Case(f"{m} x {k} x {n}", 2 * m * k * n, {"nnkern": make, "numpy": make_numpy, "torch": make_torch})


LENET = (("conv", 1, 6, 5), ("conv", 6, 16, 5), ("fc", 400, 120), ("fc", 120, 84), ("fc", 84, 10))


def lenet_step(rng, *, batch: int, lr: float = 0.01) -> Case:
    """LeNet-5 (ReLU, 2x2 max-pool): forward, cross-entropy, backward, plain SGD update in place.

    conv 1→6 5x5, relu, pool → conv 6→16 5x5, relu, pool → fc 400→120, relu → fc 120→84, relu → fc 84→10.
    The SGD update (``p -= lr * g``) is NumPy arithmetic for nnkern and numpy alike. nnkern applies each
    convolution's ReLU in the pass that writes it (``conv2d(..., activation="relu")``, as a user of the
    API would); torch runs ``nn.Conv2d`` then ``nn.ReLU``.
    """
    x = randn(rng, batch, 1, 32, 32)
    target = rng.integers(0, 10, batch).astype(np.int64)
    init = []
    for spec in LENET:
        fan_in = spec[1] * spec[3] ** 2 if spec[0] == "conv" else spec[1]
        bound = 1 / math.sqrt(fan_in)
        wshape = (spec[2], spec[1], spec[3], spec[3]) if spec[0] == "conv" else (spec[2], spec[1])
        init += [uniform(rng, bound, *wshape), uniform(rng, bound, spec[2])]
    # 2 x multiply-adds: conv1 forward + grad weight (no grad of the image), the others x3
    conv1 = batch * 6 * 28 * 28 * 25
    conv2 = batch * 16 * 10 * 10 * 150
    fcs = batch * (400 * 120 + 120 * 84 + 84 * 10)
    work = 2 * (2 * conv1 + 3 * (conv2 + fcs))
    one = np.ones((), F32)

    def make():
        w1, b1, w2, b2, f1, c1, f2, c2, f3, c3 = params = [p.copy() for p in init]

        def call():
            y1 = nnkern.conv2d(x, w1, b1, activation="relu")
            p1, i1 = nnkern.max_pool2d(y1, 2, return_indices=True)
            y2 = nnkern.conv2d(p1, w2, b2, activation="relu")
            p2, i2 = nnkern.max_pool2d(y2, 2, return_indices=True)
            flat = p2.reshape(batch, 400)
            h1 = nnkern.relu(nnkern.linear(flat, f1, c1))
            h2 = nnkern.relu(nnkern.linear(h1, f2, c2))
            logits = nnkern.linear(h2, f3, c3)
            loss = nnkern.cross_entropy(logits, target)

            g = nnkern.cross_entropy_backward(one, logits, target)
            g, gf3, gc3 = nnkern.linear_backward(g, h2, f3)
            g, gf2, gc2 = nnkern.linear_backward(nnkern.relu_backward(g, h2), h1, f2)
            g, gf1, gc1 = nnkern.linear_backward(nnkern.relu_backward(g, h1), flat, f1)
            g = nnkern.max_pool2d_backward(g.reshape(p2.shape), y2, i2, 2, 2, 0, 1, False)
            g, gw2, gb2 = nnkern.conv2d_backward(nnkern.relu_backward(g, y2), p1, w2, 1, 0, 1, 1,
                                                 output_mask=(True, True, True))
            g = nnkern.max_pool2d_backward(g, y1, i1, 2, 2, 0, 1, False)
            _, gw1, gb1 = nnkern.conv2d_backward(nnkern.relu_backward(g, y1), x, w1, 1, 0, 1, 1,
                                                 output_mask=(False, True, True))
            for p, gp in zip(params, (gw1, gb1, gw2, gb2, gf1, gc1, gf2, gc2, gf3, gc3)):
                p -= F32(lr) * gp
            return loss
        return call

    def make_torch():
        torch = _torch()
        nn = torch.nn
        model = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84),
                              nn.ReLU(), nn.Linear(84, 10))
        with torch.no_grad():
            for p, a in zip(model.parameters(), init):
                p.copy_(torch.from_numpy(a))
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        tx, tt = t_(x), t_(target)

        def call():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(tx), tt)
            loss.backward()
            opt.step()
            return loss
        return call
    return Case(f"batch {batch}, 1x32x32", work, {**nnkern_and_numpy(make), "torch": make_torch})


def resnet_block(rng, *, n: int, c: int, hw: int) -> Case:
    """ResNet basic block, inference: conv3x3-BN-ReLU-conv3x3-BN, + x, ReLU (no conv bias, BN in eval).

    BN is not folded into the convolutions, so conv2d's fused ``activation``/``residual`` do not apply;
    nnkern uses batch_norm's fused forms instead (``activation="relu"``, and ``residual=x`` for the
    skip: what the layer API's ResNet block calls), torch its in-place ``relu_`` and ``+=``.
    """
    x = randn(rng, n, c, hw, hw)
    w1, w2 = (randn(rng, c, c, 3, 3, scale=1 / math.sqrt(9 * c)) for _ in range(2))
    bn = [(randn(rng, c, scale=0.1), rng.uniform(0.5, 1.5, c).astype(F32), 1 + randn(rng, c, scale=0.1),
           randn(rng, c, scale=0.1)) for _ in range(2)]
    work = 2 * 2 * n * c * c * hw * hw * 9

    def make():
        (m1, v1, g1, b1), (m2, v2, g2, b2) = bn

        def call():
            y = nnkern.batch_norm(nnkern.conv2d(x, w1, None, 1, 1), m1, v1, g1, b1, training=False,
                                  activation="relu")
            return nnkern.batch_norm(nnkern.conv2d(y, w2, None, 1, 1), m2, v2, g2, b2, training=False,
                                     activation="relu", residual=x)
        return call

    def make_torch():
        torch = _torch()
        F = torch.nn.functional
        tx, tw1, tw2 = t_(x), t_(w1), t_(w2)
        (m1, v1, g1, b1), (m2, v2, g2, b2) = [[t_(a) for a in p] for p in bn]

        def call():
            with torch.no_grad():
                y = F.relu_(F.batch_norm(F.conv2d(tx, tw1, None, 1, 1), m1, v1, g1, b1, training=False))
                y = F.batch_norm(F.conv2d(y, tw2, None, 1, 1), m2, v2, g2, b2, training=False)
                y += tx
                return F.relu_(y)
        return call
    return Case(f"N={n}, {c}, {hw}x{hw}", work, {**nnkern_and_numpy(make), "torch": make_torch})


# ---------------------------------------------------------------------------------------------- the table

def _row(id_: str, op: str, build, dims: dict, smoke: dict, metric: str, ops: Sequence[str], **kw) -> Row:
    return Row(id_, op, build, dims, smoke, metric, tuple(ops), **kw)


_CONV = ("conv2d",)
_CONV_B = ("conv2d", "conv2d_backward")
_LENET_OPS = ("conv2d", "conv2d_backward", "relu", "relu_backward", "max_pool2d", "max_pool2d_backward", "linear",
              "linear_backward", "cross_entropy", "cross_entropy_backward")

ROWS: Tuple[Row, ...] = (
    _row("C1", "conv2d 3x3 s1 p1", conv, dict(n=8, c=64, o=64, hw=56, k=3, s=1, p=1), dict(n=1, c=8, o=8, hw=12),
         "flop", _CONV, target_vs_torch=1.5, target_vs_numpy=5, torch_ref_ms=9.9),
    _row("C2", "conv2d 1x1", conv, dict(n=8, c=256, o=64, hw=56, k=1), dict(n=1, c=16, o=8, hw=12),
         "flop", _CONV, target_vs_torch=1.7, target_vs_numpy=5, torch_ref_ms=8.2),
    _row("C3", "conv2d 7x7 s2 p3 (stem)", conv, dict(n=8, c=3, o=64, hw=224, k=7, s=2, p=3),
         dict(n=1, o=8, hw=24), "flop", _CONV, target_vs_torch=1.1, target_vs_numpy=5, torch_ref_ms=11.5),
    _row("C4", "conv2d 3x3 s2 p1", conv, dict(n=8, c=128, o=256, hw=28, k=3, s=2, p=1),
         dict(n=1, c=8, o=16, hw=10), "flop", _CONV, target_vs_torch=1.25, target_vs_numpy=5, torch_ref_ms=6.6),
    _row("C5", "depthwise conv2d 3x3 p1", conv, dict(n=8, c=128, o=128, hw=56, k=3, p=1, g=128),
         dict(n=1, c=8, o=8, g=8, hw=12), "flop", _CONV, target_vs_torch=2.5, target_vs_numpy=5,
         torch_ref_ms=3.0, note="memory-bound"),
    _row("C6", "conv2d 5x5 (LeNet)", conv, dict(n=64, c=1, o=6, hw=32, k=5), dict(n=2, hw=12),
         "flop", _CONV, target_vs_torch=2, target_vs_numpy=5, torch_ref_ms=0.42),
    _row("C7", "conv2d 3x3 p1", conv, dict(n=8, c=512, o=512, hw=7, k=3, p=1), dict(n=1, c=16, o=16),
         "flop", _CONV, target_vs_torch=1.3, target_vs_numpy=5, torch_ref_ms=8.9),
    _row("C1b", "conv2d 3x3 s1 p1 fwd+bwd", conv, dict(n=8, c=64, o=64, hw=56, k=3, s=1, p=1, backward=True),
         dict(n=1, c=8, o=8, hw=12), "flop", _CONV_B, target_vs_torch=1.3, target_vs_numpy=5, torch_ref_ms=31.3),
    _row("C5b", "depthwise conv2d 3x3 p1 fwd+bwd", conv,
         dict(n=8, c=128, o=128, hw=56, k=3, p=1, g=128, backward=True), dict(n=1, c=8, o=8, g=8, hw=12),
         "flop", _CONV_B, target_vs_torch=3, target_vs_numpy=5, torch_ref_ms=10.7),
    _row("P1", "max_pool2d 3x3 s2 p1", max_pool, dict(n=8, c=64, hw=112, k=3, s=2, p=1), dict(n=1, c=4, hw=16),
         "byte", ("max_pool2d",), target_vs_torch=16, target_vs_numpy=10, torch_ref_ms=28.2),
    _row("P1b", "max_pool2d 3x3 s2 p1 fwd+bwd", max_pool, dict(n=8, c=64, hw=112, k=3, s=2, p=1, backward=True),
         dict(n=1, c=4, hw=16), "byte", ("max_pool2d", "max_pool2d_backward"), target_vs_torch=10,
         target_vs_numpy=10, torch_ref_ms=32.2),
    _row("P2", "avg_pool2d 2x2 s2", avg_pool, dict(n=8, c=64, hw=56, k=2, s=2), dict(n=1, c=4, hw=16),
         "byte", ("avg_pool2d",), target_vs_torch=14, target_vs_numpy=10, torch_ref_ms=2.57),
    _row("P3", "global average pool", global_avg_pool, dict(n=8, c=2048, hw=7), dict(n=1, c=16),
         "byte", ("adaptive_avg_pool2d",), target_vs_torch=1.5, target_vs_numpy=10, torch_ref_ms=0.084),
    _row("B1", "batch_norm training", batch_norm, dict(n=8, c=64, hw=112, training=True), dict(n=2, c=4, hw=8),
         "byte", ("batch_norm",), target_vs_torch=3, target_vs_numpy=3, torch_ref_ms=7.6),
    _row("B1b", "batch_norm training fwd+bwd", batch_norm, dict(n=8, c=64, hw=112, training=True, backward=True),
         dict(n=2, c=4, hw=8), "byte", ("batch_norm", "batch_norm_backward"), target_vs_torch=2,
         target_vs_numpy=3, torch_ref_ms=11.1),
    _row("B2", "batch_norm inference", batch_norm, dict(n=8, c=64, hw=112, training=False), dict(n=2, c=4, hw=8),
         "byte", ("batch_norm",), target_vs_torch=1.2, target_vs_numpy=3, torch_ref_ms=1.37),
    _row("L1", "LSTM 1 layer", recurrent, dict(mode="lstm", t=100, n=32, inp=256, hidden=256),
         dict(t=5, n=2, inp=8, hidden=8), "flop", ("lstm",), target_vs_torch=1.15, target_vs_numpy=2,
         torch_ref_ms=19.1),
    _row("L1b", "LSTM 1 layer fwd+bwd", recurrent, dict(mode="lstm", t=100, n=32, inp=256, hidden=256, backward=True),
         dict(t=5, n=2, inp=8, hidden=8), "flop", ("lstm", "lstm_backward"), target_vs_torch=1.3,
         target_vs_numpy=2, torch_ref_ms=62.5),
    _row("L2", "LSTM, latency", recurrent, dict(mode="lstm", t=50, n=1, inp=64, hidden=64),
         dict(t=5, inp=8, hidden=8), "flop", ("lstm",), target_vs_torch=4, target_vs_numpy=2, torch_ref_ms=0.30),
    _row("L3", "LSTM 2 layers, bidirectional", recurrent,
         dict(mode="lstm", t=50, n=16, inp=128, hidden=128, layers=2, bidirectional=True),
         dict(t=5, n=2, inp=8, hidden=8), "flop", ("lstm",), target_vs_torch=1.4, target_vs_numpy=2,
         torch_ref_ms=8.3),
    _row("G1", "GRU 1 layer", recurrent, dict(mode="gru", t=100, n=32, inp=256, hidden=256),
         dict(t=5, n=2, inp=8, hidden=8), "flop", ("gru",), target_vs_torch=2.2, target_vs_numpy=2,
         torch_ref_ms=31.2),
    _row("G1b", "GRU 1 layer fwd+bwd", recurrent, dict(mode="gru", t=100, n=32, inp=256, hidden=256, backward=True),
         dict(t=5, n=2, inp=8, hidden=8), "flop", ("gru", "gru_backward"), target_vs_torch=2, target_vs_numpy=2,
         torch_ref_ms=85.3),
    _row("G2", "GRU, latency", recurrent, dict(mode="gru", t=50, n=1, inp=64, hidden=64),
         dict(t=5, inp=8, hidden=8), "flop", ("gru",), target_vs_torch=10, target_vs_numpy=2, torch_ref_ms=1.2),
    _row("E1", "LeNet-5 training step", lenet_step, dict(batch=64), dict(batch=4), "flop", _LENET_OPS,
         target_vs_torch=2, torch_ref_ms=5.6),
    _row("E2", "ResNet basic block inference", resnet_block, dict(n=8, c=64, hw=56), dict(n=1, c=8, hw=8),
         "flop", ("conv2d", "batch_norm", "relu"), target_vs_torch=1.4, torch_ref_ms=20.2),
    _row("M1", "GEMM (nnkern: linear(A, B_T))", gemm, dict(m=1024, k=1024, n=1024), dict(m=32, k=48, n=40),
         "flop", ("linear",), target_peak=0.85, torch_ref_ms=14.2),
)

BY_ID: Dict[str, Row] = {r.id.lower(): r for r in ROWS}
QUICK = ("C1", "C2", "C5", "P1", "B1", "L2", "G2", "M1")


def select(ids: Optional[Sequence[str]]) -> Tuple[Row, ...]:
    """Rows by id (case-insensitive), in the given order; ``None`` means every row."""
    if ids is None:
        return ROWS
    unknown = [i for i in ids if i.lower() not in BY_ID]
    if unknown:
        raise ValueError(f"unknown row id(s): {', '.join(unknown)}; valid ids: {', '.join(r.id for r in ROWS)}")
    seen: dict = {}
    for i in ids:
        seen.setdefault(i.lower(), BY_ID[i.lower()])
    return tuple(seen.values())
