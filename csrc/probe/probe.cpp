#include "probe/probe.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "core/dispatch.h"
#include "core/errors.h"
#include "core/thread_pool.h"

namespace nnkern::probe {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A reusable spinning barrier: probes must start their threads together.
class SpinBarrier {
 public:
  explicit SpinBarrier(int n) : n_(n) {}
  void arrive_and_wait() {
    const int generation = generation_.load();
    if (arrived_.fetch_add(1) + 1 == n_) {
      arrived_ = 0;
      generation_.fetch_add(1);
    } else {
      while (generation_.load() == generation) std::this_thread::yield();
    }
  }

 private:
  const int n_;
  std::atomic<int> arrived_{0};
  std::atomic<int> generation_{0};
};

// Runs body(t) on threads t = 0..n-1 (0 is the caller) and joins them. The
// probes own their threads: they measure exactly `threads`, whatever the pool.
template <class Body>
void run_on_threads(int n, const Body& body) {
  std::vector<std::thread> others;
  for (int t = 1; t < n; ++t) others.emplace_back([&body, t] { body(t); });
  body(0);
  for (auto& th : others) th.join();
}

void check_threads(const char* probe, int threads) {
  if (threads < 1 || threads > kMaxThreads) {
    throw value_error(std::string(probe) + ": threads must be between 1 and " + std::to_string(kMaxThreads) +
                      ", got " + std::to_string(threads));
  }
}

const PerIsa<FmaProbeFn> kFmaProbe = {fma_probe_scalar, NNKERN_X86_ONLY(fma_probe_avx2),
                                      NNKERN_X86_ONLY(fma_probe_avx512)};

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// A buffer on 2 MiB huge pages where the kernel allows, every page touched.
std::unique_ptr<char, FreeDeleter> faulted_buffer(std::size_t nbytes, int fill) {
  constexpr std::size_t kHugePage = std::size_t{2} << 20;
  const std::size_t capacity = (nbytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = std::aligned_alloc(kHugePage, capacity);
  if (!p) throw std::bad_alloc();
  madvise(p, capacity, MADV_HUGEPAGE);
  std::memset(p, fill, capacity);
  return std::unique_ptr<char, FreeDeleter>(static_cast<char*>(p));
}

}  // namespace

double peak_gflops(int threads, double seconds) {
  check_threads("peak_gflops", threads);
  if (!(seconds > 0.0 && seconds <= 60.0)) {
    throw value_error("peak_gflops: seconds must be in (0, 60], got " + std::to_string(seconds));
  }
  const FmaProbeFn probe = kFmaProbe.active();
  // ~0.1-1 ms of work between clock reads.
  constexpr std::uint64_t kIterationsPerCheck = 1 << 14;
  std::vector<double> flops(threads), elapsed(threads);
  SpinBarrier barrier(threads);
  run_on_threads(threads, [&](int t) {
    float sink = 0.0f;
    // Warm up first: wide-vector units power up and clocks settle.
    const Clock::time_point warmup = Clock::now();
    while (seconds_since(warmup) < std::min(0.05, seconds / 4)) probe(kIterationsPerCheck, &sink);
    barrier.arrive_and_wait();
    const Clock::time_point start = Clock::now();
    double done = 0.0;
    do {
      done += static_cast<double>(probe(kIterationsPerCheck, &sink));
    } while (seconds_since(start) < seconds);
    elapsed[t] = seconds_since(start);
    flops[t] = done + (sink == 12345.0f ? 1.0 : 0.0);  // keeps sink observable
  });
  double total = 0.0;
  for (double f : flops) total += f;
  return total / *std::max_element(elapsed.begin(), elapsed.end()) * 1e-9;
}

double copy_bandwidth(int threads, std::size_t nbytes) {
  check_threads("copy_bandwidth", threads);
  if (nbytes < 1 || nbytes > (std::size_t{1} << 40)) {
    throw value_error("copy_bandwidth: nbytes must be between 1 and 2**40, got " + std::to_string(nbytes));
  }
  auto src = faulted_buffer(nbytes, 1);
  auto dst = faulted_buffer(nbytes, 0);
  constexpr int kRepetitions = 5;
  constexpr std::size_t kPage = 4096;  // slices start on page boundaries
  const std::size_t pages = (nbytes + kPage - 1) / kPage;
  std::vector<double> times(kRepetitions);
  SpinBarrier barrier(threads);
  run_on_threads(threads, [&](int t) {
    auto [first, last] = chunk_range(pages, threads, t);
    const std::size_t begin = std::min(first * kPage, nbytes);
    const std::size_t end = std::min(last * kPage, nbytes);
    for (int rep = 0; rep < kRepetitions; ++rep) {
      barrier.arrive_and_wait();
      const Clock::time_point start = Clock::now();
      std::memcpy(dst.get() + begin, src.get() + begin, end - begin);
      barrier.arrive_and_wait();
      if (t == 0) times[rep] = seconds_since(start);
    }
  });
  return 2.0 * static_cast<double>(nbytes) / *std::min_element(times.begin(), times.end()) * 1e-9;
}

}  // namespace nnkern::probe
