"""The layers of ``nnkern.nn``: thin wrappers over ``nnkern.functional``, PyTorch's names and defaults."""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple, Union

import numpy as np

from .. import functional as F
from .module import Module, Parameter, as_optional, fusion_enabled

IntOrPair = Union[int, Tuple[int, int]]
Seed = Union[None, int, np.random.Generator]


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _uniform(rng: np.random.Generator, shape: tuple, bound: float, dtype) -> Parameter:
    return Parameter(rng.uniform(-bound, bound, shape).astype(dtype))


def _pair(v: IntOrPair) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ convolution

class Conv2d(Module):
    """2-D convolution layer, as ``torch.nn.Conv2d`` (zeros padding).

    Weights are drawn as PyTorch does (Kaiming-uniform with a = sqrt(5): U(-b, b),
    b = 1/sqrt(fan_in), bias likewise); ``seed`` (an int or a Generator) makes
    them reproducible.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                 padding: Union[IntOrPair, str] = 0, dilation: IntOrPair = 1, groups: int = 1, bias: bool = True,
                 *, seed: Seed = None, dtype=np.float32):
        super().__init__()
        kh, kw = _pair(kernel_size)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        rng = _rng(seed)
        bound = 1 / math.sqrt(in_channels // groups * kh * kw)
        self.weight = _uniform(rng, (out_channels, in_channels // groups, kh, kw), bound, dtype)
        self.bias = _uniform(rng, (out_channels,), bound, dtype) if bias else None

    def forward(self, x: Any) -> Any:
        self._save(x=x)
        return F.conv2d(x, self.weight.data, as_optional(self.bias), self.stride, self.padding, self.dilation,
                        self.groups)

    def _fusable(self, with_residual: bool) -> bool:
        return True

    def _forward_fused(self, x: Any, residual: Any = None) -> Any:
        self._save(x=x)
        return F.conv2d(x, self.weight.data, as_optional(self.bias), self.stride, self.padding, self.dilation,
                        self.groups, activation="relu", residual=residual)

    def backward(self, grad_output: Any) -> Any:
        x = self._take_saved()["x"]
        gx, gw, gb = F.conv2d_backward(grad_output, x, self.weight.data, self.stride, self.padding, self.dilation,
                                       self.groups, (True, True, self.bias is not None))
        self.weight.accumulate(gw)
        if self.bias is not None:
            self.bias.accumulate(gb)
        return gx

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}")


class Conv1d(Module):
    """1-D convolution layer, as ``torch.nn.Conv1d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: Union[int, str] = 0, dilation: int = 1, groups: int = 1, bias: bool = True,
                 *, seed: Seed = None, dtype=np.float32):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv1d: groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        rng = _rng(seed)
        bound = 1 / math.sqrt(in_channels // groups * kernel_size)
        self.weight = _uniform(rng, (out_channels, in_channels // groups, kernel_size), bound, dtype)
        self.bias = _uniform(rng, (out_channels,), bound, dtype) if bias else None

    def forward(self, x: Any) -> Any:
        self._save(x=x)
        return F.conv1d(x, self.weight.data, as_optional(self.bias), self.stride, self.padding, self.dilation,
                        self.groups)

    def backward(self, grad_output: Any) -> Any:
        x = self._take_saved()["x"]
        gx, gw, gb = F.conv1d_backward(grad_output, x, self.weight.data, self.stride, self.padding, self.dilation,
                                       self.groups, (True, True, self.bias is not None))
        self.weight.accumulate(gw)
        if self.bias is not None:
            self.bias.accumulate(gb)
        return gx


class Linear(Module):
    """``y = x W^T + b``, as ``torch.nn.Linear`` (same initialization)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, seed: Seed = None,
                 dtype=np.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        rng = _rng(seed)
        bound = 1 / math.sqrt(in_features) if in_features else 0.0
        self.weight = _uniform(rng, (out_features, in_features), bound, dtype)
        self.bias = _uniform(rng, (out_features,), bound, dtype) if bias else None

    def forward(self, x: Any) -> Any:
        self._save(x=x)
        return F.linear(x, self.weight.data, as_optional(self.bias))

    def backward(self, grad_output: Any) -> Any:
        x = self._take_saved()["x"]
        gx, gw, gb = F.linear_backward(grad_output, x, self.weight.data, (True, True, self.bias is not None))
        self.weight.accumulate(gw)
        if self.bias is not None:
            self.bias.accumulate(gb)
        return gx

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


# ------------------------------------------------------------------------------------------------ pooling

class MaxPool2d(Module):
    """2-D max pooling, as ``torch.nn.MaxPool2d``."""

    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
                 dilation: IntOrPair = 1, ceil_mode: bool = False):
        super().__init__()
        self.args = (kernel_size, stride, padding, dilation, ceil_mode)

    def forward(self, x: Any) -> Any:
        out, idx = F.max_pool2d(x, *self.args, return_indices=True)
        self._save(x=x, indices=idx)
        return out

    def backward(self, grad_output: Any) -> Any:
        s = self._take_saved()
        return F.max_pool2d_backward(grad_output, s["x"], s["indices"], *self.args)


class AvgPool2d(Module):
    """2-D average pooling, as ``torch.nn.AvgPool2d``."""

    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True):
        super().__init__()
        self.args = (kernel_size, stride, padding, ceil_mode, count_include_pad)

    def forward(self, x: Any) -> Any:
        self._save(x=x)
        return F.avg_pool2d(x, *self.args)

    def backward(self, grad_output: Any) -> Any:
        return F.avg_pool2d_backward(grad_output, self._take_saved()["x"], *self.args)


class AdaptiveAvgPool2d(Module):
    """Adaptive 2-D average pooling, as ``torch.nn.AdaptiveAvgPool2d``."""

    def __init__(self, output_size: Any):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Any) -> Any:
        self._save(x=x)
        return F.adaptive_avg_pool2d(x, self.output_size)

    def backward(self, grad_output: Any) -> Any:
        return F.adaptive_avg_pool2d_backward(grad_output, self._take_saved()["x"])


# ------------------------------------------------------------------------------------------------ normalization

class _BatchNorm(Module):
    _ranks: Tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, dtype=np.float32):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter(np.ones(num_features, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def forward(self, x: Any) -> Any:
        return self._forward(x, None, None)

    def _fusable(self, with_residual: bool) -> bool:
        return True

    def _forward_fused(self, x: Any, residual: Any = None) -> Any:
        return self._forward(x, "relu", residual)

    def _forward(self, x: Any, activation: Optional[str], residual: Any) -> Any:
        if np.ndim(x) not in self._ranks:
            raise ValueError(f"{type(self).__name__}: expected a {' or '.join(f'{r}-D' for r in self._ranks)} "
                             f"input, got shape {tuple(np.shape(x))}")
        use_batch_stats = self.training or not self.track_running_stats
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.set_buffer("num_batches_tracked", np.array(self.num_batches_tracked + 1, dtype=np.int64))
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        running = (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
        out, mean, invstd = F.batch_norm(x, running[0], running[1], as_optional(self.weight), as_optional(self.bias),
                                         use_batch_stats, momentum, self.eps, activation=activation,
                                         residual=residual, return_stats=True)
        self._save(x=x, mean=mean, invstd=invstd, training=use_batch_stats)
        return out

    def backward(self, grad_output: Any) -> Any:
        s = self._take_saved()
        gx, gw, gb = F.batch_norm_backward(grad_output, s["x"], as_optional(self.weight), s["mean"], s["invstd"],
                                           s["training"], (True, self.affine, self.affine))
        if self.affine:
            self.weight.accumulate(gw)
            self.bias.accumulate(gb)
        return gx

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class BatchNorm1d(_BatchNorm):
    """Batch normalization over (N, C) or (N, C, L), as ``torch.nn.BatchNorm1d``."""

    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization over (N, C, H, W), as ``torch.nn.BatchNorm2d``."""

    _ranks = (4,)


# ------------------------------------------------------------------------------------------------ pointwise

class _Activation(Module):
    _fn = staticmethod(F.relu)
    _bwd = staticmethod(F.relu_backward)

    def forward(self, x: Any) -> Any:
        out = self._fn(x)
        self._save(out=out)
        return out

    def backward(self, grad_output: Any) -> Any:
        return self._bwd(grad_output, self._take_saved()["out"])


class ReLU(_Activation):
    """``max(x, 0)``."""


class Sigmoid(_Activation):
    """``1 / (1 + exp(-x))``."""

    _fn = staticmethod(F.sigmoid)
    _bwd = staticmethod(F.sigmoid_backward)


class Tanh(_Activation):
    """``tanh(x)``."""

    _fn = staticmethod(F.tanh)
    _bwd = staticmethod(F.tanh_backward)


class Flatten(Module):
    """Flatten dimensions ``start_dim..end_dim`` into one, as ``torch.nn.Flatten``."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Any) -> Any:
        shape = tuple(x.shape)
        start = self.start_dim % len(shape)
        end = self.end_dim % len(shape)
        self._save(shape=shape)
        return x.reshape(shape[:start] + (-1,) + shape[end + 1:]) if shape else x

    def backward(self, grad_output: Any) -> Any:
        return grad_output.reshape(self._take_saved()["shape"])


class Dropout(Module):
    """Zero elements with probability ``p`` in training mode (scaling the rest by 1/(1-p)), as ``torch.nn.Dropout``.

    ``seed`` (an int or a Generator) makes the sequence of masks reproducible.
    """

    def __init__(self, p: float = 0.5, *, seed: Seed = None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p
        self._seeds = _rng(seed)

    def forward(self, x: Any) -> Any:
        seed = int(self._seeds.integers(0, 2**63 - 1))
        out, mask = F.dropout(x, self.p, self.training, seed=seed, return_mask=True)
        self._save(mask=mask)
        return out

    def backward(self, grad_output: Any) -> Any:
        mask = self._take_saved()["mask"]
        return F.dropout_backward(grad_output, mask, self.p if self.training else 0.0)


# ------------------------------------------------------------------------------------------------ containers

class Sequential(Module):
    """Modules applied in order; ``backward`` runs them in reverse. Children are named ``0``, ``1``, ..."""

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: argument {i} must be a Module, got {type(m).__name__}")
            self._modules[str(i)] = m

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x: Any) -> Any:
        return self._run(x, None, fused_tail=False)

    def _fusable(self, with_residual: bool) -> bool:
        mods = list(self._modules.values())
        return bool(mods) and mods[-1]._fusable(with_residual)

    def _forward_fused(self, x: Any, residual: Any = None) -> Any:
        return self._run(x, residual, fused_tail=True)

    def _run(self, x: Any, residual: Any, fused_tail: bool) -> Any:
        """Apply the children in order; with fusion on, a child followed by a ``ReLU`` that
        can fuse it runs as one op and the ``ReLU`` only keeps the output for its backward."""
        mods = list(self._modules.values())
        fuse = fusion_enabled()
        i = 0
        while i < len(mods):
            m = mods[i]
            if fused_tail and i == len(mods) - 1:
                x = m._forward_fused(x, residual)
            elif fuse and i + 1 < len(mods) and type(mods[i + 1]) is ReLU and m._fusable(False):
                x = m._forward_fused(x)
                mods[i + 1]._save(out=x)
                i += 1
            else:
                x = m(x)
            i += 1
        return x

    def backward(self, grad_output: Any) -> Any:
        for m in reversed(list(self._modules.values())):
            grad_output = m.backward(grad_output)
        return grad_output


class Identity(Module):
    """Returns its input."""

    def forward(self, x: Any) -> Any:
        return x

    def backward(self, grad_output: Any) -> Any:
        return grad_output


class Residual(Module):
    """A skip connection ``y = block(x) + shortcut(x)`` (identity shortcut when ``None``)."""

    def __init__(self, block: Module, shortcut: Optional[Module] = None):
        super().__init__()
        self.block = block
        self.shortcut = shortcut

    def forward(self, x: Any) -> Any:
        y = self.block(x)
        skip = x if self.shortcut is None else self.shortcut(x)
        self._save(used=True)
        return y + skip

    def _fusable(self, with_residual: bool) -> bool:
        # the skip is added by the block's last layer, in its fused epilogue
        return not with_residual and self.block._fusable(True)

    def _forward_fused(self, x: Any, residual: Any = None) -> Any:
        skip = x if self.shortcut is None else self.shortcut(x)
        y = self.block._forward_fused(x, skip)
        self._save(used=True)
        return y

    def backward(self, grad_output: Any) -> Any:
        self._take_saved()
        gx = self.block.backward(grad_output)
        return gx + (grad_output if self.shortcut is None else self.shortcut.backward(grad_output))


__all__ = ["Conv1d", "Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d",
           "BatchNorm2d", "ReLU", "Sigmoid", "Tanh", "Flatten", "Dropout", "Sequential", "Identity", "Residual"]
