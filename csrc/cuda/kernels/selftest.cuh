// A kernel that checks the launch primitives themselves (tests/test_cuda_emulator.py):
// barrier ordering, one shared array per block, partial last blocks and atomics.
#pragma once

#include <cstdint>

#include "cuda/kernels/common.cuh"

namespace nnk {

constexpr unsigned kSelftestMaxThreads = 256;

// For thread t of block b (i = b * blockDim + t < n):
//   out[3i]     = the index of thread t+1 (mod blockDim) of the same block, read after a barrier
//   out[3i + 1] = b, read from a shared scalar written by thread 0 of the block
//   out[3i + 2] = i, read back through a second barrier and shared write of the neighbour
// and *counter is incremented once per thread with i < n.
NNK_GLOBAL void selftest_kernel(int* out, int* counter, std::int64_t n) {
  NNK_SHARED(int, a, kSelftestMaxThreads);
  NNK_SHARED(int, b, 1);
  const unsigned t = thread_x();
  const unsigned bd = block_dim_x();
  const std::int64_t i = global_thread();
  a[t] = int(i);
  if (t == 0) b[0] = int(block_x());
  sync();
  // right only if every thread of the block wrote before any read
  const int neighbour = a[(t + 1) % bd];
  sync();
  // wrong if a thread could still read the old value after this overwrite
  a[t] = -neighbour;
  sync();
  if (i < n) {
    out[3 * i] = neighbour;
    out[3 * i + 1] = b[0];
    out[3 * i + 2] = -a[(t + bd - 1) % bd];
    atomic_add(counter, 1);
  }
}

}  // namespace nnk
