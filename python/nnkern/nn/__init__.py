"""``nnkern.nn``: modules with forward and explicit backward, ``torch.nn`` names, shapes and state_dicts.

Every module calls ``nnkern.functional`` only, so it runs on whichever
backend the arrays and ``nnkern.use_backend`` select.
"""
from .layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, Dropout, Flatten,
                     Identity, Linear, MaxPool2d, ReLU, Residual, Sequential, Sigmoid, Tanh)
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Parameter, fusion, fusion_enabled
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = ["Module", "Parameter", "fusion", "fusion_enabled", "Conv1d", "Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
           "BatchNorm1d", "BatchNorm2d", "ReLU", "Sigmoid", "Tanh", "Flatten", "Dropout", "Sequential", "Identity",
           "Residual", "LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "CrossEntropyLoss", "MSELoss"]
