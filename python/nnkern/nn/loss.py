"""Losses: ``loss = crit(pred, target)`` returns a Python float; ``crit.backward()`` the gradient of ``pred``."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from .._arrays import as_array


class _Loss:
    def __init__(self) -> None:
        self._saved: Any = None

    def _take(self) -> Any:
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called without a forward before it "
                               "(or twice for one forward)")
        saved, self._saved = self._saved, None
        return saved


class CrossEntropyLoss(_Loss):
    """Mean cross-entropy of logits (N, C) and integer targets (N,); ``label_smoothing`` as in PyTorch."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def __call__(self, pred: Any, target: Any) -> float:
        loss = F.cross_entropy(pred, target)
        eps = self.label_smoothing
        logp = None
        if eps:
            # (1 - eps) * NLL + eps * mean over classes of -log p
            logp = F.log_softmax(pred, 1)
            loss = (1 - eps) * loss - eps * logp.mean(axis=1).mean()
        self._saved = (pred, target, logp)
        return float(loss)

    def backward(self) -> Any:
        pred, target, logp = self._take()
        one = np.ones((), dtype=np.asarray(pred).dtype)
        eps = self.label_smoothing
        grad = F.cross_entropy_backward(one * (1 - eps), pred, target)
        if eps:
            n, c = logp.shape
            # d/dlogits of -mean(logp) per row: softmax - 1/C, averaged over the batch
            grad = grad + eps * (np.exp(logp) - 1.0 / c) / max(n, 1)
        return grad.astype(np.asarray(pred).dtype, copy=False)


class MSELoss(_Loss):
    """Mean squared error ``mean((pred - target)**2)``."""

    def __call__(self, pred: Any, target: Any) -> float:
        pred = as_array(pred, "pred", "MSELoss")
        target = as_array(target, "target", "MSELoss")
        if pred.shape != target.shape:
            raise ValueError(f"MSELoss: pred and target must have one shape, got {pred.shape} and {target.shape}")
        diff = pred - target
        self._saved = diff
        return float((diff * diff).mean())

    def backward(self) -> Any:
        diff = self._take()
        return diff * diff.dtype.type(2.0 / max(diff.size, 1))


__all__ = ["CrossEntropyLoss", "MSELoss"]
