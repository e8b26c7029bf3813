// nnkern._cuda_emu: the CUDA operators of nnkern._cuda compiled for the host
// emulator (launch.h), for the test-only "cuda_emulated" backend. Built with the
// CPU module, no CUDA toolkit needed.
#include <pybind11/pybind11.h>

#include "cuda/bind_ops.h"
#include "cuda/launch.h"

namespace py = pybind11;

namespace {

// Threads of odd index leave before a barrier the even ones wait at: undefined
// on a GPU, reported by the emulator (tests/test_cuda_emulator.py checks that).
NNK_GLOBAL void divergent_barrier_kernel(int* out) {
  if (nnk::thread_x() % 2 == 1) return;
  nnk::sync();
  out[nnk::thread_x()] = 1;
}

}  // namespace

PYBIND11_MODULE(_cuda_emu, m) {
  m.doc() = "nnkern's CUDA kernels run by the CPU emulator of csrc/cuda/launch.h (tests only)";
  nnkern::cuda_ops::bind_ops(m);
  m.def("_divergent_barrier", [](std::uintptr_t out, unsigned threads) {
    nnk::launch(divergent_barrier_kernel, {1}, {threads}, 0, reinterpret_cast<int*>(out));
  });
}
