// A persistent thread pool with a static, deterministic split.
//
// parallel_for(n_tasks, fn) cuts [0, n_tasks) into min(threads, n_tasks)
// contiguous chunks, chunk c = [c*n/k, (c+1)*n/k), and calls fn(begin, end)
// once per chunk: the caller thread runs chunk 0, and chunks 1.. go to
// whichever thread claims them first (a pool thread, or the caller once its
// chunk is done: a worker that is slow to wake, e.g. a vCPU parked by the
// hypervisor after an idle spell, then costs nothing). Chunks of one call may
// therefore run one after the other: they must not wait for each other (use
// parallel_team for that). Which indices land in which chunk depends only on
// n_tasks and the thread count, so a kernel whose chunks write disjoint
// outputs gives the same bits on every run with the same thread count.
//
// One parallel_for at a time uses the pool. A call made while the pool is busy
// (another Python thread) or from inside a chunk runs its chunks one after the
// other on the calling thread, with the same split, hence the same bits.
// Workers run with the caller's MXCSR (fp_env.h). An exception thrown by a
// chunk is rethrown to the caller after every chunk has finished.
//
// After fork() the child starts with a fresh pool whose threads are created on
// first use; the parent's pool object is abandoned, never destroyed, so no
// static destructor joins threads at interpreter exit.
#pragma once

#include <atomic>
#include <cstddef>
#include <thread>
#include <type_traits>
#include <utility>

namespace nnkern {

// A non-owning reference to a callable void(size_t begin, size_t end).
class RangeFn {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::remove_cv_t<F>, RangeFn>>>
  RangeFn(F& f)  // NOLINT: implicit by design, like std::function_ref
      : ctx_(&f), call_([](void* ctx, std::size_t b, std::size_t e) { (*static_cast<F*>(ctx))(b, e); }) {}
  void operator()(std::size_t begin, std::size_t end) const { call_(ctx_, begin, end); }

 private:
  void* ctx_;
  void (*call_)(void*, std::size_t, std::size_t);
};

void parallel_for(std::size_t n_tasks, RangeFn fn);

template <class F>
void parallel_for(std::size_t n_tasks, F&& fn) {
  auto& f = fn;
  parallel_for(n_tasks, RangeFn(f));
}

// The chunk [begin, end) of the static split of n_tasks into n_chunks.
inline std::pair<std::size_t, std::size_t> chunk_range(std::size_t n_tasks, std::size_t n_chunks, std::size_t c) {
  // 128-bit products: n_tasks * c cannot overflow.
  auto bound = [&](std::size_t i) {
    return static_cast<std::size_t>(static_cast<unsigned __int128>(n_tasks) * i / n_chunks);
  };
  return {bound(c), bound(c + 1)};
}

// A team of threads that run at the same time, so that they may wait for each
// other (spin_wait on shared counters): fn(rank, size) is called once per rank in [0, size),
// size = min(max_members, threads), each rank on its own thread. When the pool
// is busy (another Python thread, or called from inside a chunk) the team has
// one member, the calling thread: fn(0, 1). Work split by rank must therefore
// be correct for any size. fn must not throw once a member may wait for
// another (a member that leaves early leaves the others waiting).
void parallel_team(std::size_t max_members, RangeFn fn);

template <class F>
void parallel_team(std::size_t max_members, F&& fn) {
  auto& f = fn;
  parallel_team(max_members, RangeFn(f));
}

// While alive, every parallel_for / parallel_team on this thread runs on this
// thread alone (with the same split, hence the same bits), as if nested: for
// work too small to pay for waking a sleeping worker (tens of microseconds on
// a virtual machine).
class ScopedSerial {
 public:
  ScopedSerial();
  ~ScopedSerial();
  ScopedSerial(const ScopedSerial&) = delete;
  ScopedSerial& operator=(const ScopedSerial&) = delete;

 private:
  bool previous_;
};

// Waits until ready() holds: ~2 K pause instructions (the microseconds
// between steps of the recurrent kernels), then yielding the CPU each round.
template <class Ready>
void spin_wait(Ready ready) {
  for (unsigned spins = 0; !ready(); ++spins) {
    if (spins < (1u << 11)) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }
}

// Threads used by parallel_for (caller included). Default: the CPUs in this
// process's affinity mask. set_num_threads throws value_error unless
// 1 <= n <= kMaxThreads; it is safe while other threads compute (the next
// parallel_for resizes the pool).
constexpr int kMaxThreads = 1024;
void set_num_threads(int n);
int get_num_threads();

}  // namespace nnkern
