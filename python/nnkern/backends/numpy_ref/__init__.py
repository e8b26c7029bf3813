"""The NumPy reference backend: every op, forward and backward, in idiomatic vectorized NumPy.

It computes in the dtype it is given: tests call it on float64 copies as the
oracle; the benchmark runs it on float32 as the "plain NumPy" peer.
"""
from .basic import (cross_entropy, cross_entropy_backward, dropout, dropout_backward, linear, linear_backward,
                    log_softmax, log_softmax_backward, relu, relu_backward, sigmoid, sigmoid_backward, softmax,
                    softmax_backward, tanh, tanh_backward)
from .conv import conv2d, conv2d_backward
from .norm import batch_norm, batch_norm_backward
from .pool import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, avg_pool2d, avg_pool2d_backward, max_pool2d,
                   max_pool2d_backward)
from .rnn import (gru_cell, gru_cell_backward, lstm_cell, lstm_cell_backward, rnn_cell, rnn_cell_backward, rnn_seq,
                  rnn_seq_backward)
