#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "core/errors.h"
#include "cuda/cuda_runtime_info.h"

namespace nnkern::cuda {
namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error state for the next call
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
  }
}

__global__ void twice_index(int* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = 2 * i;
}

}  // namespace

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

std::string device_name(int index) {
  const int count = device_count();
  if (index < 0 || index >= count) {
    throw value_error("device_name: index must be in [0, " + std::to_string(count) + "), got " +
                      std::to_string(index));
  }
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, index), "cudaGetDeviceProperties");
  return prop.name;
}

int runtime_version() {
  int version = 0;
  cudaRuntimeGetVersion(&version);
  return version;
}

int driver_version() {
  int version = 0;
  if (cudaDriverGetVersion(&version) != cudaSuccess) return 0;
  return version;
}

std::vector<int> test_kernel(int n) {
  if (n < 0) throw value_error("test_kernel: n must be >= 0, got " + std::to_string(n));
  std::vector<int> host(n);
  if (n == 0) return host;
  int* device = nullptr;
  check(cudaMalloc(&device, sizeof(int) * n), "cudaMalloc");
  constexpr int kBlock = 256;
  twice_index<<<(n + kBlock - 1) / kBlock, kBlock>>>(device, n);
  cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) status = cudaMemcpy(host.data(), device, sizeof(int) * n, cudaMemcpyDeviceToHost);
  cudaFree(device);
  check(status, "twice_index kernel");
  return host;
}

}  // namespace nnkern::cuda
