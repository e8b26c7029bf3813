"""The native backend's ops, one module per kernel family.

Each module exposes ``OPS``: backend-contract name -> function (see
``docs/design.md``); ``nnkern.backends.cpu`` merges them. A family registers
an op here only once its kernel passes the registry tests.
"""
