"""``nnkern.save`` / ``nnkern.load``: state_dicts as ``.npz`` files."""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Mapping, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]


def save(obj: Any, path: PathLike) -> None:
    """Write a module's ``state_dict()`` (or any mapping of arrays) to ``path`` as ``.npz``."""
    state = obj.state_dict() if hasattr(obj, "state_dict") else obj
    if not isinstance(state, Mapping):
        raise TypeError(f"save: expected a Module or a mapping of arrays, got {type(obj).__name__}")
    arrays = {k: (v.get() if hasattr(v, "get") and not isinstance(v, np.ndarray) else np.asarray(v))
              for k, v in state.items()}
    with open(path, "wb") as f:  # a file object: np.savez would otherwise append ".npz" to the name
        np.savez(f, **arrays)


def load(path: PathLike) -> "OrderedDict[str, np.ndarray]":
    """Read a state_dict written by :func:`save`; pass it to ``module.load_state_dict``."""
    with np.load(path, allow_pickle=False) as data:
        return OrderedDict((k, data[k]) for k in data.files)
