"""``Parameter`` and ``Module``: the layer API's base, in the style of ``torch.nn``.

A module's ``forward`` saves what its ``backward`` needs; ``backward(grad)``
returns the gradient of the input and *accumulates* into each parameter's
``.grad``. Modules hold no kernel logic: they call ``nnkern.functional``.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections import OrderedDict
from typing import Any, Iterator, Mapping, Optional

import numpy as np

from .._arrays import as_array, is_device_array


_fusion: contextvars.ContextVar[bool] = contextvars.ContextVar("nnkern_fusion", default=True)


def fusion_enabled() -> bool:
    """Whether containers run a layer and the ReLU after it as one fused op (on by default)."""
    return _fusion.get()


@contextlib.contextmanager
def fusion(enabled: bool) -> Iterator[None]:
    """Turn layer fusion on or off inside a ``with`` block (thread- and task-local).

    With fusion on, ``Sequential`` computes ``Conv2d`` + ``ReLU`` and
    ``BatchNorm`` + ``ReLU`` (and the residual add + ReLU ending a ResNet
    block) in one pass of the fused functional forms; the results, the
    gradients and the module tree are the same as with fusion off.
    """
    token = _fusion.set(bool(enabled))
    try:
        yield
    finally:
        _fusion.reset(token)


class Parameter:
    """A trainable array: ``.data`` and ``.grad`` (``None`` until a backward fills it)."""

    __slots__ = ("data", "grad")

    def __init__(self, data: Any):
        self.data = data if isinstance(data, np.ndarray) or is_device_array(data) else np.asarray(data)
        self.grad: Any = None

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    def __array__(self, dtype=None, copy=None):
        a = self.data
        if is_device_array(a):
            a = a.get()
        return a if dtype is None else a.astype(dtype)

    def accumulate(self, grad: Any) -> None:
        """Add ``grad`` to ``.grad`` (which starts as ``None``)."""
        if grad is None:
            return
        if self.grad is None:
            self.grad = grad.copy()  # never alias an array someone else holds
        else:
            self.grad = self.grad + grad

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Module:
    """Base class of every layer.

    Sub-classes assign ``Parameter``s, buffers (``register_buffer``) and
    sub-modules as attributes; ``state_dict`` names them as PyTorch does.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- attribute registration -------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() first")
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str) -> Any:
        for registry in ("_parameters", "_buffers", "_modules"):
            d = self.__dict__.get(registry)
            if d is not None and name in d:
                return d[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def register_buffer(self, name: str, value: Any) -> None:
        """A non-trainable array saved in the state_dict (e.g. batch-norm running statistics)."""
        self.__dict__.pop(name, None)
        self._buffers[name] = value

    def set_buffer(self, name: str, value: Any) -> None:
        self._buffers[name] = value

    # -- calling ---------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no forward")

    def backward(self, grad_output: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    # -- fusion protocol (used by Sequential and Residual) --------------------------------------------
    def _fusable(self, with_residual: bool) -> bool:
        """Whether :meth:`_forward_fused` can compute ``relu(self(x) [+ residual])`` in one pass."""
        return False

    def _forward_fused(self, x: Any, residual: Any = None) -> Any:
        """``relu(self.forward(x) + residual)`` (residual may be None), saving what ``backward`` needs.

        ``backward`` then takes the gradient w.r.t. the value *before* the ReLU
        (the ReLU module that was fused away applies relu_backward first).
        """
        raise NotImplementedError(f"{type(self).__name__} has no fused forward")

    def _save(self, **saved: Any) -> None:
        object.__setattr__(self, "_saved", saved)

    def _take_saved(self) -> dict:
        """What the last forward saved; a second backward for one forward is an error."""
        saved = self.__dict__.get("_saved")
        if saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called without a forward before it "
                               "(or twice for one forward)")
        object.__setattr__(self, "_saved", None)
        return saved

    # -- traversal -------------------------------------------------------------------------------
    def children(self) -> Iterator["Module"]:
        return iter(self._modules.values())

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for mod_name, m in self.named_modules(prefix):
            for name, p in m._parameters.items():
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters())

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        for mod_name, m in self.named_modules(prefix):
            for name, b in m._buffers.items():
                if b is not None:
                    yield (f"{mod_name}.{name}" if mod_name else name), b

    def zero_grad(self) -> None:
        """Reset every parameter's gradient to ``None`` (as PyTorch's default)."""
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, Any]":
        """Parameters and buffers by PyTorch's names (``0.weight``, ``bn.running_mean``, ...), in its order."""
        out: OrderedDict[str, Any] = OrderedDict()
        self._collect_state(out, "")
        return out

    def _collect_state(self, out: dict, prefix: str) -> None:
        for name, p in self._parameters.items():
            out[prefix + name] = p.data
        for name, b in self._buffers.items():
            if b is not None:
                out[prefix + name] = b
        for name, m in self._modules.items():
            m._collect_state(out, f"{prefix}{name}.")

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Copy ``state`` (any mapping of array-likes, e.g. a PyTorch ``state_dict()``) into this module.

        Values are copied into the existing arrays, keeping their dtype.
        Missing and unexpected keys (with ``strict``) and shape mismatches are
        reported together in one ``RuntimeError`` naming each.
        """
        own = self.state_dict()
        problems = []
        values = {}
        for key, target in own.items():
            if key not in state:
                if strict:
                    problems.append(f"missing key {key!r}")
                continue
            value = state[key]
            if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
                value = value.detach().cpu()
            value = as_array(value, key, "load_state_dict")
            if tuple(value.shape) != tuple(np.shape(target)):
                problems.append(f"shape mismatch for {key!r}: expected {tuple(np.shape(target))}, "
                                f"got {tuple(value.shape)}")
                continue
            values[key] = value
        if strict:
            problems += [f"unexpected key {k!r}" for k in state if k not in own]
        if problems:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n  " +
                               "\n  ".join(problems))
        for key, value in values.items():
            self._assign(key, value)

    def _assign(self, key: str, value: Any) -> None:
        *path, name = key.split(".")
        m: Module = self
        for part in path:
            m = m._modules[part]
        if name in m._parameters:
            p = m._parameters[name]
            p.data[...] = value if not is_device_array(p.data) else p.data.__class__(value)
        else:
            b = m._buffers[name]
            if isinstance(b, np.ndarray) and b.ndim == 0:
                m._buffers[name] = np.asarray(value, dtype=b.dtype).copy()
            else:
                b[...] = value

    def to(self, device: str) -> "Module":
        """Move parameters and buffers to ``"cpu"`` (NumPy) or ``"cuda"`` (CuPy)."""
        if device not in ("cpu", "cuda"):
            raise ValueError(f"to: device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda":
            from ..backends import get
            ok, reason = get("cuda").available()
            if not ok:
                raise RuntimeError(f"to('cuda'): {reason}")
            import cupy
            move = cupy.asarray
        else:
            def move(a):
                return a.get() if is_device_array(a) else a
        for m in self.modules():
            for p in m._parameters.values():
                p.data = move(p.data)
                p.grad = None if p.grad is None else move(p.grad)
            for name, b in list(m._buffers.items()):
                if b is not None and not (isinstance(b, np.ndarray) and b.ndim == 0):
                    m._buffers[name] = move(b)
        return self

    # -- display ---------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"  ({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n" + "\n".join(lines) + "\n)" if lines else ")")


def as_optional(x: Optional[Parameter]) -> Any:
    return None if x is None else x.data
