"""RNN / LSTM / GRU cells and whole sequences, forward and backward: validation and dispatch.

The forward, given ``return_workspace=True``, also returns a
:class:`Workspace`: an opaque record of what its backend saved (gate
activations, states, dropout masks). The matching ``*_backward`` takes it
and is run by the same backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, NamedTuple, Optional, Sequence

import numpy as np

from .. import backends
from .._arrays import check_float, is_device_array
from . import _common as c
from .basic import seed_arg

_GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


@dataclass(frozen=True)
class Workspace:
    """What a recurrent forward saved for its backward (opaque; pass it back unchanged)."""

    op: str
    backend: str
    data: Any = field(repr=False)
    meta: dict = field(default_factory=dict, repr=False)


class CellGrads(NamedTuple):
    """Gradients of an RNN or GRU cell."""

    input: Any
    hidden: Any
    weight_ih: Any
    weight_hh: Any
    bias_ih: Any
    bias_hh: Any


class LSTMCellGrads(NamedTuple):
    """Gradients of an LSTM cell."""

    input: Any
    hidden: Any
    cell: Any
    weight_ih: Any
    weight_hh: Any
    bias_ih: Any
    bias_hh: Any


class SequenceGrads(NamedTuple):
    """Gradients of a whole-sequence RNN: ``hx`` is ``(grad_h0, grad_c0)`` for LSTM, else ``grad_h0``;
    ``params`` is in the order of the forward's ``params``."""

    input: Any
    hx: Any
    params: List[Any]


def _zeros_like_state(x: Any, shape: tuple) -> Any:
    if is_device_array(x):
        import cupy
        return cupy.zeros(shape, dtype=x.dtype)
    return np.zeros(shape, dtype=x.dtype)


def _workspace(op: str, backend: str, data: Any, **meta: Any) -> Workspace:
    return Workspace(op=op, backend=backend, data=data, meta=meta)


def _check_workspace(op: str, ws: Any, forward: str) -> Workspace:
    if not isinstance(ws, Workspace) or ws.op != forward:
        raise TypeError(f"{op}: workspace must be the Workspace returned by {forward}(..., return_workspace=True), "
                        f"got {type(ws).__name__}{'' if not isinstance(ws, Workspace) else ' of ' + ws.op}")
    return ws


# ---------------------------------------------------------------------------------------------- cells

