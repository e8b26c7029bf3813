// Each kernel family binds its ops in its own file (bindings/bind_<family>.cpp),
// so that families can grow independently; module.cpp calls them all.
#pragma once

#include <pybind11/pybind11.h>

namespace nnkern::bindings {

void bind_pool(pybind11::module_& m);       // max / avg / adaptive-avg pooling, forward and backward
void bind_norm(pybind11::module_& m);       // batch normalization, forward and backward
void bind_gemm(pybind11::module_& m);       // GEMM and linear, forward and backward
void bind_pointwise(pybind11::module_& m);  // sigmoid, tanh, softmax, log_softmax, cross-entropy, dropout
void bind_conv(pybind11::module_& m);       // conv2d forward and backward (conv1d maps onto it)
void bind_rnn(pybind11::module_& m);        // LSTM / GRU / RNN cells and sequences, forward and backward

}  // namespace nnkern::bindings
