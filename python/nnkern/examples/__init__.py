"""Runnable examples: ``python -m nnkern.examples.digits --help``."""
