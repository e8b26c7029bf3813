// The pybind11 face of ops.h, shared by nnkern._cuda (module.cpp) and
// nnkern._cuda_emu (module_emu.cpp). Pointers are Python ints.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cuda/ops.h"

namespace nnkern::cuda_ops {

inline void bind_ops(pybind11::module_& m) {
  m.def("selftest", &selftest);
  m.def("activation", &activation);
  m.def("activation_backward", &activation_backward);
  m.def("dropout", &dropout);
  m.def("dropout_backward", &dropout_backward);
  m.def("softmax", &softmax);
  m.def("softmax_backward", &softmax_backward);
  m.def("cross_entropy", &cross_entropy);
  m.def("cross_entropy_backward", &cross_entropy_backward);
  m.def("max_pool", &max_pool);
  m.def("max_pool_backward", &max_pool_backward);
  m.def("avg_pool", &avg_pool);
  m.def("avg_pool_backward", &avg_pool_backward);
  m.def("adaptive_avg_pool", &adaptive_avg_pool);
  m.def("adaptive_avg_pool_backward", &adaptive_avg_pool_backward);
  m.def("bn_stats", &bn_stats);
  m.def("bn_eval_stats", &bn_eval_stats);
  m.def("bn_output", &bn_output);
  m.def("bn_grad_sums", &bn_grad_sums);
  m.def("bn_grad_input", &bn_grad_input);
  m.def("gemm", &gemm);
  m.def("channel_sum", &channel_sum);
  m.def("im2col", &im2col);
  m.def("col2im", &col2im);
  m.def("depthwise", &depthwise);
  m.def("depthwise_backward_input", &depthwise_backward_input);
  m.def("depthwise_backward_weight", &depthwise_backward_weight);
  m.def("lstm_step", &lstm_step);
  m.def("lstm_step_backward", &lstm_step_backward);
  m.def("gru_step", &gru_step);
  m.def("gru_step_backward", &gru_step_backward);
  m.def("rnn_step", &rnn_step);
  m.def("rnn_step_backward", &rnn_step_backward);
}

}  // namespace nnkern::cuda_ops
