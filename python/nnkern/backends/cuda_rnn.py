"""Recurrent cells and whole sequences of the CUDA backend (see cuda_ops.py).

A cell is GEMMs (the input and hidden projections, biases fused) and one
fused pointwise kernel (csrc/cuda/kernels/rnn.cuh); its backward is the
pointwise backward kernel and GEMMs for the input, state and weight
gradients. A sequence follows numpy_ref/rnn.py step by step: per layer and
direction, the input projection of all time steps is one GEMM, the host loops
over time launching the hidden projection and the step kernel, and in the
backward the weight gradients and the gradient of the layer input are GEMMs
over all steps after the loop. States are kept in time order: ``hprev[t]``
(and ``cprev[t]``) is the state fed into time ``t``, written by the step that
produced it, so the hidden-weight gradient is one GEMM over ``hprev``.
The workspaces are private to this backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ._cuda_common import at, f64, gemm
from ._device import Device
from .numpy_ref.counter_rng import derive, key as rng_key, threshold as rng_threshold

_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1, "tanh": 1, "relu": 1}


@dataclass
class _CellWS:
    kind: str                  # "tanh", "relu", "lstm" or "gru"
    x: Any
    h: Any
    w_ih: Any
    w_hh: Any
    b_ih: Any
    b_hh: Any
    gates: Any                 # activated gates (Elman: the output h')
    c: Any = None              # lstm: c_prev
    tanh_c: Any = None         # lstm: tanh(c')
    ghn: Any = None            # gru: W_hn h + b_hn


@dataclass
class _DirWS:
    gates: Any                 # (T, N, G): activated gates (Elman: pre-activations, unused)
    hprev: Any                 # (T, N, H): the hidden state fed into each time step
    cprev: Any = None          # lstm: the cell state fed into each time step
    tanh_c: Any = None         # lstm: tanh of the cell state each step produced
    ghn: Any = None            # gru: W_hn h + b_hn of each step


@dataclass
class _SeqWS:
    mode: str
    num_layers: int
    num_dirs: int
    batch_first: bool
    has_biases: bool
    params: list               # contiguous
    h0: Any
    c0: Optional[Any]
    inputs: list               # per layer: its (T, N, I) time-major input (after dropout)
    outputs: list              # per layer: its (T, N, D*H) output (before dropout)
    masks: list                # per layer below the top: dropout keep-mask or None
    dropout: float
    dirs: list                 # per (layer, direction): _DirWS


def add_rnn_ops(dev: Device, ops: dict) -> None:
    lib, stream, c, empty = dev.native, dev.stream, dev.contiguous, dev.empty

    def p(a) -> int:
        return at(dev, a)

    def scratch(shape, dtype):
        return dev.xp().empty(shape, dtype=dtype)

    def proj(a, w, out, bias=None, accumulate=False):
        """out (m, G) (+)= a (m, k) @ w (G, k)^T + bias."""
        g, k = w.shape
        gemm(dev, a, w, out, a.shape[0], g, k, (k, 1, 0), (1, k, 0), g, col_bias=bias, accumulate=accumulate)

    def mm(d, w, out, addend=None, accumulate=False):
        """out (m, k) (+)= d (m, G) @ w (G, k) + addend."""
        g, k = w.shape
        gemm(dev, d, w, out, d.shape[0], k, g, (g, 1, 0), (k, 1, 0), k, addend=addend, accumulate=accumulate)

    def weight_grads(d_gi, d_gh, x, h, b_ih, b_hh):
        """(gw_ih, gw_hh, gb_ih/None, gb_hh/None) from (M, G) pre-activation gradients and (M, *) inputs."""
        res = []
        for d, a in ((d_gi, x), (d_gh, h)):
            m, g = d.shape
            gw = empty((g, a.shape[1]), d.dtype)
            # gw (G, K) = d^T (G, M) @ a (M, K), in a fixed order over the M rows
            gemm(dev, d, a, gw, g, a.shape[1], m, (1, g, 0), (a.shape[1], 1, 0), a.shape[1])
            res.append(gw)
        for d, b in ((d_gi, b_ih), (d_gh, b_hh)):
            gb = None
            if b is not None:
                gb = empty(b.shape, d.dtype)
                lib.channel_sum(f64(d), p(d), p(gb), d.shape[0], d.shape[1], 1, stream())
            res.append(gb)
        return res

    def opt(a):
        return None if a is None else c(a)

    # ---------------------------------------------------------------------------------- cells

    def rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity):
        x, h, w_ih, w_hh, b_ih, b_hh = c(x), c(h), c(w_ih), c(w_hh), opt(b_ih), opt(b_hh)
        n, hid = h.shape
        pre = scratch((n, hid), x.dtype)
        proj(x, w_ih, pre, b_ih)
        proj(h, w_hh, pre, b_hh, accumulate=True)
        h_new = empty((n, hid), x.dtype)
        lib.rnn_step(f64(x), p(pre), p(h_new), hid, 0, n, hid, nonlinearity == "relu", stream())
        return h_new, _CellWS(nonlinearity, x, h, w_ih, w_hh, b_ih, b_hh, h_new)

    def rnn_cell_backward(grad_h, ws):
        g = opt(grad_h)
        n, hid = ws.h.shape
        d = scratch((n, hid), ws.x.dtype)
        lib.rnn_step_backward(f64(ws.x), p(g), hid, 0, p(ws.gates), hid, p(d), n, hid, ws.kind == "relu", stream())
        return cell_input_grads(d, d, ws) + tuple(weight_grads(d, d, ws.x, ws.h, ws.b_ih, ws.b_hh))

    def cell_input_grads(d_gi, d_gh, ws, addend=None):
        gx = empty(ws.x.shape, ws.x.dtype)
        mm(d_gi, ws.w_ih, gx)
        gh = empty(ws.h.shape, ws.x.dtype)
        mm(d_gh, ws.w_hh, gh, addend=addend)
        return gx, gh

    def lstm_cell(x, h, c_prev, w_ih, w_hh, b_ih, b_hh):
        x, h, c_prev, w_ih, w_hh, b_ih, b_hh = c(x), c(h), c(c_prev), c(w_ih), c(w_hh), opt(b_ih), opt(b_hh)
        n, hid = h.shape
        gates = scratch((n, 4 * hid), x.dtype)
        proj(x, w_ih, gates, b_ih)
        proj(h, w_hh, gates, b_hh, accumulate=True)
        h_new, c_new, tanh_c = empty((n, hid), x.dtype), empty((n, hid), x.dtype), scratch((n, hid), x.dtype)
        lib.lstm_step(f64(x), p(gates), p(c_prev), p(c_new), p(tanh_c), p(h_new), hid, 0, n, hid, stream())
        return h_new, c_new, _CellWS("lstm", x, h, w_ih, w_hh, b_ih, b_hh, gates, c=c_prev, tanh_c=tanh_c)

    def lstm_cell_backward(grad_h, grad_c, ws):
        gh, gc = opt(grad_h), opt(grad_c)
        n, hid = ws.h.shape
        d = scratch((n, 4 * hid), ws.x.dtype)
        dc_prev = empty((n, hid), ws.x.dtype)
        lib.lstm_step_backward(f64(ws.x), p(gh), hid, 0, p(gc), p(ws.gates), p(ws.c), p(ws.tanh_c), p(d),
                               p(dc_prev), n, hid, stream())
        gx, gh_prev = cell_input_grads(d, d, ws)
        return (gx, gh_prev, dc_prev) + tuple(weight_grads(d, d, ws.x, ws.h, ws.b_ih, ws.b_hh))

    def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
        x, h, w_ih, w_hh, b_ih, b_hh = c(x), c(h), c(w_ih), c(w_hh), opt(b_ih), opt(b_hh)
        n, hid = h.shape
        gi, gh = scratch((n, 3 * hid), x.dtype), scratch((n, 3 * hid), x.dtype)
        proj(x, w_ih, gi, b_ih)
        proj(h, w_hh, gh, b_hh)
        ghn = scratch((n, hid), x.dtype)
        h_new = empty((n, hid), x.dtype)
        lib.gru_step(f64(x), p(gi), p(gh), p(h), p(ghn), p(h_new), hid, 0, n, hid, stream())
        return h_new, _CellWS("gru", x, h, w_ih, w_hh, b_ih, b_hh, gi, ghn=ghn)

    def gru_cell_backward(grad_h, ws):
        g = opt(grad_h)
        n, hid = ws.h.shape
        d_gi, d_gh = scratch((n, 3 * hid), ws.x.dtype), scratch((n, 3 * hid), ws.x.dtype)
        dh_direct = scratch((n, hid), ws.x.dtype)
        lib.gru_step_backward(f64(ws.x), p(g), hid, 0, p(ws.gates), p(ws.ghn), p(ws.h), p(d_gi), p(d_gh),
                              p(dh_direct), n, hid, stream())
        return cell_input_grads(d_gi, d_gh, ws, addend=dh_direct) + \
            tuple(weight_grads(d_gi, d_gh, ws.x, ws.h, ws.b_ih, ws.b_hh))

    # ---------------------------------------------------------------------------------- sequences

    def layer_params(params, has_biases, num_dirs, layer, d):
        per = 4 if has_biases else 2
        base = (layer * num_dirs + d) * per
        if has_biases:
            return params[base], params[base + 1], params[base + 2], params[base + 3]
        return params[base], params[base + 1], None, None

    def time_steps(t_len, reverse):
        return list(range(t_len - 1, -1, -1) if reverse else range(t_len))

    def run_direction(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, out, d, h_last, c_last):
        """One layer, one direction over the time-major contiguous x (T, N, I); writes the states into the
        column block d of out (T, N, D*H) and the final ones into h_last / c_last."""
        t_len, n, i_size = x.shape
        hid = w_hh.shape[1]
        ld = out.shape[2]
        dt = x.dtype
        gates = scratch((t_len, n, w_ih.shape[0]), dt)
        # the input projection of every step in one GEMM; b_hh goes with the hidden projection
        proj(x.reshape(t_len * n, i_size), w_ih, gates.reshape(t_len * n, w_ih.shape[0]), b_ih)
        ws = _DirWS(gates, scratch((t_len, n, hid), dt))
        steps = time_steps(t_len, reverse)
        if not steps:
            h_last[...] = h0
            if c_last is not None:
                c_last[...] = c0
            return ws
        ws.hprev[steps[0]] = h0
        if mode == "lstm":
            ws.cprev, ws.tanh_c = scratch((t_len, n, hid), dt), scratch((t_len, n, hid), dt)
            ws.cprev[steps[0]] = c0
        elif mode == "gru":
            ws.ghn = scratch((t_len, n, hid), dt)
            gh = scratch((n, 3 * hid), dt)
        for s, t in enumerate(steps):
            last = s == len(steps) - 1
            h_next = h_last if last else ws.hprev[steps[s + 1]]
            h_out = out[t, :, d * hid:(d + 1) * hid]
            if mode == "lstm":
                proj(ws.hprev[t], w_hh, gates[t], b_hh, accumulate=True)
                c_next = c_last if last else ws.cprev[steps[s + 1]]
                lib.lstm_step(f64(x), p(gates[t]), p(ws.cprev[t]), p(c_next), p(ws.tanh_c[t]), p(h_out), ld,
                              p(h_next), n, hid, stream())
            elif mode == "gru":
                proj(ws.hprev[t], w_hh, gh, b_hh)
                lib.gru_step(f64(x), p(gates[t]), p(gh), p(ws.hprev[t]), p(ws.ghn[t]), p(h_out), ld, p(h_next), n,
                             hid, stream())
            else:
                proj(ws.hprev[t], w_hh, gates[t], b_hh, accumulate=True)
                lib.rnn_step(f64(x), p(gates[t]), p(h_out), ld, p(h_next), n, hid, mode == "rnn_relu", stream())
        return ws

    def rnn_seq(mode, x, h0, c0, params, num_layers, bidirectional, batch_first, dropout, training, has_biases,
                seed):
        num_dirs = 2 if bidirectional else 1
        hid = h0.shape[2]
        dt = x.dtype
        layer_in = c(x.transpose(1, 0, 2)) if batch_first else c(x)
        t_len, n = layer_in.shape[0], layer_in.shape[1]
        h0, c0 = c(h0), opt(c0)
        params = [c(a) for a in params]
        use_dropout = bool(training) and dropout > 0
        h_n = empty((num_layers * num_dirs, n, hid), dt)
        c_n = empty(h_n.shape, dt) if mode == "lstm" else None
        inputs, outputs, masks, dirs = [], [], [], []
        for layer in range(num_layers):
            out = empty((t_len, n, num_dirs * hid), dt)
            for d in range(num_dirs):
                k = layer * num_dirs + d
                w_ih, w_hh, b_ih, b_hh = layer_params(params, has_biases, num_dirs, layer, d)
                dirs.append(run_direction(mode, layer_in, h0[k], None if c0 is None else c0[k], w_ih, w_hh, b_ih,
                                          b_hh, d == 1, out, d, h_n[k], None if c_n is None else c_n[k]))
            inputs.append(layer_in)
            outputs.append(out)
            if layer < num_layers - 1:
                mask = None
                if use_dropout:
                    mask = scratch(out.shape, bool)
                    layer_in = scratch(out.shape, dt)
                    lib.dropout(f64(out), p(out), p(layer_in), p(mask), out.size, rng_key(derive(seed, layer)),
                                rng_threshold(dropout), 1.0 / (1.0 - dropout), stream())
                else:
                    layer_in = out
                masks.append(mask)
        output = outputs[-1]
        if batch_first:
            output = dev.xp().ascontiguousarray(output.transpose(1, 0, 2))
        ws = _SeqWS(mode, num_layers, num_dirs, bool(batch_first), bool(has_biases), params, h0, c0, inputs,
                    outputs, masks, float(dropout) if use_dropout else 0.0, dirs)
        return output, h_n, c_n, ws

    def backward_direction(mode, dws, x, out, w_ih, w_hh, reverse, d, d_out, dh, dc, grad_h0, grad_c0):
        """Backprop through time for one layer and direction; returns (d_gi, d_gh) as (T*N, G)."""
        t_len, n = x.shape[0], x.shape[1]
        hid = w_hh.shape[1]
        ld = out.shape[2]
        dt = x.dtype
        g_size = w_hh.shape[0]
        d_gi = scratch((t_len, n, g_size), dt)
        d_gh = scratch((t_len, n, g_size), dt) if mode == "gru" else d_gi
        steps = time_steps(t_len, not reverse)
        if not steps:
            grad_h0[...] = 0 if dh is None else dh
            if grad_c0 is not None:
                grad_c0[...] = 0 if dc is None else dc
        dh_buf, dc_buf = scratch((n, hid), dt), scratch((n, hid), dt)
        dh_direct = scratch((n, hid), dt) if mode == "gru" else None
        for s, t in enumerate(steps):
            last = s == len(steps) - 1
            dh_target = grad_h0 if last else dh_buf
            d_out_t = None if d_out is None else d_out[t, :, d * hid:(d + 1) * hid]
            if mode == "lstm":
                dc_target = grad_c0 if last else dc_buf
                lib.lstm_step_backward(f64(x), p(d_out_t), ld, p(dh), p(dc), p(dws.gates[t]), p(dws.cprev[t]),
                                       p(dws.tanh_c[t]), p(d_gi[t]), p(dc_target), n, hid, stream())
                dc = dc_target
                mm(d_gi[t], w_hh, dh_target)
            elif mode == "gru":
                lib.gru_step_backward(f64(x), p(d_out_t), ld, p(dh), p(dws.gates[t]), p(dws.ghn[t]),
                                      p(dws.hprev[t]), p(d_gi[t]), p(d_gh[t]), p(dh_direct), n, hid, stream())
                mm(d_gh[t], w_hh, dh_target, addend=dh_direct)
            else:
                lib.rnn_step_backward(f64(x), p(d_out_t), ld, p(dh), p(out[t, :, d * hid:(d + 1) * hid]), ld,
                                      p(d_gi[t]), n, hid, mode == "rnn_relu", stream())
                mm(d_gi[t], w_hh, dh_target)
            dh = dh_target
        m = t_len * n
        return d_gi.reshape(m, g_size), d_gh.reshape(m, g_size)

    def rnn_seq_backward(grad_output, grad_h_n, grad_c_n, ws):
        mode, num_dirs = ws.mode, ws.num_dirs
        top = ws.outputs[-1]
        dt = top.dtype
        t_len, n, hid = top.shape[0], top.shape[1], ws.h0.shape[2]
        d_layer_out = None
        if grad_output is not None:
            d_layer_out = c(grad_output.transpose(1, 0, 2)) if ws.batch_first else c(grad_output)
        grad_h_n, grad_c_n = opt(grad_h_n), opt(grad_c_n)
        grad_h0 = empty(ws.h0.shape, dt)
        grad_c0 = empty(ws.c0.shape, dt) if mode == "lstm" else None
        per = 4 if ws.has_biases else 2
        grad_params: list = [None] * len(ws.params)
        for layer in range(ws.num_layers - 1, -1, -1):
            x, out = ws.inputs[layer], ws.outputs[layer]
            i_size = x.shape[2]
            d_x = (empty if layer == 0 else scratch)((t_len, n, i_size), dt)
            for d in range(num_dirs):
                k = layer * num_dirs + d
                w_ih, w_hh, b_ih, b_hh = layer_params(ws.params, ws.has_biases, num_dirs, layer, d)
                dws = ws.dirs[k]
                d_gi, d_gh = backward_direction(
                    mode, dws, x, out, w_ih, w_hh, d == 1, d, d_layer_out,
                    None if grad_h_n is None else grad_h_n[k], None if grad_c_n is None else grad_c_n[k],
                    grad_h0[k], None if grad_c0 is None else grad_c0[k])
                grad_params[k * per:(k + 1) * per] = weight_grads(
                    d_gi, d_gh, x.reshape(t_len * n, i_size), dws.hprev.reshape(t_len * n, hid), b_ih, b_hh)[:per]
                # d_x (T*N, I) = the sum over directions of d_gi @ w_ih
                mm(d_gi, w_ih, d_x.reshape(t_len * n, i_size), accumulate=d == 1)
            if layer > 0 and ws.masks[layer - 1] is not None:
                dropped = scratch(d_x.shape, dt)
                lib.dropout_backward(f64(d_x), p(d_x), p(ws.masks[layer - 1]), p(dropped), d_x.size,
                                     1.0 / (1.0 - ws.dropout), stream())
                d_x = dropped
            d_layer_out = d_x
        grad_x = d_layer_out
        if ws.batch_first:
            grad_x = dev.xp().ascontiguousarray(grad_x.transpose(1, 0, 2))
        return grad_x, grad_h0, grad_c0, grad_params

    ops.update(rnn_cell=rnn_cell, rnn_cell_backward=rnn_cell_backward, lstm_cell=lstm_cell,
               lstm_cell_backward=lstm_cell_backward, gru_cell=gru_cell, gru_cell_backward=gru_cell_backward,
               rnn_seq=rnn_seq, rnn_seq_backward=rnn_seq_backward)
