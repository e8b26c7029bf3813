"""nnkern: fast deep-learning kernels (convolution, pooling, batch norm, LSTM/GRU/RNN) on NumPy and CuPy arrays.

The functional API of ``torch.nn.functional`` on NumPy arrays, forward and
backward, computed by native C++ kernels (``cpu``), CUDA kernels (``cuda``)
or the NumPy reference (``numpy``)::

    import numpy as np, nnkern
    x = np.random.randn(8, 3, 32, 32).astype(np.float32)
    w = np.random.randn(16, 3, 3, 3).astype(np.float32)
    y = nnkern.conv2d(x, w, padding=1)
"""
from __future__ import annotations

__version__ = "0.1.0"

from ._config import use_backend
from .backends import cpu as _cpu_backend  # selects the kernel ISA once, at import (NNKERN_ISA)
from .functional import *  # noqa: F401,F403  (the public functional API)
from .functional import __all__ as _functional_all
from ._info import empty_cache, get_conv_algorithm, get_num_threads, info, set_conv_algorithm, set_num_threads
from ._io import load, save
from . import nn, optim  # noqa: E402  (the layer API, on the functional API above)

__all__ = ["__version__", "use_backend", "info", "set_num_threads", "get_num_threads", "empty_cache",
           "set_conv_algorithm", "get_conv_algorithm", "save", "load",
           "nn", "optim",
           *_functional_all]
del _cpu_backend
