"""``nnkern bench``: the benchmark suite of BENCH.md, nnkern against its NumPy backend and PyTorch.

- :data:`nnkern.bench.suite.ROWS`: every row, defined once (importing it has no side effects);
- :func:`main`: the command line (``nnkern bench ...``, ``python -m nnkern bench ...``,
  ``python -m nnkern.bench ...``); see ``bench/README.md``.
"""
from __future__ import annotations

from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``nnkern bench`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    from .runner import main as run

    return run(argv)


__all__ = ["main"]
