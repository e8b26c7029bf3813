"""Small reference models built from ``nnkern.nn``: LeNet-5, a ResNet for 32x32 inputs, a sequence classifier."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import nn
from .nn.layers import Seed, _rng


class LeNet5(nn.Sequential):
    """LeNet-5 for 1x32x32 inputs (ReLU and max pooling, as it is usually trained today)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, *, seed: Seed = None, dtype=np.float32):
        rng = _rng(seed)
        super().__init__(
            nn.Conv2d(in_channels, 6, 5, seed=rng, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, seed=rng, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120, seed=rng, dtype=dtype), nn.ReLU(),
            nn.Linear(120, 84, seed=rng, dtype=dtype), nn.ReLU(),
            nn.Linear(84, num_classes, seed=rng, dtype=dtype),
        )


def basic_block(in_ch: int, out_ch: int, stride: int, rng: np.random.Generator, dtype) -> nn.Module:
    """conv3x3-BN-ReLU-conv3x3-BN plus a skip (a 1x1 projection where the shape changes), then ReLU."""
    block = nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False, seed=rng, dtype=dtype), nn.BatchNorm2d(out_ch, dtype=dtype),
        nn.ReLU(),
        nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False, seed=rng, dtype=dtype), nn.BatchNorm2d(out_ch, dtype=dtype),
    )
    shortcut = None
    if stride != 1 or in_ch != out_ch:
        shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False, seed=rng, dtype=dtype),
                                 nn.BatchNorm2d(out_ch, dtype=dtype))
    return nn.Sequential(nn.Residual(block, shortcut), nn.ReLU())


class ResNet(nn.Sequential):
    """A small ResNet for 32x32 inputs: a 3x3 stem, stages of basic blocks (stride 2 between stages), global pool."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: Sequence[int] = (16, 32, 64),
                 blocks_per_stage: int = 1, *, seed: Seed = None, dtype=np.float32):
        rng = _rng(seed)
        layers: list = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False, seed=rng, dtype=dtype),
                        nn.BatchNorm2d(widths[0], dtype=dtype), nn.ReLU()]
        ch = widths[0]
        for stage, width in enumerate(widths):
            for b in range(blocks_per_stage):
                layers.append(basic_block(ch, width, 2 if stage > 0 and b == 0 else 1, rng, dtype))
                ch = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, num_classes, seed=rng, dtype=dtype)]
        super().__init__(*layers)


class SequenceClassifier(nn.Module):
    """An LSTM or GRU over (N, T, features) (batch first) and a linear layer on the last step's output."""

    def __init__(self, input_size: int, hidden_size: int, num_classes: int, cell: str = "lstm", num_layers: int = 1,
                 bidirectional: bool = False, *, seed: Seed = None, dtype=np.float32):
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"SequenceClassifier: cell must be 'lstm' or 'gru', got {cell!r}")
        rng = _rng(seed)
        cls = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = cls(input_size, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional,
                       seed=rng, dtype=dtype)
        self.fc = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes, seed=rng, dtype=dtype)

    def forward(self, x: Any) -> Any:
        out, _ = self.rnn(x)
        self._save(out_shape=out.shape, dtype=out.dtype)
        return self.fc(out[:, -1])

    def backward(self, grad_output: Any) -> Any:
        s = self._take_saved()
        g_last = self.fc.backward(grad_output)
        g_out = np.zeros(s["out_shape"], dtype=s["dtype"])
        g_out[:, -1] = g_last
        return self.rnn.backward(g_out)


__all__ = ["LeNet5", "ResNet", "SequenceClassifier", "basic_block"]
