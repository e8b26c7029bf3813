// The host emulator of launch.h: see emulator.h.
#include "cuda/emulator.h"

#include <sys/mman.h>
#include <ucontext.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

namespace nnk::emu {
namespace {

// Kernels keep a few scalars and small register tiles on their stacks.
constexpr std::size_t kStackBytes = 64 * 1024;
constexpr unsigned kMaxBlockThreads = 1024;  // CUDA's limit
constexpr std::size_t kSharedBytes = 48 * 1024;  // CUDA's limit for static __shared__ arrays

struct Fiber {
  ucontext_t context;
  ThreadState state;
  unsigned next_slot;  // index of the next NNK_SHARED declaration this thread reaches
  bool done;
  bool waiting;  // at a barrier
};

struct Slot {
  std::size_t offset, bytes;
};

// One per OS thread: launches from several Python threads do not share fibers.
struct Runner {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  char* stacks = nullptr;
  std::size_t stack_count = 0;
  Fiber* running = nullptr;
  void (*body)(void*) = nullptr;
  void* arg = nullptr;
  alignas(64) unsigned char shared[kSharedBytes];
  std::size_t shared_used = 0;
  std::vector<Slot> slots;

  ~Runner() {
    if (stacks != nullptr) munmap(stacks, stack_count * kStackBytes);
  }

  // Stacks for n threads, mapped once and reused by every later block and launch
  // (pages are only touched as deep as the kernels go).
  void reserve(std::size_t n) {
    if (n <= stack_count) return;
    if (stacks != nullptr) munmap(stacks, stack_count * kStackBytes);
    void* p = mmap(nullptr, n * kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
      stacks = nullptr;
      stack_count = 0;
      throw std::bad_alloc();
    }
    stacks = static_cast<char*>(p);
    stack_count = n;
    fibers.resize(n);
  }
};

thread_local Runner* tls_runner = nullptr;

Runner& runner() {
  if (tls_runner == nullptr) {
    static thread_local Runner instance;
    tls_runner = &instance;
  }
  return *tls_runner;
}

void fiber_main() {
  Runner& r = runner();
  r.body(r.arg);
  r.running->done = true;  // returning resumes the scheduler (uc_link)
}

std::string where(const Dim3& block) {
  return "block (" + std::to_string(block.x) + ", " + std::to_string(block.y) + ", " + std::to_string(block.z) + ")";
}

void run_block(Runner& r, Dim3 block_index, Dim3 block, Dim3 grid, unsigned n) {
  std::memset(r.shared, 0xFF, r.shared_used);
  r.shared_used = 0;
  r.slots.clear();
  for (unsigned t = 0; t < n; ++t) {
    Fiber& f = r.fibers[t];
    f.state = {{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)}, block_index, block, grid};
    f.next_slot = 0;
    f.done = false;
    f.waiting = false;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = r.stacks + std::size_t(t) * kStackBytes;
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &r.scheduler;
    makecontext(&f.context, fiber_main, 0);
  }
  for (unsigned phase = 0;; ++phase) {
    // every thread runs to its next barrier or to its end
    for (unsigned t = 0; t < n; ++t) {
      Fiber& f = r.fibers[t];
      if (f.done) continue;
      r.running = &f;
      swapcontext(&r.scheduler, &f.context);
    }
    r.running = nullptr;
    unsigned waiting = 0;
    for (unsigned t = 0; t < n; ++t) waiting += r.fibers[t].waiting;
    if (waiting == 0) return;  // all threads finished
    if (waiting != n) {
      throw std::runtime_error("emulated CUDA kernel: divergent __syncthreads in " + where(block_index) + ": " +
                               std::to_string(waiting) + " of " + std::to_string(n) +
                               " threads wait at barrier " + std::to_string(phase + 1) + ", the others have exited");
    }
    for (unsigned t = 0; t < n; ++t) r.fibers[t].waiting = false;
  }
}

}  // namespace

const ThreadState& current() {
  return runner().running->state;
}

void barrier() {
  Runner& r = runner();
  Fiber* f = r.running;
  f->waiting = true;
  swapcontext(&f->context, &r.scheduler);
}

void* shared_slot(std::size_t bytes, std::size_t align) {
  Runner& r = runner();
  Fiber* f = r.running;
  const unsigned k = f->next_slot++;
  if (k < r.slots.size()) {
    if (r.slots[k].bytes != bytes) {
      // a kernel bug (declarations must come before any branch); no exception can leave a fiber
      std::fprintf(stderr, "emulated CUDA kernel: __shared__ arrays declared differently by the threads of a block\n");
      std::abort();
    }
    return r.shared + r.slots[k].offset;
  }
  const std::size_t offset = (r.shared_used + align - 1) / align * align;
  if (offset + bytes > kSharedBytes) {
    // a kernel bug, not a runtime condition: nvcc would reject the kernel at compile time
    std::fprintf(stderr, "emulated CUDA kernel: more than %zu bytes of __shared__ memory\n", kSharedBytes);
    std::abort();
  }
  r.slots.push_back({offset, bytes});
  r.shared_used = offset + bytes;
  return r.shared + offset;
}

void run_grid(Dim3 grid, Dim3 block, void (*body)(void*), void* arg) {
  const std::uint64_t n = std::uint64_t(block.x) * block.y * block.z;
  if (n == 0 || n > kMaxBlockThreads) {
    throw std::runtime_error("emulated CUDA launch: a block has " + std::to_string(n) +
                             " threads, CUDA allows 1 to 1024");
  }
  Runner& r = runner();
  if (r.body != nullptr) throw std::logic_error("emulated CUDA launch from inside a kernel");
  r.reserve(n);
  r.body = body;
  r.arg = arg;
  try {
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) run_block(r, {x, y, z}, block, grid, static_cast<unsigned>(n));
  } catch (...) {
    r.body = nullptr;
    throw;
  }
  r.body = nullptr;
}

}  // namespace nnk::emu
