// The CUDA runtime as plain C++ (no CUDA headers): cuda_runtime_info.cu is
// compiled by nvcc, module.cpp (pybind11) by the host compiler.
#pragma once

#include <string>
#include <vector>

namespace nnkern::cuda {

// 0 when there is no driver or no device; never throws.
int device_count();
// Throws value_error for an index outside [0, device_count()).
std::string device_name(int index);
// e.g. 13000 for CUDA 13.0.
int runtime_version();
// 0 when no driver is installed.
int driver_version();
// Launches a trivial kernel writing i * 2 into n elements and returns them;
// throws std::runtime_error with the CUDA message when it cannot run.
std::vector<int> test_kernel(int n);

}  // namespace nnkern::cuda
