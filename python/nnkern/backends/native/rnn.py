"""LSTM / GRU / RNN cells and whole sequences on the native kernels (csrc/rnn/).

``OPS`` maps backend-contract names (docs/design.md) to functions; an op listed
here is run natively by the ``auto`` backend.

One native call runs one layer over the whole sequence, every direction: the
input projection of all steps, the time loop (recurrent multiply by weights
packed once per call, fused gate pass) and, in the backward, the weight and
bias gradients and the gradient of the layer input. On several threads a
one-direction layer's forward projects the input in chunks of rows beside the
time loop (a member that cannot start a step projects the next chunk) and
splits the batch rows over the members when there are enough (no wait between
steps), else the hidden units; the bits are those of one thread. Python only
allocates the outputs and the workspace (large arrays on the workspace cache's
reused memory, no page faults; nothing is allocated inside the time loop) and
applies the inter-layer dropout. A cell is a sequence of length one.

Workspace per direction (kept for the backward): the activated gates
``(T, N, G)``, the hidden state fed into each step ``(T, N, H)``, and for the
LSTM the cell state fed into each step and ``tanh`` of the one it produced,
for the GRU ``W_hn h + b_hn`` of each step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Optional

import numpy as np

from ... import _cpu as _native
from ..numpy_ref.counter_rng import derive

_CACHED_BYTES = 256 << 10  # bindings/arrays.h kCachedArrayBytes
_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
# a layer direction's saved states beyond the gates and the previous hidden states
_STATE_ARRAYS = {"lstm": ("cprev", "tanh_c"), "gru": ("ghn",)}


def _empty(shape, dtype) -> np.ndarray:
    """An uninitialized array; large ones on reused, already faulted-in memory (core/workspace.h)."""
    dtype = np.dtype(dtype)
    if math.prod(shape) * dtype.itemsize < _CACHED_BYTES:
        return np.empty(shape, dtype)
    return _native.empty(tuple(int(s) for s in shape), dtype)


def _c(a: Optional[np.ndarray], dtype: np.dtype) -> Optional[np.ndarray]:
    """C-contiguous in ``dtype`` (no copy when already so), None stays None."""
    return None if a is None else np.ascontiguousarray(a, dtype=dtype)


@dataclass
class _LayerWS:
    """One layer: its contiguous input, its output ((T, N, *), or (N, T, *) when batch_first) and one dict
    of arrays per direction."""

    x: np.ndarray
    out: np.ndarray
    dirs: List[dict]
    batch_first: bool = False


@dataclass
class _SeqWS:
    mode: str
    num_layers: int
    num_dirs: int
    hidden: int
    batch_first: bool
    has_biases: bool
    params: list
    h0: np.ndarray
    c0: Optional[np.ndarray]
    layers: List[_LayerWS]
    masks: list = field(default_factory=list)   # per layer below the top: keep-mask or None
    dropout: float = 0.0


def _direction(mode: str, w_ih, w_hh, b_ih, b_hh, reverse: bool, h0, c0, h_last, c_last, t_len: int,
               n: int) -> dict:
    """The arrays of one direction of a layer forward: parameters, states and a fresh workspace."""
    hid = w_hh.shape[1]
    dt = w_hh.dtype
    d = dict(w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, reverse=reverse, h0=h0, c0=c0, h_last=h_last,
             c_last=c_last)
    # the workspace arrays as views of one buffer (one allocation: a batch-1 call is ~60 us, of which
    # each allocation took ~1 us), each starting on a 64-byte boundary
    names = ("gates", "hprev") + _STATE_ARRAYS.get(mode, ())
    sizes = [t_len * n * (w_hh.shape[0] if name == "gates" else hid) for name in names]
    starts, total = [], 0
    for size in sizes:
        starts.append(total)
        total += -(-size // 16) * 16
    buf = _empty((total,), dt)
    for name, start, size in zip(names, starts, sizes):
        d[name] = buf[start:start + size].reshape(t_len, n, -1 if size else (w_hh.shape[0] if name == "gates" else hid))
    return d


def _layer_backward(mode: str, lws: _LayerWS, grad_out: Optional[np.ndarray], grad_h_n: List, grad_c_n: List,
                    want_grad_x: bool):
    """Backward of one layer; returns ``(grad_x or None, [per direction: (gh0, gc0, gw_ih, gw_hh, gb_ih, gb_hh)])``."""
    t_len, n, i_size = lws.x.shape
    if lws.batch_first:
        t_len, n = n, t_len
    dt = lws.x.dtype
    dirs = []
    results = []
    for k, d in enumerate(lws.dirs):
        g, hid = d["w_hh"].shape
        bd = dict(d)
        bd.update(grad_h_last=grad_h_n[k], grad_c_last=grad_c_n[k],
                  grad_h0=_empty((n, hid), dt), grad_c0=_empty((n, hid), dt) if mode == "lstm" else None,
                  grad_w_ih=_empty(d["w_ih"].shape, dt), grad_w_hh=_empty(d["w_hh"].shape, dt),
                  grad_b_ih=None if d["b_ih"] is None else _empty((g,), dt),
                  grad_b_hh=None if d["b_hh"] is None else _empty((g,), dt),
                  d_gates=_empty((t_len, n, g), dt),
                  d_gates_h=_empty((t_len, n, g), dt) if mode == "gru" else None)
        dirs.append(bd)
        results.append(bd)
    grad_x = _empty(lws.x.shape, dt) if want_grad_x else None
    _native.rnn_layer_backward(mode, lws.batch_first, lws.x, lws.out, grad_out, grad_x, dirs)
    return grad_x, [(r["grad_h0"], r["grad_c0"], r["grad_w_ih"], r["grad_w_hh"], r["grad_b_ih"], r["grad_b_hh"])
                    for r in results]


# ------------------------------------------------------------------------------------------- cells

@dataclass
class _CellWS:
    mode: str
    layer: _LayerWS


def _cell(mode: str, x, h, c, w_ih, w_hh, b_ih, b_hh):
    dt = x.dtype
    n, hid = h.shape
    x3 = _c(x, dt).reshape(1, n, x.shape[1])
    out = _empty((1, n, hid), dt)
    h_last = _empty((n, hid), dt)
    c_last = _empty((n, hid), dt) if mode == "lstm" else None
    d = _direction(mode, _c(w_ih, dt), _c(w_hh, dt), _c(b_ih, dt), _c(b_hh, dt), False, _c(h, dt), _c(c, dt),
                   h_last, c_last, 1, n)
    _native.rnn_layer_forward(mode, False, x3, out, [d])
    return h_last, c_last, _CellWS(mode, _LayerWS(x3, out, [d]))


def _cell_backward(ws: _CellWS, grad_h, grad_c):
    n, hid = ws.layer.out.shape[1], ws.layer.out.shape[2]
    dt = ws.layer.out.dtype
    grad_out = None if grad_h is None else _c(grad_h, dt).reshape(1, n, hid)
    grad_x, per_dir = _layer_backward(ws.mode, ws.layer, grad_out, [None], [_c(grad_c, dt)], True)
    gh0, gc0, gw_ih, gw_hh, gb_ih, gb_hh = per_dir[0]
    return grad_x.reshape(n, grad_x.shape[2]), gh0, gc0, gw_ih, gw_hh, gb_ih, gb_hh


def rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    h_new, _, ws = _cell("rnn_" + nonlinearity, x, h, None, w_ih, w_hh, b_ih, b_hh)
    return h_new, ws


def rnn_cell_backward(grad_h, ws):
    gx, gh, _, gw_ih, gw_hh, gb_ih, gb_hh = _cell_backward(ws, grad_h, None)
    return gx, gh, gw_ih, gw_hh, gb_ih, gb_hh


def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    return _cell("lstm", x, h, c, w_ih, w_hh, b_ih, b_hh)


def lstm_cell_backward(grad_h, grad_c, ws):
    return _cell_backward(ws, grad_h, grad_c)


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    h_new, _, ws = _cell("gru", x, h, None, w_ih, w_hh, b_ih, b_hh)
    return h_new, ws


def gru_cell_backward(grad_h, ws):
    gx, gh, _, gw_ih, gw_hh, gb_ih, gb_hh = _cell_backward(ws, grad_h, None)
    return gx, gh, gw_ih, gw_hh, gb_ih, gb_hh


# --------------------------------------------------------------------------------------- sequences

def rnn_seq(mode, x, h0, c0, params, num_layers, bidirectional, batch_first, dropout, training, has_biases, seed):
    """Multi-layer, optionally bidirectional sequence (the contract of numpy_ref.rnn.rnn_seq).

    With ``batch_first`` every layer reads and writes (N, T, *) arrays as they are: no transposing copy.
    """
    dt = x.dtype
    num_dirs = 2 if bidirectional else 1
    hid = h0.shape[2]
    layer_in = np.ascontiguousarray(x, dtype=dt)
    n, t_len = layer_in.shape[:2] if batch_first else layer_in.shape[1::-1]
    h0, c0 = _c(h0, dt), _c(c0, dt)
    params = [_c(p, dt) for p in params]
    per = 4 if has_biases else 2
    use_dropout = bool(training) and dropout > 0
    h_n = _empty((num_layers * num_dirs, n, hid), dt)
    c_n = _empty(h_n.shape, dt) if mode == "lstm" else None
    layers, masks = [], []
    for layer in range(num_layers):
        out = _empty(layer_in.shape[:2] + (num_dirs * hid,), dt)
        dirs = []
        for d in range(num_dirs):
            k = layer * num_dirs + d
            w = params[k * per:(k + 1) * per]
            b_ih, b_hh = (w[2], w[3]) if has_biases else (None, None)
            dirs.append(_direction(mode, w[0], w[1], b_ih, b_hh, d == 1, h0[k], None if c0 is None else c0[k],
                                   h_n[k], None if c_n is None else c_n[k], t_len, n))
        _native.rnn_layer_forward(mode, bool(batch_first), layer_in, out, dirs)
        layers.append(_LayerWS(layer_in, out, dirs, bool(batch_first)))
        if layer < num_layers - 1:
            mask = None
            if use_dropout:
                # the mask's counters run over the time-major (T, N, D*H) layout on every backend
                time_major = out.transpose(1, 0, 2) if batch_first else out
                dropped, mask = _native.dropout(time_major, float(dropout), derive(seed, layer))
                layer_in = np.ascontiguousarray(dropped.transpose(1, 0, 2)) if batch_first else dropped
            else:
                layer_in = out
            masks.append(mask)
    ws = _SeqWS(mode, num_layers, num_dirs, hid, bool(batch_first), bool(has_biases), params, h0, c0, layers,
                masks, float(dropout) if use_dropout else 0.0)
    return layers[-1].out, h_n, c_n, ws


def rnn_seq_inference(mode, x, h0, c0, params, num_layers, bidirectional, batch_first, has_biases):
    """:func:`rnn_seq` when nothing is kept for a backward and no dropout applies: every layer in one
    native call (csrc/rnn/rnn_sequence.cpp), the workspace on scratch memory. Returns
    ``(output, h_n, c_n/None)`` with the bits of :func:`rnn_seq`; at T=50, N=1, hidden 64 it saves
    ~15 us of Python of a ~60 us call."""
    return _native.rnn_seq_forward(mode, bool(batch_first), x, h0, c0, params, int(num_layers), bool(bidirectional),
                                   bool(has_biases))


def rnn_seq_backward(grad_output, grad_h_n, grad_c_n, ws):
    """Backward of :func:`rnn_seq`; any incoming gradient may be None (zeros)."""
    dt = ws.layers[-1].out.dtype
    num_dirs = ws.num_dirs
    per = 4 if ws.has_biases else 2
    d_out = None if grad_output is None else np.ascontiguousarray(grad_output, dtype=dt)
    grad_h_n, grad_c_n = _c(grad_h_n, dt), _c(grad_c_n, dt)
    grad_h0 = _empty(ws.h0.shape, dt)
    grad_c0 = _empty(ws.c0.shape, dt) if ws.mode == "lstm" else None
    grad_params: List[Any] = [None] * len(ws.params)
    for layer in range(ws.num_layers - 1, -1, -1):
        ks = range(layer * num_dirs, (layer + 1) * num_dirs)
        gx, per_dir = _layer_backward(
            ws.mode, ws.layers[layer], d_out, [None if grad_h_n is None else grad_h_n[k] for k in ks],
            [None if grad_c_n is None else grad_c_n[k] for k in ks], True)
        for k, (gh0, gc0, gw_ih, gw_hh, gb_ih, gb_hh) in zip(ks, per_dir):
            grad_h0[k] = gh0
            if grad_c0 is not None:
                grad_c0[k] = gc0
            grad_params[k * per:(k + 1) * per] = [gw_ih, gw_hh, gb_ih, gb_hh][:per]
        if layer > 0 and ws.masks[layer - 1] is not None:
            mask = ws.masks[layer - 1]  # time-major
            if ws.batch_first:
                gx = np.ascontiguousarray(
                    _native.dropout_backward(gx.transpose(1, 0, 2), mask, ws.dropout).transpose(1, 0, 2))
            else:
                gx = _native.dropout_backward(gx, mask, ws.dropout)
        d_out = gx
    return d_out, grad_h0, grad_c0, grad_params


OPS = {
    "rnn_cell": rnn_cell, "rnn_cell_backward": rnn_cell_backward,
    "lstm_cell": lstm_cell, "lstm_cell_backward": lstm_cell_backward,
    "gru_cell": gru_cell, "gru_cell_backward": gru_cell_backward,
    "rnn_seq": rnn_seq, "rnn_seq_backward": rnn_seq_backward,
}
