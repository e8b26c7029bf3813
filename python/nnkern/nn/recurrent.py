"""RNN / LSTM / GRU layers and cells, with PyTorch's parameter names, shapes and initialization."""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from .. import functional as F
from .layers import Seed, _rng, _uniform
from .module import Module, as_optional

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


class _RNNBase(Module):
    _mode = "RNN"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 nonlinearity: str = "tanh", *, seed: Seed = None, dtype=np.float32):
        super().__init__()
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"{type(self).__name__}: hidden_size and num_layers must be positive, got "
                             f"{hidden_size} and {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bidirectional = bias, batch_first, dropout, bidirectional
        self.nonlinearity = nonlinearity
        rng = _rng(seed)
        self._dropout_seeds = rng
        gates = _GATES[self._mode] * hidden_size
        bound = 1 / math.sqrt(hidden_size)
        dirs = 2 if bidirectional else 1
        self._flat_names = []
        for layer in range(num_layers):
            for d in range(dirs):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                layer_in = input_size if layer == 0 else dirs * hidden_size
                shapes = [("weight_ih", (gates, layer_in)), ("weight_hh", (gates, hidden_size))]
                if bias:
                    shapes += [("bias_ih", (gates,)), ("bias_hh", (gates,))]
                for name, shape in shapes:
                    setattr(self, name + suffix, _uniform(rng, shape, bound, dtype))
                    self._flat_names.append(name + suffix)

    @property
    def _flat_weights(self) -> list:
        return [self._parameters[n].data for n in self._flat_names]

    def _run(self, x: Any, hx: Any) -> tuple:
        kw = dict(num_layers=self.num_layers, bidirectional=self.bidirectional, batch_first=self.batch_first,
                  dropout=self.dropout, training=self.training, has_biases=self.bias, return_workspace=True,
                  seed=int(self._dropout_seeds.integers(0, 2**63 - 1)))
        if self._mode == "LSTM":
            out, (h, c), ws = F.lstm(x, hx, self._flat_weights, **kw)
            self._save(ws=ws, had_hx=hx is not None)
            return out, (h, c)
        if self._mode == "GRU":
            out, h, ws = F.gru(x, hx, self._flat_weights, **kw)
        else:
            out, h, ws = F.rnn(x, hx, self._flat_weights, nonlinearity=self.nonlinearity, **kw)
        self._save(ws=ws, had_hx=hx is not None)
        return out, h

    def forward(self, x: Any, hx: Any = None) -> tuple:
        return self._run(x, hx)

    def _accumulate(self, grads: list) -> None:
        for name, g in zip(self._flat_names, grads):
            self._parameters[name].accumulate(g)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, batch_first={self.batch_first}")


class LSTM(_RNNBase):
    """Multi-layer LSTM, as ``torch.nn.LSTM``: ``forward(x, (h_0, c_0)=None)`` -> ``(output, (h_n, c_n))``."""

    _mode = "LSTM"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 seed: Seed = None, dtype=np.float32):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         seed=seed, dtype=dtype)

    def backward(self, grad_output: Any, grad_h_n: Any = None, grad_c_n: Any = None) -> Any:
        """Gradient of the input, or ``(grad_input, (grad_h_0, grad_c_0))`` when the forward was given a state."""
        s = self._take_saved()
        g = F.lstm_backward(grad_output, grad_h_n, grad_c_n, s["ws"])
        self._accumulate(g.params)
        return (g.input, g.hx) if s["had_hx"] else g.input


class GRU(_RNNBase):
    """Multi-layer GRU, as ``torch.nn.GRU``: ``forward(x, h_0=None)`` -> ``(output, h_n)``."""

    _mode = "GRU"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 seed: Seed = None, dtype=np.float32):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         seed=seed, dtype=dtype)

    def backward(self, grad_output: Any, grad_h_n: Any = None) -> Any:
        """Gradient of the input, or ``(grad_input, grad_h_0)`` when the forward was given a state."""
        s = self._take_saved()
        g = F.gru_backward(grad_output, grad_h_n, s["ws"])
        self._accumulate(g.params)
        return (g.input, g.hx) if s["had_hx"] else g.input


class RNN(_RNNBase):
    """Multi-layer Elman RNN (tanh or relu), as ``torch.nn.RNN``."""

    _mode = "RNN"

    def backward(self, grad_output: Any, grad_h_n: Any = None) -> Any:
        """Gradient of the input, or ``(grad_input, grad_h_0)`` when the forward was given a state."""
        s = self._take_saved()
        g = F.rnn_backward(grad_output, grad_h_n, s["ws"])
        self._accumulate(g.params)
        return (g.input, g.hx) if s["had_hx"] else g.input


class _CellBase(Module):
    _gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, seed: Seed = None,
                 dtype=np.float32):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        rng = _rng(seed)
        bound = 1 / math.sqrt(hidden_size)
        g = self._gates * hidden_size
        self.weight_ih = _uniform(rng, (g, input_size), bound, dtype)
        self.weight_hh = _uniform(rng, (g, hidden_size), bound, dtype)
        self.bias_ih = _uniform(rng, (g,), bound, dtype) if bias else None
        self.bias_hh = _uniform(rng, (g,), bound, dtype) if bias else None

    def _weights(self) -> tuple:
        return self.weight_ih.data, self.weight_hh.data, as_optional(self.bias_ih), as_optional(self.bias_hh)

    def _accumulate(self, g: Any) -> None:
        self.weight_ih.accumulate(g.weight_ih)
        self.weight_hh.accumulate(g.weight_hh)
        if self.bias_ih is not None:
            self.bias_ih.accumulate(g.bias_ih)
            self.bias_hh.accumulate(g.bias_hh)


class RNNCell(_CellBase):
    """One Elman RNN step, as ``torch.nn.RNNCell``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", *,
                 seed: Seed = None, dtype=np.float32):
        super().__init__(input_size, hidden_size, bias, seed=seed, dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, x: Any, hx: Any = None) -> Any:
        h, ws = F.rnn_cell(x, hx, *self._weights(), self.nonlinearity, return_workspace=True)
        self._save(ws=ws)
        return h

    def backward(self, grad_h: Any) -> tuple:
        """``(grad_input, grad_h_prev)``."""
        g = F.rnn_cell_backward(grad_h, self._take_saved()["ws"])
        self._accumulate(g)
        return g.input, g.hidden


class GRUCell(_CellBase):
    """One GRU step, as ``torch.nn.GRUCell``."""

    _gates = 3

    def forward(self, x: Any, hx: Any = None) -> Any:
        h, ws = F.gru_cell(x, hx, *self._weights(), return_workspace=True)
        self._save(ws=ws)
        return h

    def backward(self, grad_h: Any) -> tuple:
        """``(grad_input, grad_h_prev)``."""
        g = F.gru_cell_backward(grad_h, self._take_saved()["ws"])
        self._accumulate(g)
        return g.input, g.hidden


class LSTMCell(_CellBase):
    """One LSTM step, as ``torch.nn.LSTMCell``: ``forward(x, (h, c)=None)`` -> ``(h', c')``."""

    _gates = 4

    def forward(self, x: Any, hx: Optional[tuple] = None) -> tuple:
        (h, c), ws = F.lstm_cell(x, hx, *self._weights(), return_workspace=True)
        self._save(ws=ws)
        return h, c

    def backward(self, grad_h: Any, grad_c: Any = None) -> tuple:
        """``(grad_input, (grad_h_prev, grad_c_prev))``."""
        g = F.lstm_cell_backward(grad_h, grad_c, self._take_saved()["ws"])
        self._accumulate(g)
        return g.input, (g.hidden, g.cell)


__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"]