def _cell_args(op: str, gates: int, x: Any, states: Sequence[Any], w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any):
    """Validate a cell call; return (x, states, w_ih, w_hh, b_ih, b_hh, unbatched, on_device)."""
    named = {"input": x, "w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}
    names = ["h", "c"][: len(states)]
    named.update({n: s for n, s in zip(names, states)})
    a, on_device = c.float_arrays(op, **named)
    x, w_ih, w_hh, b_ih, b_hh = a["input"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"]
    if x.ndim not in (1, 2):
        raise ValueError(f"{op}: input must be 2-D (N, input_size) or 1-D (input_size,), got shape {tuple(x.shape)}")
    unbatched = x.ndim == 1
    if unbatched:
        x = x[None]
    c.rank(op, "w_hh", w_hh, (2,), f"({gates}*hidden_size, hidden_size)")
    hidden = int(w_hh.shape[1])
    c.shape(op, "w_hh", w_hh, (gates * hidden, hidden))
    c.shape(op, "w_ih", w_ih, (gates * hidden, int(x.shape[1])))
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is not None:
            c.shape(op, name, b, (gates * hidden,))
    if (b_ih is None) != (b_hh is None):
        raise ValueError(f"{op}: b_ih and b_hh must both be given or both be None")
    out_states = []
    for n in names:
        s = a[n]
        if s is None:
            s = _zeros_like_state(x, (int(x.shape[0]), hidden))
        else:
            s = s[None] if unbatched and s.ndim == 1 else s
            c.shape(op, n, s, (int(x.shape[0]), hidden))
        out_states.append(s)
    return x, out_states, w_ih, w_hh, b_ih, b_hh, unbatched, on_device


def _squeeze(arr: Any, unbatched: bool) -> Any:
    return arr[0] if unbatched and arr is not None else arr


def rnn_cell(x: Any, h: Any, w_ih: Any, w_hh: Any, b_ih: Any = None, b_hh: Any = None,
             nonlinearity: str = "tanh", *, return_workspace: bool = False, backend: Optional[str] = None) -> Any:
    """One Elman RNN step: ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``, act = tanh or relu.

    ``h`` may be None (zeros). ``return_workspace=True`` returns ``(h', workspace)``.
    """
    op = "rnn_cell"
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"{op}: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    x, (h,), w_ih, w_hh, b_ih, b_hh, unb, dev = _cell_args(op, 1, x, [h], w_ih, w_hh, b_ih, b_hh)
    name, be = c.dispatch_named(op, backend, dev)
    h_new, ws = be.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
    h_new = _squeeze(h_new, unb)
    return (h_new, _workspace(op, name, ws, unbatched=unb)) if return_workspace else h_new


def lstm_cell(x: Any, hx: Any, w_ih: Any, w_hh: Any, b_ih: Any = None, b_hh: Any = None, *,
              return_workspace: bool = False, backend: Optional[str] = None) -> Any:
    """One LSTM step with gates i, f, g, o (PyTorch's order); ``hx = (h, c)`` or None.

    Returns ``(h', c')``, and the workspace with ``return_workspace=True``.
    """
    op = "lstm_cell"
    if hx is None:
        hx = (None, None)
    if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
        raise TypeError(f"{op}: hx must be None or a pair (h, c), got {type(hx).__name__}")
    x, (h, cs), w_ih, w_hh, b_ih, b_hh, unb, dev = _cell_args(op, 4, x, list(hx), w_ih, w_hh, b_ih, b_hh)
    name, be = c.dispatch_named(op, backend, dev)
    h_new, c_new, ws = be.lstm_cell(x, h, cs, w_ih, w_hh, b_ih, b_hh)
    result = (_squeeze(h_new, unb), _squeeze(c_new, unb))
    return (result, _workspace(op, name, ws, unbatched=unb)) if return_workspace else result


def gru_cell(x: Any, h: Any, w_ih: Any, w_hh: Any, b_ih: Any = None, b_hh: Any = None, *,
             return_workspace: bool = False, backend: Optional[str] = None) -> Any:
    """One GRU step with gates r, z, n; r multiplies ``(W_hn h + b_hn)`` as in PyTorch and cuDNN."""
    op = "gru_cell"
    x, (h,), w_ih, w_hh, b_ih, b_hh, unb, dev = _cell_args(op, 3, x, [h], w_ih, w_hh, b_ih, b_hh)
    name, be = c.dispatch_named(op, backend, dev)
    h_new, ws = be.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    h_new = _squeeze(h_new, unb)
    return (h_new, _workspace(op, name, ws, unbatched=unb)) if return_workspace else h_new


def _grad_state(op: str, name: str, g: Any, ws: Workspace) -> Any:
    if g is None:
        return None
    g = c.arrays(op, **{name: g})[name]
    check_float({name: g}, op)
    return g[None] if ws.meta["unbatched"] and g.ndim == 1 else g


def rnn_cell_backward(grad_h: Any, workspace: Workspace) -> CellGrads:
    """Gradients of :func:`rnn_cell` given the gradient of ``h'``."""
    op = "rnn_cell_backward"
    ws = _check_workspace(op, workspace, "rnn_cell")
    g = _grad_state(op, "grad_h", grad_h, ws)
    grads = backends.get(ws.backend).rnn_cell_backward(g, ws.data)
    unb = ws.meta["unbatched"]
    return CellGrads(_squeeze(grads[0], unb), _squeeze(grads[1], unb), *grads[2:])


def gru_cell_backward(grad_h: Any, workspace: Workspace) -> CellGrads:
    """Gradients of :func:`gru_cell` given the gradient of ``h'``."""
    op = "gru_cell_backward"
    ws = _check_workspace(op, workspace, "gru_cell")
    g = _grad_state(op, "grad_h", grad_h, ws)
    grads = backends.get(ws.backend).gru_cell_backward(g, ws.data)
    unb = ws.meta["unbatched"]
    return CellGrads(_squeeze(grads[0], unb), _squeeze(grads[1], unb), *grads[2:])


def lstm_cell_backward(grad_h: Any, grad_c: Any, workspace: Workspace) -> LSTMCellGrads:
    """Gradients of :func:`lstm_cell` given the gradients of ``h'`` and ``c'`` (either may be None)."""
    op = "lstm_cell_backward"
    ws = _check_workspace(op, workspace, "lstm_cell")
    gh = _grad_state(op, "grad_h", grad_h, ws)
    gc = _grad_state(op, "grad_c", grad_c, ws)
    grads = backends.get(ws.backend).lstm_cell_backward(gh, gc, ws.data)
    unb = ws.meta["unbatched"]
    return LSTMCellGrads(_squeeze(grads[0], unb), _squeeze(grads[1], unb), _squeeze(grads[2], unb), *grads[3:])


# ------------------------------------------------------------------------------------------ sequences

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def _seq_args_fast(mode: str, x: Any, hx: Any, params: Any, num_layers: Any, bidirectional: bool, dropout: Any,
                   has_biases: bool):
    """:func:`_seq_args` for the common call, checked without building a message: host NumPy arrays (not
    subclasses) of one float dtype, a batched input, every shape right, plain ``int`` / ``float`` options.

    Returns what :func:`_seq_args` would return for the same call, or None for anything else (then
    :func:`_seq_args` checks the call again and raises its errors). A latency-bound sequence (T=50, N=1,
    hidden 64) runs ~50 us natively; the general checks cost ~17 us of Python on top.
    """
    if type(x) is not np.ndarray or x.ndim != 3 or type(num_layers) is not int or not 1 <= num_layers <= c.MAX_OPTION:
        return None
    if type(dropout) is not float and type(dropout) is not int:
        return None
    p = float(dropout)
    if not 0.0 <= p <= 1.0 or (type(params) is not list and type(params) is not tuple):
        return None
    dt = x.dtype
    if (dt != _F32 and dt != _F64) or x.size > c.MAX_ELEMENTS:
        return None
    dirs = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    if len(params) != num_layers * dirs * per:
        return None
    for w in params:
        if type(w) is not np.ndarray or w.dtype != dt or w.size > c.MAX_ELEMENTS:
            return None
    if mode == "lstm":
        if hx is None:
            h0 = c0 = None
        elif (type(hx) is tuple or type(hx) is list) and len(hx) == 2:
            h0, c0 = hx
        else:
            return None
    else:
        h0, c0 = hx, None
    w_hh0 = params[1]
    if w_hh0.ndim != 2:
        return None
    hidden = int(w_hh0.shape[1])
    g = _GATES[mode] * hidden
    in_size = int(x.shape[2])
    for layer in range(num_layers):
        wih_shape = (g, in_size if layer == 0 else dirs * hidden)
        for d in range(dirs):
            base = (layer * dirs + d) * per
            if params[base].shape != wih_shape or params[base + 1].shape != (g, hidden):
                return None
            if has_biases and (params[base + 2].shape != (g,) or params[base + 3].shape != (g,)):
                return None
    return h0, c0, hidden, list(params)


def _seq_args(op: str, mode: str, x: Any, hx: Any, params: Any, num_layers: Any, bidirectional: bool,
              batch_first: bool, dropout: Any, has_biases: bool):
    """Validate a sequence call; return ``(x, h0, c0, params, num_layers, dropout, unbatched, on_device)``:
    ``x`` 3-D, the states (num_layers * dirs, N, hidden) arrays (zeros for None; c0 None unless LSTM).

    The common call (:func:`_seq_args_fast`) is checked without building messages; this function is the
    one definition of what is accepted and of every error message."""
    fast = _seq_args_fast(mode, x, hx, params, num_layers, bidirectional, dropout, has_biases)
    if fast is not None:
        h0, c0, hidden, ps = fast
        n, t_len = (int(x.shape[0]), int(x.shape[1])) if batch_first else (int(x.shape[1]), int(x.shape[0]))
        if t_len >= 1:
            state_shape = (num_layers * (2 if bidirectional else 1), n, hidden)
            states = []
            for s in ((h0, c0) if mode == "lstm" else (h0,)):
                if s is None:
                    states.append(np.zeros(state_shape, dtype=x.dtype))
                elif (type(s) is np.ndarray and s.dtype == x.dtype and s.shape == state_shape
                      and s.size <= c.MAX_ELEMENTS):
                    states.append(s)
                else:
                    break
            else:
                return (x, states[0], states[1] if mode == "lstm" else None, ps, num_layers, float(dropout),
                        False, False)
    gates = _GATES[mode]
    layers = c.int_arg(op, "num_layers", num_layers, minimum=1)
    dirs = 2 if bidirectional else 1
    p = c.float_arg(op, "dropout", dropout, low=0.0, high=1.0)
    per = 4 if has_biases else 2
    if not isinstance(params, Sequence) or isinstance(params, (str, bytes)):
        raise TypeError(f"{op}: params must be a list of arrays, got {type(params).__name__}")
    if len(params) != layers * dirs * per:
        raise ValueError(f"{op}: params must hold {layers * dirs * per} arrays for num_layers={layers}, "
                         f"bidirectional={bidirectional}, has_biases={has_biases}, got {len(params)}")
    is_lstm = mode == "lstm"
    if is_lstm:
        if hx is None:
            h0, c0 = None, None
        elif isinstance(hx, (tuple, list)) and len(hx) == 2:
            h0, c0 = hx
        else:
            raise TypeError(f"{op}: hx must be None or a pair (h_0, c_0), got {type(hx).__name__}")
    else:
        h0, c0 = hx, None
    named = {"input": x, "h_0": h0, "c_0": c0}
    named.update({f"params[{i}]": w for i, w in enumerate(params)})
    a, on_device = c.float_arrays(op, **named)
    x = a["input"]
    ps = [a[f"params[{i}]"] for i in range(len(params))]
    if x.ndim not in (2, 3):
        raise ValueError(f"{op}: input must be 3-D ({'N, T' if batch_first else 'T, N'}, input_size) or 2-D "
                         f"(T, input_size), got shape {tuple(x.shape)}")
    unbatched = x.ndim == 2
    if unbatched:
        x = x[:, None] if not batch_first else x[None]
    t_len, n = (int(x.shape[1]), int(x.shape[0])) if batch_first else (int(x.shape[0]), int(x.shape[1]))
    if t_len == 0:
        raise ValueError(f"{op}: sequence length must be at least 1, got input shape {tuple(a['input'].shape)}")
    c.rank(op, "params[1] (w_hh_l0)", ps[1], (2,), f"({gates}*hidden_size, hidden_size)")
    hidden = int(ps[1].shape[1])
    in_size = int(x.shape[2])
    for layer in range(layers):
        for d in range(dirs):
            base = (layer * dirs + d) * per
            suffix = f"_l{layer}{'_reverse' if d else ''}"
            layer_in = in_size if layer == 0 else dirs * hidden
            c.shape(op, f"params[{base}] (weight_ih{suffix})", ps[base], (gates * hidden, layer_in))
            c.shape(op, f"params[{base + 1}] (weight_hh{suffix})", ps[base + 1], (gates * hidden, hidden))
            if has_biases:
                c.shape(op, f"params[{base + 2}] (bias_ih{suffix})", ps[base + 2], (gates * hidden,))
                c.shape(op, f"params[{base + 3}] (bias_hh{suffix})", ps[base + 3], (gates * hidden,))
    state_shape = (layers * dirs, n, hidden)
    states = []
    for name in ("h_0", "c_0")[: 2 if is_lstm else 1]:
        s = a[name]
        if s is None:
            s = _zeros_like_state(x, state_shape)
        else:
            if unbatched and s.ndim == 2:
                s = s[:, None]
            c.shape(op, name, s, state_shape)
        states.append(s)
    return x, states[0], states[1] if is_lstm else None, ps, layers, p, unbatched, on_device


def _seq_forward(op: str, mode: str, x: Any, hx: Any, params: Any, num_layers: Any, bidirectional: bool,
                 batch_first: bool, dropout: Any, training: bool, has_biases: bool, seed: Any,
                 backend: Optional[str], want_workspace: bool = True):
    """The validated, dispatched sequence forward: ``(out, h_n, c_n, Workspace or None)`` (the
    Workspace only with ``want_workspace``: building it costs ~2 us of a ~60 us latency-bound call)."""
    x, h0, c0, ps, layers, p, unbatched, on_device = _seq_args(
        op, mode, x, hx, params, num_layers, bidirectional, batch_first, dropout, has_biases)
    use_dropout = bool(training) and p > 0 and layers > 1
    seed = seed_arg(op, seed) if use_dropout else 0
    name, be = c.dispatch_named(op, backend, on_device)
    # a backend may run a call that keeps nothing for a backward in one step (docs/design.md)
    inference = None if want_workspace or use_dropout else getattr(be, "rnn_seq_inference", None)
    if inference is not None:
        out, h_n, c_n = inference(mode, x, h0, c0, ps, layers, bidirectional, batch_first, has_biases)
        ws = None
    else:
        out, h_n, c_n, ws = be.rnn_seq(mode, x, h0, c0, ps, layers, bool(bidirectional), bool(batch_first),
                                       p if use_dropout else 0.0, bool(training), bool(has_biases), seed)
    if unbatched:
        out = out[:, 0] if not batch_first else out[0]
        h_n = h_n[:, 0]
        c_n = None if c_n is None else c_n[:, 0]
    if not want_workspace:
        return out, h_n, c_n, None
    meta = dict(unbatched=unbatched, batch_first=bool(batch_first), out_shape=tuple(out.shape),
                state_shape=tuple(h_n.shape), mode=mode)
    return out, h_n, c_n, _workspace(op, name, ws, **meta)


def _seq_backward(op: str, forward: str, grad_output: Any, grad_h_n: Any, grad_c_n: Any, workspace: Any):
    ws = _check_workspace(op, workspace, forward)
    meta = ws.meta
    grads = c.arrays(op, grad_output=grad_output, grad_h_n=grad_h_n, grad_c_n=grad_c_n)
    if any(g is not None for g in grads.values()):
        check_float(grads, op)
    go, gh, gc = grads["grad_output"], grads["grad_h_n"], grads["grad_c_n"]
    if go is not None:
        c.shape(op, "grad_output", go, meta["out_shape"])
    for name, g in (("grad_h_n", gh), ("grad_c_n", gc)):
        if g is not None:
            c.shape(op, name, g, meta["state_shape"])
    if meta["unbatched"]:
        bf = meta["batch_first"]
        go = None if go is None else (go[None] if bf else go[:, None])
        gh = None if gh is None else gh[:, None]
        gc = None if gc is None else gc[:, None]
    gx, gh0, gc0, gparams = backends.get(ws.backend).rnn_seq_backward(go, gh, gc, ws.data)
    if meta["unbatched"]:
        gx = gx[0] if meta["batch_first"] else gx[:, 0]
        gh0 = gh0[:, 0]
        gc0 = None if gc0 is None else gc0[:, 0]
    return gx, gh0, gc0, list(gparams)


def lstm(x: Any, hx: Any, params: Sequence[Any], *, num_layers: int = 1, bidirectional: bool = False,
         batch_first: bool = False, dropout: float = 0.0, training: bool = False, has_biases: bool = True,
         seed: Optional[int] = None, return_workspace: bool = False, backend: Optional[str] = None) -> Any:
    """A whole LSTM sequence, equal to ``torch.nn.LSTM`` with the same weights.

    ``params`` is PyTorch's ``_flat_weights`` order; ``hx`` is None or
    ``(h_0, c_0)`` of shape (num_layers * num_directions, N, hidden).
    Returns ``(output, (h_n, c_n))``, plus the workspace for
    :func:`lstm_backward` with ``return_workspace=True``. Inter-layer
    ``dropout`` applies when ``training``; ``seed`` fixes its masks.
    """
    out, h_n, c_n, ws = _seq_forward("lstm", "lstm", x, hx, params, num_layers, bidirectional, batch_first,
                                     dropout, training, has_biases, seed, backend, return_workspace)
    return (out, (h_n, c_n), ws) if return_workspace else (out, (h_n, c_n))


def gru(x: Any, hx: Any, params: Sequence[Any], *, num_layers: int = 1, bidirectional: bool = False,
        batch_first: bool = False, dropout: float = 0.0, training: bool = False, has_biases: bool = True,
        seed: Optional[int] = None, return_workspace: bool = False, backend: Optional[str] = None) -> Any:
    """A whole GRU sequence, equal to ``torch.nn.GRU``; returns ``(output, h_n)`` (+ workspace)."""
    out, h_n, _, ws = _seq_forward("gru", "gru", x, hx, params, num_layers, bidirectional, batch_first,
                                   dropout, training, has_biases, seed, backend, return_workspace)
    return (out, h_n, ws) if return_workspace else (out, h_n)


def rnn(x: Any, hx: Any, params: Sequence[Any], *, num_layers: int = 1, bidirectional: bool = False,
        batch_first: bool = False, dropout: float = 0.0, training: bool = False, has_biases: bool = True,
        nonlinearity: str = "tanh", seed: Optional[int] = None, return_workspace: bool = False,
        backend: Optional[str] = None) -> Any:
    """A whole Elman RNN sequence (tanh or relu), equal to ``torch.nn.RNN``; returns ``(output, h_n)`` (+ workspace)."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"rnn: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    out, h_n, _, ws = _seq_forward("rnn", f"rnn_{nonlinearity}", x, hx, params, num_layers, bidirectional,
                                   batch_first, dropout, training, has_biases, seed, backend, return_workspace)
    return (out, h_n, ws) if return_workspace else (out, h_n)


def lstm_backward(grad_output: Any, grad_h_n: Any, grad_c_n: Any, workspace: Workspace) -> SequenceGrads:
    """Backward through time of :func:`lstm`; any of the three gradients may be None (zeros).

    Returns ``SequenceGrads(input, (grad_h_0, grad_c_0), params)``.
    """
    gx, gh0, gc0, gp = _seq_backward("lstm_backward", "lstm", grad_output, grad_h_n, grad_c_n, workspace)
    return SequenceGrads(gx, (gh0, gc0), gp)


def gru_backward(grad_output: Any, grad_h_n: Any, workspace: Workspace) -> SequenceGrads:
    """Backward through time of :func:`gru`: ``SequenceGrads(input, grad_h_0, params)``."""
    gx, gh0, _, gp = _seq_backward("gru_backward", "gru", grad_output, grad_h_n, None, workspace)
    return SequenceGrads(gx, gh0, gp)


def rnn_backward(grad_output: Any, grad_h_n: Any, workspace: Workspace) -> SequenceGrads:
    """Backward through time of :func:`rnn`: ``SequenceGrads(input, grad_h_0, params)``."""
    gx, gh0, _, gp = _seq_backward("rnn_backward", "rnn", grad_output, grad_h_n, None, workspace)
    return SequenceGrads(gx, gh0, gp)


__all__ = ["Workspace", "CellGrads", "LSTMCellGrads", "SequenceGrads", "rnn_cell", "lstm_cell", "gru_cell",
           "rnn_cell_backward", "lstm_cell_backward", "gru_cell_backward", "lstm", "gru", "rnn",
           "lstm_backward", "gru_backward", "rnn_backward"]
