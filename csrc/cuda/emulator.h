// The host emulator behind launch.h (never compiled by nvcc): runs a CUDA grid
// on the calling CPU thread. Blocks run one after another in grid order; the
// threads of a block are fibers (ucontext) switched only at barriers, so a run
// is deterministic and atomics need no hardware support.
#pragma once

#include <cstddef>

namespace nnk::emu {

struct Dim3 {
  unsigned x, y, z;
};

// What threadIdx / blockIdx / blockDim / gridDim read in the running fiber.
struct ThreadState {
  Dim3 thread, block, block_dim, grid_dim;
};

const ThreadState& current();

// __syncthreads(): yields until every thread of the block has arrived.
void barrier();

// The next __shared__ array of the running thread's kernel: the same memory for
// every thread of the block (slots are matched by declaration order), filled
// with 0xFF bytes (a NaN in floats) at the start of each block, as shared memory
// is never initialized on a GPU either.
void* shared_slot(std::size_t bytes, std::size_t align);

// Runs body(arg) once per thread of the grid. Throws std::runtime_error for a
// block over 1024 threads and for barriers not reached by every thread of a
// block the same number of times (divergent __syncthreads).
void run_grid(Dim3 grid, Dim3 block, void (*body)(void*), void* arg);

}  // namespace nnk::emu
