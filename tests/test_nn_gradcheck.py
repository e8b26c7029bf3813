"""Every layer's backward (input and parameter gradients) against float64 finite differences; no torch needed."""
from __future__ import annotations

import numpy as np
import pytest

import nnkern.nn as nn
from nnkern import models

f64 = np.float64
EPS = 1e-6

LAYERS = [
    ("conv2d", lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, dtype=f64), (2, 3, 7, 6)),
    ("conv1d", lambda: nn.Conv1d(3, 5, 3, padding=1, dtype=f64), (2, 3, 9)),
    ("linear", lambda: nn.Linear(5, 3, dtype=f64), (4, 5)),
    ("maxpool", lambda: nn.MaxPool2d(3, 2, 1), (2, 3, 9, 8)),
    ("avgpool", lambda: nn.AvgPool2d(2, ceil_mode=True), (2, 3, 7, 7)),
    ("adaptive", lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 3, 7, 8)),
    ("bn2d", lambda: nn.BatchNorm2d(3, dtype=f64), (4, 3, 5, 5)),
    ("bn1d", lambda: nn.BatchNorm1d(4, dtype=f64), (6, 4)),
    ("sigmoid", lambda: nn.Sigmoid(), (3, 7)),
    ("tanh", lambda: nn.Tanh(), (3, 7)),
    ("dropout", lambda: nn.Dropout(0.3, seed=3), (4, 6)),
    ("resnet", lambda: models.ResNet(3, in_channels=2, widths=(4, 6), seed=0, dtype=f64), (2, 2, 8, 8)),
    ("lenet", lambda: models.LeNet5(4, seed=0, dtype=f64), (2, 1, 32, 32)),
    ("lstm classifier", lambda: models.SequenceClassifier(3, 4, 2, "lstm", num_layers=2, bidirectional=True,
                                                          seed=0, dtype=f64), (2, 5, 3)),
    ("gru classifier", lambda: models.SequenceClassifier(3, 4, 2, "gru", seed=0, dtype=f64), (2, 5, 3)),
    ("rnn", lambda: nn.RNN(3, 4, 2, dtype=f64), (5, 2, 3)),
]


def _output(module, x):
    out = module(x)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("make,shape", [c[1:] for c in LAYERS], ids=[c[0] for c in LAYERS])
def test_layer_backward_matches_finite_differences(make, shape, rng):
    module = make()
    if isinstance(module, nn.Dropout):
        module._seeds = np.random.default_rng(3)  # same mask for every evaluation below
    x = rng.standard_normal(shape)
    g = rng.standard_normal(_output(module, x).shape)

    def loss(x_):
        if isinstance(module, nn.Dropout):
            module._seeds = np.random.default_rng(3)
        return float(np.sum(_output(module, x_) * g))

    loss(x)
    module.zero_grad()
    gx = module.backward(g)
    grads = {name: p.grad.copy() for name, p in module.named_parameters()}
    # the batch-norm running statistics move on every forward; they do not enter the training-mode output
    for _ in range(2):
        v = rng.standard_normal(shape)
        fd = (loss(x + EPS * v) - loss(x - EPS * v)) / (2 * EPS)
        assert abs(fd - np.sum(gx * v)) <= 1e-6 * max(1.0, abs(fd)), "grad input"
    for name, p in module.named_parameters():
        v = rng.standard_normal(p.shape)
        base = p.data.copy()
        p.data[...] = base + EPS * v
        up = loss(x)
        p.data[...] = base - EPS * v
        down = loss(x)
        p.data[...] = base
        fd = (up - down) / (2 * EPS)
        assert abs(fd - np.sum(grads[name] * v)) <= 1e-6 * max(1.0, abs(fd)), f"grad of {name}"
