"""Finite-difference checks of every backward, on the float64 NumPy backend.

For a scalar ``L = sum_o <out_o, G_o>`` with random upstream ``G``, the
analytic gradient of each input is checked along random directions ``v``
against the central difference ``(L(x + e v) - L(x - e v)) / 2e``.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from helpers import differentiable, upstream
from op_registry import OPS

EPS = 1e-6
DIRECTIONS = 3

CASES = [pytest.param(op, i, id=f"{op.name}-{s.desc}")
         for op in OPS if op.backward is not None
         for i, s in enumerate(op.samples(np.random.default_rng(0)))]


@pytest.mark.parametrize("op,index", CASES)
def test_finite_differences(op, index):
    rng = np.random.default_rng(zlib.crc32(f"fd{op.name}{index}".encode()))
    sample = op.samples(rng)[index]
    inputs = {k: np.array(v) for k, v in sample.inputs.items()}
    outs, saved = op.forward(inputs, sample.params, "numpy")
    which = differentiable(op, sample, outs)
    G = upstream(rng, outs, which)

    def loss(inp):
        o, _ = op.forward(inp, sample.params, "numpy")
        return sum(float(np.sum(np.asarray(o[i]) * G[i])) for i in which)

    grads = op.backward(inputs, sample.params, outs, saved, G, "numpy")
    names = op.grad_inputs(sample)
    assert set(grads) == set(names), f"backward returned {sorted(grads)}, expected {sorted(names)}"
    for name in names:
        if inputs[name].size == 0:
            continue
        for _ in range(DIRECTIONS):
            v = rng.standard_normal(inputs[name].shape)
            plus = dict(inputs, **{name: inputs[name] + EPS * v})
            minus = dict(inputs, **{name: inputs[name] - EPS * v})
            fd = (loss(plus) - loss(minus)) / (2 * EPS)
            analytic = float(np.sum(grads[name] * v))
            assert abs(fd - analytic) <= 1e-6 * max(1.0, abs(analytic)), \
                f"{op.name} d/d{name}: finite difference {fd!r} vs analytic {analytic!r}"
