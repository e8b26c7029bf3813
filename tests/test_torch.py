"""The NumPy reference against torch.nn.functional and torch autograd (skipped without torch)."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from helpers import assert_close, differentiable, upstream
from op_registry import OPS

torch = pytest.importorskip("torch")

CASES = [pytest.param(op, i, id=f"{op.name}-{s.desc}")
         for op in OPS if op.torch_forward is not None
         for i, s in enumerate(op.samples(np.random.default_rng(0))) if s.torch_ok]


@pytest.mark.parametrize("op,index", CASES)
def test_numpy_backend_matches_torch(op, index):
    rng = np.random.default_rng(zlib.crc32(f"torch{op.name}{index}".encode()))
    sample = op.samples(rng)[index]
    outs, saved = op.forward(sample.inputs, sample.params, "numpy")
    tensors = {k: torch.tensor(np.array(v), dtype=torch.float64, requires_grad=True) for k, v in sample.inputs.items()}
    t_outs = op.torch_forward(torch, tensors, sample.params)
    for k, (o, t) in enumerate(zip(outs, t_outs)):
        assert_close(o, t.detach().numpy(), 1e-10, f"{op.name} output {k} vs torch")
    if op.backward is None or any(np.size(o) == 0 for o in outs):
        return  # torch's backward refuses empty gradients (e.g. adaptive pooling to 0x0)
    which = differentiable(op, sample, outs)
    G = upstream(rng, outs, which)
    grads = op.backward(sample.inputs, sample.params, outs, saved, G, "numpy")
    names = sorted(grads)
    loss = sum((t_outs[i] * torch.tensor(G[i])).sum() for i in which)
    t_grads = torch.autograd.grad(loss, [tensors[n] for n in names], allow_unused=True)
    for n, tg in zip(names, t_grads):
        ref = np.zeros(sample.inputs[n].shape) if tg is None else tg.numpy()
        assert_close(grads[n], ref, 1e-10, f"{op.backward_op} grad of {n} vs torch")
