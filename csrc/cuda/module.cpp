// nnkern._cuda: the CUDA backend's native module (see python/nnkern/backends/cuda.py).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cuda/bind_ops.h"
#include "cuda/cuda_runtime_info.h"

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "nnkern CUDA kernels and runtime queries (use nnkern.backends.cuda)";
  nnkern::cuda_ops::bind_ops(m);
  m.def("device_count", &nnkern::cuda::device_count, "CUDA devices visible (0 without driver or device).");
  m.def("device_name", &nnkern::cuda::device_name, py::arg("index"));
  m.def("runtime_version", &nnkern::cuda::runtime_version, "CUDA runtime version this module links, e.g. 13000.");
  m.def("driver_version", &nnkern::cuda::driver_version, "Installed driver's CUDA version, 0 without a driver.");
  m.def("architectures", [] { return std::string(NNKERN_CUDA_ARCHITECTURES); }, "CUDA_ARCHITECTURES built.");
  m.def("_test_kernel", [](int n) {
    py::gil_scoped_release nogil;
    return nnkern::cuda::test_kernel(n);
  }, py::arg("n"), "Run a trivial kernel: [2*i for i in range(n)] (RuntimeError without a device).");
}
