// The pybind11 face of ops.h, shared by nnkern._cuda (module.cpp) and
// nnkern._cuda_emu (module_emu.cpp). Pointers are Python ints.
#pragma once

#include <pybind11/pybind11.h>

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
}

}  // namespace nnkern::cuda_ops
