"""The native C++ backend: a thin face over ``nnkern._cpu``.

Importing this module selects the CPU kernel family once: the best this CPU
supports, or ``NNKERN_ISA`` (``avx512``, ``avx2``, ``scalar``), which raises a
``ValueError`` naming the value and what the CPU supports when it is unknown
or unsupported. ``NNKERN_NUM_THREADS`` sets the initial thread count, and
``NNKERN_CONV_ALGORITHM`` (``auto`` or ``direct``) the convolution algorithm
choice (``nnkern.set_conv_algorithm``).

Every op here takes validated arrays (possibly non-contiguous) and returns a
fresh NumPy array of the input dtype; the GIL is released while it runs.
"""
from __future__ import annotations

import os

from .. import _cpu as _native

_native.select_isa(os.environ.get("NNKERN_ISA", ""))

_threads_env = os.environ.get("NNKERN_NUM_THREADS", "").strip()
if _threads_env:
    try:
        _native.set_num_threads(int(_threads_env))
    except ValueError:
        raise ValueError(
            f"NNKERN_NUM_THREADS must be an integer between 1 and 1024, got {_threads_env!r}") from None

_conv_algorithm_env = os.environ.get("NNKERN_CONV_ALGORITHM", "").strip()
if _conv_algorithm_env:
    try:
        _native.set_conv_algorithm(_conv_algorithm_env)
    except ValueError:
        raise ValueError(
            f"NNKERN_CONV_ALGORITHM must be 'auto' or 'direct', got {_conv_algorithm_env!r}") from None

from .native import conv as _conv, linear as _linear, norm as _norm  # noqa: E402
from .native import pointwise as _pointwise, pool as _pool, rnn as _rnn  # noqa: E402

_OPS = {**_pointwise.OPS, **_pool.OPS, **_norm.OPS, **_linear.OPS, **_conv.OPS, **_rnn.OPS}
# the sequence functions of the contract serve three functional ops each
_SEQUENCE_OPS = {"rnn_seq": ("lstm", "gru", "rnn"),
                 "rnn_seq_backward": ("lstm_backward", "gru_backward", "rnn_backward")}
#: The functional ops this backend runs natively; ``auto`` sends the rest to numpy.
NATIVE_OPS = frozenset(name for k in _OPS for name in _SEQUENCE_OPS.get(k, (k,)))
globals().update(_OPS)
# optional (docs/design.md): a sequence forward without workspace or dropout in one native call
rnn_seq_inference = _rnn.rnn_seq_inference

isa = _native.isa
supported_isas = _native.supported_isas
set_num_threads = _native.set_num_threads
get_num_threads = _native.get_num_threads
build_info = _native.build_info
empty_cache = _native.empty_cache
set_conv_algorithm = _native.set_conv_algorithm
get_conv_algorithm = _native.get_conv_algorithm
