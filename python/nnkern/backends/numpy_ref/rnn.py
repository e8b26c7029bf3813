"""NumPy reference: RNN / LSTM / GRU cells and whole sequences, forward and backward.

Semantics are PyTorch's (``torch.nn.RNNCell`` / ``LSTMCell`` / ``GRUCell`` and
``torch.nn.RNN`` / ``LSTM`` / ``GRU``): weights in PyTorch layout, LSTM gates
``i, f, g, o``, GRU gates ``r, z, n`` with ``r`` applied to ``W_hn h + b_hn``.

Arguments arrive validated (see ``nnkern.functional.recurrent``); arrays are
float32 or float64, possibly non-contiguous, and everything is computed in the
dtype given. The workspaces returned by the forwards are private to this
module: they hold the inputs, the weights and the *activated* gates, so the
backwards never re-run the forward.

Structure of the sequence code: per layer and direction, the input projection
of all time steps is one matmul; the Python loop runs over time only. In the
backward, the per-step pre-activation gradients are stacked into ``(T, N, G)``
arrays, and the weight gradients and the gradient of the layer input are each
one matmul over all steps after the loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import numpy as np

from .counter_rng import derive, keep_mask


# --------------------------------------------------------------------------------------- pointwise

def _sigmoid_(a: np.ndarray) -> np.ndarray:
    """Logistic sigmoid in place, as ``0.5 * tanh(0.5 a) + 0.5``.

    The tanh form never overflows (exp(-a) does for large negative a in
    float32), stays in the dtype of ``a`` and needs no temporaries.
    """
    a *= 0.5
    np.tanh(a, out=a)
    a *= 0.5
    a += 0.5
    return a


def _rnn_act_(pre: np.ndarray, nonlinearity: str) -> np.ndarray:
    """The Elman nonlinearity in place."""
    if nonlinearity == "tanh":
        return np.tanh(pre, out=pre)
    # np.maximum keeps NaN (as torch.relu does)
    return np.maximum(pre, 0, out=pre)


def _rnn_act_backward(grad: np.ndarray, out: np.ndarray, nonlinearity: str) -> np.ndarray:
    """Gradient of the pre-activation from the gradient of the activated output ``out``."""
    if nonlinearity == "tanh":
        return grad * (1 - out * out)
    # relu'(x) taken from the output, as PyTorch's threshold_backward does
    return np.where(out > 0, grad, grad.dtype.type(0))


def _lstm_pointwise_(gates: np.ndarray, c_prev: np.ndarray):
    """LSTM gate nonlinearities and state update.

    ``gates`` (N, 4H) holds the pre-activations and is overwritten with the
    activated gates ``i, f, g, o`` (kept for the backward).
    Returns ``(c_new, tanh(c_new), h_new)``.
    """
    hid = gates.shape[1] // 4
    _sigmoid_(gates[:, : 2 * hid])          # i, f
    np.tanh(gates[:, 2 * hid: 3 * hid], out=gates[:, 2 * hid: 3 * hid])  # g
    _sigmoid_(gates[:, 3 * hid:])           # o
    i, f, g, o = (gates[:, k * hid:(k + 1) * hid] for k in range(4))
    c_new = f * c_prev
    c_new += i * g
    tanh_c = np.tanh(c_new)
    return c_new, tanh_c, o * tanh_c


def _lstm_pointwise_backward(dh: np.ndarray, dc: Optional[np.ndarray], gates: np.ndarray, c_prev: np.ndarray,
                             tanh_c: np.ndarray, out: Optional[np.ndarray] = None):
    """Backward of :func:`_lstm_pointwise_`.

    ``dh``, ``dc``: gradients of ``h_new`` and ``c_new`` (``dc`` may be None).
    Returns ``(d_pre (N, 4H), dc_prev)``; ``d_pre`` is written into ``out`` when given.
    """
    hid = gates.shape[1] // 4
    i, f, g, o = (gates[:, k * hid:(k + 1) * hid] for k in range(4))
    # c_new reaches the loss directly (dc) and through h_new = o * tanh(c_new)
    dc_total = dh * o * (1 - tanh_c * tanh_c)
    if dc is not None:
        dc_total += dc
    if out is None:
        out = np.empty_like(gates)
    out[:, :hid] = dc_total * g * i * (1 - i)
    out[:, hid: 2 * hid] = dc_total * c_prev * f * (1 - f)
    out[:, 2 * hid: 3 * hid] = dc_total * i * (1 - g * g)
    out[:, 3 * hid:] = dh * tanh_c * o * (1 - o)
    return out, dc_total * f


def _gru_pointwise_(gi: np.ndarray, gh: np.ndarray, h_prev: np.ndarray) -> np.ndarray:
    """GRU gate nonlinearities and state update.

    ``gi`` (N, 3H) = ``x W_ih^T + b_ih`` is overwritten with the activated gates
    ``r, z, n``; ``gh`` (N, 3H) = ``h W_hh^T + b_hh`` is read only (its ``n``
    part, ``W_hn h + b_hn``, is what the backward needs besides the gates).
    Returns ``h_new``.
    """
    hid = gi.shape[1] // 3
    gi[:, : 2 * hid] += gh[:, : 2 * hid]
    _sigmoid_(gi[:, : 2 * hid])             # r, z
    r, z, n = gi[:, :hid], gi[:, hid: 2 * hid], gi[:, 2 * hid:]
    n += r * gh[:, 2 * hid:]
    np.tanh(n, out=n)
    # h' = (1 - z) n + z h, written as n + z (h - n): one product fewer
    return n + z * (h_prev - n)


def _gru_pointwise_backward(dh: np.ndarray, gates: np.ndarray, ghn: np.ndarray, h_prev: np.ndarray,
                            dgi: Optional[np.ndarray] = None, dgh: Optional[np.ndarray] = None):
    """Backward of :func:`_gru_pointwise_`.

    Returns ``(d_gi (N, 3H), d_gh (N, 3H), dh_prev_direct)``: the gradients of
    the input-side and hidden-side pre-activations (they differ only in the
    ``n`` block, where the hidden side is scaled by ``r``) and the part of the
    gradient of ``h_prev`` that bypasses ``W_hh`` (through ``z * h_prev``).
    """
    hid = gates.shape[1] // 3
    r, z, n = gates[:, :hid], gates[:, hid: 2 * hid], gates[:, 2 * hid:]
    if dgi is None:
        dgi = np.empty_like(gates)
    if dgh is None:
        dgh = np.empty_like(gates)
    dn = dh * (1 - z) * (1 - n * n)
    dgi[:, 2 * hid:] = dn
    dgh[:, 2 * hid:] = dn * r
    dgi[:, :hid] = dn * ghn * r * (1 - r)
    dgi[:, hid: 2 * hid] = dh * (h_prev - n) * z * (1 - z)
    dgh[:, : 2 * hid] = dgi[:, : 2 * hid]
    return dgi, dgh, dh * z


def _add_bias(a: np.ndarray, b: Optional[np.ndarray]) -> np.ndarray:
    if b is not None:
        a += b
    return a


def _weight_grads(d_gi: np.ndarray, d_gh: np.ndarray, x: np.ndarray, h: np.ndarray,
                  b_ih: Optional[np.ndarray], b_hh: Optional[np.ndarray]):
    """Weight and bias gradients from pre-activation gradients flattened to (M, G)."""
    gw_ih = d_gi.T @ x
    gw_hh = d_gh.T @ h
    gb_ih = d_gi.sum(axis=0) if b_ih is not None else None
    gb_hh = d_gh.sum(axis=0) if b_hh is not None else None
    return gw_ih, gw_hh, gb_ih, gb_hh


# ------------------------------------------------------------------------------------------- cells

@dataclass
class _CellWS:
    """What a cell forward saved: inputs, weights, activated gates and the by-products the backward reads."""

    kind: str                      # "tanh", "relu", "lstm" or "gru"
    x: np.ndarray
    h: np.ndarray
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: Optional[np.ndarray]
    b_hh: Optional[np.ndarray]
    gates: np.ndarray              # activated gates (rnn: the output h')
    c: Optional[np.ndarray] = None       # lstm: c_prev
    tanh_c: Optional[np.ndarray] = None  # lstm: tanh(c_new)
    ghn: Optional[np.ndarray] = None     # gru: W_hn h + b_hn


def rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    """One Elman step ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``. Returns ``(h', ws)``."""
    pre = x @ w_ih.T
    pre += h @ w_hh.T
    _add_bias(_add_bias(pre, b_ih), b_hh)
    h_new = _rnn_act_(pre, nonlinearity)
    return h_new, _CellWS(nonlinearity, x, h, w_ih, w_hh, b_ih, b_hh, h_new)


def rnn_cell_backward(grad_h, ws):
    """Returns ``(grad_x, grad_h_prev, grad_w_ih, grad_w_hh, grad_b_ih/None, grad_b_hh/None)``."""
    if grad_h is None:
        grad_h = np.zeros_like(ws.gates)
    d = _rnn_act_backward(grad_h, ws.gates, ws.kind)
    return (d @ ws.w_ih, d @ ws.w_hh) + _weight_grads(d, d, ws.x, ws.h, ws.b_ih, ws.b_hh)


def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One LSTM step, gates ``i, f, g, o``. Returns ``(h', c', ws)``."""
    gates = x @ w_ih.T
    gates += h @ w_hh.T
    _add_bias(_add_bias(gates, b_ih), b_hh)
    c_new, tanh_c, h_new = _lstm_pointwise_(gates, c)
    return h_new, c_new, _CellWS("lstm", x, h, w_ih, w_hh, b_ih, b_hh, gates, c=c, tanh_c=tanh_c)


def lstm_cell_backward(grad_h, grad_c, ws):
    """Returns ``(grad_x, grad_h_prev, grad_c_prev, grad_w_ih, grad_w_hh, grad_b_ih/None, grad_b_hh/None)``.

    ``grad_h`` / ``grad_c`` may be None (zeros).
    """
    if grad_h is None:
        grad_h = np.zeros_like(ws.tanh_c)
    d, dc_prev = _lstm_pointwise_backward(grad_h, grad_c, ws.gates, ws.c, ws.tanh_c)
    return (d @ ws.w_ih, d @ ws.w_hh, dc_prev) + _weight_grads(d, d, ws.x, ws.h, ws.b_ih, ws.b_hh)


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    """One GRU step, gates ``r, z, n``. Returns ``(h', ws)``."""
    gi = _add_bias(x @ w_ih.T, b_ih)
    gh = _add_bias(h @ w_hh.T, b_hh)
    h_new = _gru_pointwise_(gi, gh, h)
    hid = h.shape[1]
    return h_new, _CellWS("gru", x, h, w_ih, w_hh, b_ih, b_hh, gi, ghn=gh[:, 2 * hid:])


def gru_cell_backward(grad_h, ws):
    """Returns ``(grad_x, grad_h_prev, grad_w_ih, grad_w_hh, grad_b_ih/None, grad_b_hh/None)``."""
    if grad_h is None:
        grad_h = np.zeros_like(ws.ghn)
    d_gi, d_gh, dh_direct = _gru_pointwise_backward(grad_h, ws.gates, ws.ghn, ws.h)
    grad_h_prev = d_gh @ ws.w_hh
    grad_h_prev += dh_direct
    return (d_gi @ ws.w_ih, grad_h_prev) + _weight_grads(d_gi, d_gh, ws.x, ws.h, ws.b_ih, ws.b_hh)


# --------------------------------------------------------------------------------------- sequences

_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


@dataclass
class _DirWS:
    """One layer and direction of a sequence forward; arrays indexed by time position t."""

    gates: np.ndarray                       # (T, N, G) activated gates (rnn: unused, the output is kept)
    c: Optional[np.ndarray] = None          # lstm: (T, N, H) c after step t
    tanh_c: Optional[np.ndarray] = None     # lstm: (T, N, H) tanh of it
    ghn: Optional[np.ndarray] = None        # gru: (T, N, H) W_hn h_prev + b_hn


@dataclass
class _SeqWS:
    """What :func:`rnn_seq` saved for :func:`rnn_seq_backward`."""

    mode: str
    num_layers: int
    num_dirs: int
    hidden: int
    batch_first: bool
    has_biases: bool
    params: list
    h0: np.ndarray
    c0: Optional[np.ndarray]
    inputs: list        # per layer: its (T, N, I_l) time-major, contiguous input (after dropout)
    outputs: list       # per layer: its (T, N, D*H) output (before dropout)
    masks: list         # per layer below the top: keep-mask or None
    dropout: float
    dirs: list          # per (layer, direction): _DirWS


def _layer_params(params, has_biases, num_dirs, layer, d):
    per = 4 if has_biases else 2
    base = (layer * num_dirs + d) * per
    w_ih, w_hh = params[base], params[base + 1]
    b_ih, b_hh = (params[base + 2], params[base + 3]) if has_biases else (None, None)
    return w_ih, w_hh, b_ih, b_hh


def _time_steps(t_len: int, reverse: bool):
    return range(t_len - 1, -1, -1) if reverse else range(t_len)


def _prev_states(seq: np.ndarray, init: np.ndarray, reverse: bool) -> np.ndarray:
    """The state fed *into* each time position: ``seq`` (T, N, H) of states after each step, shifted by one
    in processing order, with ``init`` in the first processed position."""
    if reverse:
        return np.concatenate([seq[1:], init[None]], axis=0)
    return np.concatenate([init[None], seq[:-1]], axis=0)


def _run_direction(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, out):
    """Run one layer in one direction over the time-major input ``x`` (T, N, I).

    Writes the hidden states into ``out`` (T, N, H) (a column block of the layer output) and returns
    ``(_DirWS, h_last, c_last)``.
    """
    t_len, n = x.shape[0], x.shape[1]
    hid = w_hh.shape[1]
    w_hh_t = w_hh.T
    # the input projection of all steps at once: one (T*N, I) x (I, G) matmul
    # (explicit sizes in the reshapes: -1 is ambiguous when N = 0)
    gates = (x.reshape(t_len * n, x.shape[2]) @ w_ih.T).reshape(t_len, n, w_ih.shape[0])
    _add_bias(gates, b_ih)
    if mode != "gru":
        # b_hh simply adds to the pre-activation; GRU needs it inside r * (W_hn h + b_hn)
        _add_bias(gates, b_hh)
    ws = _DirWS(gates)
    h, c = h0, c0
    if mode == "lstm":
        ws.c = np.empty((t_len, n, hid), dtype=x.dtype)
        ws.tanh_c = np.empty_like(ws.c)
        for t in _time_steps(t_len, reverse):
            g = gates[t]
            g += h @ w_hh_t
            c, ws.tanh_c[t], out[t] = _lstm_pointwise_(g, c)
            ws.c[t] = c
            h = out[t]
    elif mode == "gru":
        ws.ghn = np.empty((t_len, n, hid), dtype=x.dtype)
        for t in _time_steps(t_len, reverse):
            gh = _add_bias(h @ w_hh_t, b_hh)
            out[t] = _gru_pointwise_(gates[t], gh, h)
            ws.ghn[t] = gh[:, 2 * hid:]
            h = out[t]
    else:
        act = mode[4:]
        for t in _time_steps(t_len, reverse):
            g = gates[t]
            g += h @ w_hh_t
            out[t] = _rnn_act_(g, act)
            h = out[t]
        ws.gates = None  # the activated output is the layer output itself
    return ws, h, c


def rnn_seq(mode, x, h0, c0, params, num_layers, bidirectional, batch_first, dropout, training, has_biases, seed):
    """Multi-layer, optionally bidirectional RNN / LSTM / GRU over a whole sequence (``torch.nn.LSTM`` etc.).

    ``x`` is (T, N, I), or (N, T, I) when ``batch_first``; ``h0``/``c0`` are (L*D, N, H) (``c0`` None except
    lstm); ``params`` is PyTorch's ``_flat_weights`` order. Between layers, when ``training`` and
    ``dropout > 0``, layer ``l``'s output is multiplied by ``keep_mask(derive(seed, l), (T, N, D*H), dropout)
    / (1 - dropout)``. Returns ``(output, h_n, c_n/None, ws)``.
    """
    num_dirs = 2 if bidirectional else 1
    hid = h0.shape[2]
    dtype = x.dtype
    # time-major and contiguous once, so that every projection is a plain 2-D matmul
    layer_in = np.ascontiguousarray(x.transpose(1, 0, 2) if batch_first else x)
    t_len, n = layer_in.shape[0], layer_in.shape[1]
    use_dropout = bool(training) and dropout > 0
    h_n = np.empty((num_layers * num_dirs, n, hid), dtype=dtype)
    c_n = np.empty_like(h_n) if mode == "lstm" else None
    inputs, outputs, masks, dirs = [], [], [], []
    for layer in range(num_layers):
        out = np.empty((t_len, n, num_dirs * hid), dtype=dtype)
        for d in range(num_dirs):
            k = layer * num_dirs + d
            w_ih, w_hh, b_ih, b_hh = _layer_params(params, has_biases, num_dirs, layer, d)
            dws, h_last, c_last = _run_direction(mode, layer_in, h0[k], None if c0 is None else c0[k],
                                                 w_ih, w_hh, b_ih, b_hh, d == 1, out[:, :, d * hid:(d + 1) * hid])
            h_n[k] = h_last
            if c_n is not None:
                c_n[k] = c_last
            dirs.append(dws)
        inputs.append(layer_in)
        outputs.append(out)
        if layer < num_layers - 1:
            mask = None
            if use_dropout:
                # as torch.nn.functional.dropout: out * mask / (1 - p), so a dropped NaN / Inf gives NaN
                mask = keep_mask(derive(seed, layer), out.shape, dropout)
                with np.errstate(invalid="ignore"):
                    layer_in = out * np.where(mask, dtype.type(1.0 / (1.0 - dropout)), dtype.type(0))
            else:
                layer_in = out
            masks.append(mask)
    output = outputs[-1]
    if batch_first:
        output = np.ascontiguousarray(output.transpose(1, 0, 2))
    ws = _SeqWS(mode, num_layers, num_dirs, hid, bool(batch_first), bool(has_biases), list(params), h0, c0,
                inputs, outputs, masks, float(dropout) if use_dropout else 0.0, dirs)
    return output, h_n, c_n, ws


def _backward_direction(mode, dws, x, out, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, d_out, dh, dc):
    """Backprop through time for one layer and direction.

    ``out`` (T, N, H) is this direction's output, ``d_out`` its gradient; ``dh``/``dc`` the gradients of the
    final states. Returns ``(d_x (T, N, I), dh0, dc0, [gw_ih, gw_hh, gb_ih, gb_hh])``.
    """
    t_len, n = out.shape[0], out.shape[1]
    g_size = w_hh.shape[0]
    h_prev = _prev_states(out, h0, reverse)
    d_gi = np.empty((t_len, n, g_size), dtype=out.dtype)
    d_gh = d_gi  # the same array, except for the GRU
    if mode == "lstm":
        c_prev = _prev_states(dws.c, c0, reverse)
        for t in _time_steps(t_len, not reverse):
            _, dc = _lstm_pointwise_backward(d_out[t] + dh, dc, dws.gates[t], c_prev[t], dws.tanh_c[t], d_gi[t])
            dh = d_gi[t] @ w_hh
    elif mode == "gru":
        d_gh = np.empty_like(d_gi)
        for t in _time_steps(t_len, not reverse):
            _, _, dh_direct = _gru_pointwise_backward(d_out[t] + dh, dws.gates[t], dws.ghn[t], h_prev[t],
                                                      d_gi[t], d_gh[t])
            dh = d_gh[t] @ w_hh
            dh += dh_direct
    else:
        act = mode[4:]
        for t in _time_steps(t_len, not reverse):
            d_gi[t] = _rnn_act_backward(d_out[t] + dh, out[t], act)
            dh = d_gi[t] @ w_hh
    # all steps at once: weight gradients and the gradient of the layer input as (T*N)-long matmuls
    m = t_len * n
    d_gi2, d_gh2 = d_gi.reshape(m, g_size), d_gh.reshape(m, g_size)
    grads = _weight_grads(d_gi2, d_gh2, x.reshape(m, x.shape[2]), h_prev.reshape(m, h_prev.shape[2]), b_ih, b_hh)
    d_x = (d_gi2 @ w_ih).reshape(t_len, n, w_ih.shape[1])
    return d_x, dh, dc, list(grads)


def rnn_seq_backward(grad_output, grad_h_n, grad_c_n, ws):
    """Backward of :func:`rnn_seq`. Any of the incoming gradients may be None (zeros).

    Returns ``(grad_x, grad_h0, grad_c0/None, grad_params)``, ``grad_x`` in the layout of ``x`` and
    ``grad_params`` in the order of ``params``.
    """
    mode, num_layers, num_dirs, hid = ws.mode, ws.num_layers, ws.num_dirs, ws.hidden
    top = ws.outputs[-1]
    dtype = top.dtype
    if grad_output is None:
        d_layer_out = np.zeros_like(top)
    else:
        d_layer_out = grad_output.transpose(1, 0, 2) if ws.batch_first else grad_output
    is_lstm = mode == "lstm"
    grad_h0 = np.empty_like(ws.h0)
    grad_c0 = np.empty_like(ws.c0) if is_lstm else None
    per = 4 if ws.has_biases else 2
    grad_params: List[Any] = [None] * len(ws.params)
    for layer in range(num_layers - 1, -1, -1):
        x, out = ws.inputs[layer], ws.outputs[layer]
        d_x = None
        for d in range(num_dirs):
            k = layer * num_dirs + d
            w_ih, w_hh, b_ih, b_hh = _layer_params(ws.params, ws.has_biases, num_dirs, layer, d)
            cols = slice(d * hid, (d + 1) * hid)
            dh = np.zeros_like(grad_h0[k]) if grad_h_n is None else grad_h_n[k]
            dc = None
            if is_lstm:
                dc = np.zeros_like(grad_c0[k]) if grad_c_n is None else grad_c_n[k]
            d_xd, dh0, dc0, grads = _backward_direction(
                mode, ws.dirs[k], x, out[:, :, cols], ws.h0[k], None if ws.c0 is None else ws.c0[k],
                w_ih, w_hh, b_ih, b_hh, d == 1, d_layer_out[:, :, cols], dh, dc)
            grad_h0[k] = dh0
            if is_lstm:
                grad_c0[k] = dc0
            grad_params[k * per:(k + 1) * per] = grads[:per]
            if d_x is None:
                d_x = d_xd
            else:
                d_x += d_xd
        if layer > 0:
            mask = ws.masks[layer - 1]
            if mask is not None:
                with np.errstate(invalid="ignore"):
                    d_x = d_x * np.where(mask, dtype.type(1.0 / (1.0 - ws.dropout)), dtype.type(0))
        d_layer_out = d_x
    grad_x = d_layer_out.transpose(1, 0, 2) if ws.batch_first else d_layer_out
    return np.ascontiguousarray(grad_x), grad_h0, grad_c0, grad_params
