"""Optimizers with torch.optim's update rules: ``SGD``, ``Adam``, ``AdamW``."""
from __future__ import annotations

from typing import Iterable, Tuple

import numpy as np

from .nn.module import Parameter


class Optimizer:
    def __init__(self, params: Iterable[Parameter], lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not all(isinstance(p, Parameter) for p in self.params):
            raise TypeError(f"{type(self).__name__}: params must be nnkern.nn.Parameter objects")
        if lr < 0:
            raise ValueError(f"{type(self).__name__}: lr must be >= 0, got {lr}")
        self.lr = lr
        self.state: dict = {}

    def zero_grad(self) -> None:
        """Reset every gradient to ``None`` (as PyTorch's default)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self._update(i, p, p.grad.astype(p.data.dtype, copy=False))

    def _update(self, i: int, p: Parameter, g) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening-free, ``weight_decay`` and Nesterov, as torch.optim.SGD."""

    def __init__(self, params: Iterable[Parameter], lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: Nesterov momentum requires a momentum > 0")
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov

    def _update(self, i, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        if self.momentum:
            buf = self.state.get(i)
            buf = g.copy() if buf is None else buf * self.momentum + g
            self.state[i] = buf
            g = g + self.momentum * buf if self.nesterov else buf
        p.data -= (self.lr * g).astype(p.data.dtype, copy=False)


class Adam(Optimizer):
    """Adam (L2 ``weight_decay`` added to the gradient), as torch.optim.Adam."""

    decoupled = False

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

    def _update(self, i, p, g):
        b1, b2 = self.betas
        if self.weight_decay:
            if self.decoupled:
                p.data *= p.data.dtype.type(1 - self.lr * self.weight_decay)
            else:
                g = g + self.weight_decay * p.data
        st = self.state.setdefault(i, {"step": 0, "m": np.zeros_like(p.data), "v": np.zeros_like(p.data)})
        st["step"] += 1
        t = st["step"]
        st["m"] = b1 * st["m"] + (1 - b1) * g
        st["v"] = b2 * st["v"] + (1 - b2) * g * g
        bias1 = 1 - b1 ** t
        bias2 = 1 - b2 ** t
        denom = np.sqrt(st["v"]) / np.sqrt(bias2) + self.eps
        p.data -= ((self.lr / bias1) * st["m"] / denom).astype(p.data.dtype, copy=False)


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01), as torch.optim.AdamW."""

    decoupled = True

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]
