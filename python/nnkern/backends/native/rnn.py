"""LSTM / GRU / RNN cells and whole sequences on the native kernels (csrc/rnn/).

``OPS`` maps functional op names to backend-contract functions (docs/design.md);
an op listed here is run natively by the ``auto`` backend.
"""
OPS: dict = {}
