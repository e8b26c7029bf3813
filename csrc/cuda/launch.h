// The launch primitives every CUDA kernel of nnkern is written against.
//
// Compiled by nvcc (__CUDACC__) they are plain CUDA. Compiled by the host C++
// compiler they are a CPU emulator (emulator.h): a grid's blocks run one after
// another, the threads of a block are fibers on one OS thread, nnk_sync() is a
// real barrier (a fiber yields until every thread of its block reached it) and
// NNK_SHARED memory is one buffer per block. So the very same kernel source
// (kernels/*.cuh) runs on a GPU and, in the test suite, on a machine without one.
//
// Kernels use only what is here: thread/block indices and sizes (x and y; block z),
// NNK_SHARED arrays declared at the top of the kernel (before any branch, so
// every thread declares them in the same order), nnk_sync() reached by every
// thread of the block the same number of times (the emulator reports anything
// else as an error), nnk_atomic_add on ints, and the math wrappers below. No
// warp shuffles, no float atomics (sums would depend on the order threads
// arrive in: nnkern's results are bit-reproducible).
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#define NNK_GLOBAL __global__
#define NNK_DEVICE __device__ __forceinline__
#define NNK_SHARED(type, name, count) __shared__ type name[count]
// fully unrolled constant-trip loops keep small arrays (register tiles) in registers
#define NNK_UNROLL _Pragma("unroll")
#else
#define NNK_UNROLL
#include "cuda/emulator.h"
#define NNK_GLOBAL
#define NNK_DEVICE inline
#define NNK_SHARED(type, name, count) \
  type* name = static_cast<type*>(::nnk::emu::shared_slot(sizeof(type) * (count), alignof(type)))
#endif

namespace nnk {

// A grid or block shape (CUDA's dim3 without the dependency).
struct Dim {
  unsigned x = 1, y = 1, z = 1;
};

#if defined(__CUDACC__)
NNK_DEVICE unsigned thread_x() { return threadIdx.x; }
NNK_DEVICE unsigned thread_y() { return threadIdx.y; }
NNK_DEVICE unsigned block_x() { return blockIdx.x; }
NNK_DEVICE unsigned block_y() { return blockIdx.y; }
NNK_DEVICE unsigned block_z() { return blockIdx.z; }
NNK_DEVICE unsigned block_dim_x() { return blockDim.x; }
NNK_DEVICE unsigned block_dim_y() { return blockDim.y; }
NNK_DEVICE unsigned grid_dim_x() { return gridDim.x; }
NNK_DEVICE unsigned grid_dim_y() { return gridDim.y; }
NNK_DEVICE void sync() { __syncthreads(); }
NNK_DEVICE int atomic_add(int* p, int v) { return atomicAdd(p, v); }
#else
NNK_DEVICE unsigned thread_x() { return emu::current().thread.x; }
NNK_DEVICE unsigned thread_y() { return emu::current().thread.y; }
NNK_DEVICE unsigned block_x() { return emu::current().block.x; }
NNK_DEVICE unsigned block_y() { return emu::current().block.y; }
NNK_DEVICE unsigned block_z() { return emu::current().block.z; }
NNK_DEVICE unsigned block_dim_x() { return emu::current().block_dim.x; }
NNK_DEVICE unsigned block_dim_y() { return emu::current().block_dim.y; }
NNK_DEVICE unsigned grid_dim_x() { return emu::current().grid_dim.x; }
NNK_DEVICE unsigned grid_dim_y() { return emu::current().grid_dim.y; }
NNK_DEVICE void sync() { emu::barrier(); }
// Fibers only switch at barriers and blocks run in sequence: a read-modify-write is atomic.
NNK_DEVICE int atomic_add(int* p, int v) {
  const int old = *p;
  *p = old + v;
  return old;
}
#endif

// Math in the kernel's type: CUDA device code and the host both provide these overloads.
NNK_DEVICE float exp_(float x) { return expf(x); }
NNK_DEVICE double exp_(double x) { return exp(x); }
NNK_DEVICE float log_(float x) { return logf(x); }
NNK_DEVICE double log_(double x) { return log(x); }
NNK_DEVICE float tanh_(float x) { return tanhf(x); }
NNK_DEVICE double tanh_(double x) { return tanh(x); }
NNK_DEVICE float sqrt_(float x) { return sqrtf(x); }
NNK_DEVICE double sqrt_(double x) { return sqrt(x); }
template <class T>
NNK_DEVICE bool isnan_(T x) {
  return x != x;
}

// The launch: kernel<<<grid, block, 0, stream>>>(args...). An empty grid launches nothing.
// Throws std::runtime_error with CUDA's (or the emulator's) message when the launch fails.
template <class... P, class... A>
void launch(void (*kernel)(P...), Dim grid, Dim block, std::uintptr_t stream, A&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
#if defined(__CUDACC__)
  kernel<<<dim3(grid.x, grid.y, grid.z), dim3(block.x, block.y, block.z), 0,
           reinterpret_cast<cudaStream_t>(stream)>>>(std::forward<A>(args)...);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) throw std::runtime_error(std::string("CUDA kernel launch: ") + cudaGetErrorString(status));
#else
  (void)stream;
  // the arguments converted to the kernel's parameter types once, as a real launch copies them
  std::tuple<P...> packed(std::forward<A>(args)...);
  struct Call {
    void (*kernel)(P...);
    std::tuple<P...>* args;
    static void run(void* self) {
      auto* c = static_cast<Call*>(self);
      std::apply(c->kernel, *c->args);
    }
  } call{kernel, &packed};
  emu::run_grid({grid.x, grid.y, grid.z}, {block.x, block.y, block.z}, &Call::run, &call);
#endif
}

// Blocks of `threads` covering n items, one item per thread (0 for n = 0: launch()
// then launches nothing), at most 65535 (a grid's y limit): grid-stride loops and
// the GEMM's tile loops cover what a capped grid leaves over.
inline unsigned blocks_for(std::int64_t n, unsigned threads) {
  const std::int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 65535 ? b : 65535);
}

}  // namespace nnk
