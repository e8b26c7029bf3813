"""Process-wide (and per-context) settings: the default backend."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

BACKENDS = ("auto", "cpu", "cuda", "numpy")
# Accepted but not advertised: the CUDA kernels run by the CPU emulator, for the test suite only.
_TEST_BACKENDS = ("cuda_emulated",)

_default_backend: contextvars.ContextVar[str] = contextvars.ContextVar("nnkern_backend", default="auto")


def check_backend_name(name: object) -> str:
    if not isinstance(name, str) or name not in BACKENDS + _TEST_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {name!r}")
    return name


def default_backend() -> str:
    """The backend that ``backend="auto"``-less calls use in this context."""
    return _default_backend.get()


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Make ``name`` the default backend inside a ``with`` block (thread- and task-local).

    >>> with nnkern.use_backend("numpy"):
    ...     y = nnkern.conv2d(x, w)      # computed by the NumPy reference
    """
    token = _default_backend.set(check_backend_name(name))
    try:
        yield
    finally:
        _default_backend.reset(token)
