"""The ``nnkern`` command: ``nnkern info`` and ``nnkern bench``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence


def _print_info() -> int:
    import nnkern

    for key, value in nnkern.info().items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        print(f"{key:20s} {value}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``nnkern`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="nnkern", description="nnkern: fast deep-learning kernels on NumPy arrays")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the version, kernel ISA, threads, build and CUDA status")
    sub.add_parser("bench", help="run the benchmark suite against NumPy and PyTorch (see 'nnkern bench --help')",
                   add_help=False)
    if argv and argv[0] == "bench":
        from .bench import main as bench_main

        return int(bench_main(argv[1:]) or 0)
    args = parser.parse_args(argv)
    if args.command == "info":
        return _print_info()
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
