#include "core/thread_pool.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/errors.h"
#include "core/fp_env.h"

namespace nnkern {
namespace {

thread_local bool t_in_chunk = false;

struct Job {
  const RangeFn* fn = nullptr;
  std::size_t n_tasks = 0;
  std::size_t n_chunks = 0;
  unsigned fp_mode = 0;
  // parallel_for: chunks 1.. go to whichever thread claims them first (the
  // caller too, once its chunk 0 is done), so a worker slow to wake (a vCPU
  // the hypervisor has parked: milliseconds after an idle spell) delays
  // nothing. Which chunk covers which tasks is fixed, so the bits are too.
  // Teams (parallel_team): chunk c on thread c, all at once.
  bool claimed = true;
  int caller_cpu = -1;  // the CPU the caller ran on when it posted the job (sched_getcpu), or -1
  pid_t caller_tid = 0;  // the caller's thread id (step_aside reads its CPU mask)
};

// This thread's kernel thread id, asked once.
pid_t this_tid() {
  thread_local const pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
  return tid;
}

// The claim word: the job's generation above kChunkBits, the next chunk to
// claim below, so that a worker still holding an older job can never claim
// a chunk of a newer one.
constexpr unsigned kChunkBits = 20;  // > kMaxThreads chunks
constexpr std::uint64_t kChunkMask = (std::uint64_t{1} << kChunkBits) - 1;

// Runs one chunk with the caller's floating-point mode; returns its exception.
std::exception_ptr run_chunk(const Job& job, std::size_t c) {
  ScopedFpMode fp(job.fp_mode);
  t_in_chunk = true;
  std::exception_ptr error;
  try {
    auto [begin, end] = chunk_range(job.n_tasks, job.n_chunks, c);
    (*job.fn)(begin, end);
  } catch (...) {
    error = std::current_exception();
  }
  t_in_chunk = false;
  return error;
}

void run_sequentially(std::size_t n_tasks, std::size_t n_chunks, const RangeFn& fn) {
  for (std::size_t c = 0; c < n_chunks; ++c) {
    auto [begin, end] = chunk_range(n_tasks, n_chunks, c);
    fn(begin, end);
  }
}

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// A worker that finished a chunk polls for the next job this long before it
// sleeps, and the caller polls for the workers' chunks this long before it
// sleeps: back-to-back calls (a training step's small ops, a sequence of
// layers) then start and end without a futex wake, which costs ~80 us on this
// virtual machine. Idle threads stop spinning after the window, so a peer
// running next (the benchmark's other libraries) finds the CPUs free.
constexpr auto kSpinWindow = std::chrono::microseconds(2000);

template <class Pred>
bool spin_until(Pred done) {
  const auto end = std::chrono::steady_clock::now() + kSpinWindow;
  for (unsigned i = 0;; ++i) {
    if (done()) return true;
    cpu_relax();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > end) return false;
  }
}

class ThreadPool {
 public:
  // Held by the caller for a whole parallel_for.
  std::mutex run_mutex;

  // Requires run_mutex. Runs chunk 0 here and chunks 1.. on the workers.
  void run(const Job& job, std::size_t n_threads) {
    resize(n_threads - 1);
    std::uint64_t gen = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = job;
      job_.caller_cpu = sched_getcpu();
      job_.caller_tid = this_tid();
      pending_.store(job.n_chunks - 1, std::memory_order_relaxed);
      error_ = nullptr;
      gen = generation_.load(std::memory_order_relaxed) + 1;
      claim_.store((gen << kChunkBits) | 1, std::memory_order_relaxed);
      generation_.store(gen, std::memory_order_release);
    }
    work_cv_.notify_all();
    std::exception_ptr error = run_chunk(job, 0);
    if (job.claimed) {
      for (std::size_t c; (c = claim(gen, job.n_chunks)) != kNone;) {
        std::exception_ptr e = run_chunk(job, c);
        if (e && !error) error = e;
        pending_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
    spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; });
    std::unique_lock<std::mutex> lock(mutex_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
    if (!error) error = error_;
    if (error) std::rethrow_exception(error);
  }

 private:
  // Requires run_mutex (so no job is in flight).
  void resize(std::size_t n_workers) {
    if (workers_.size() == n_workers) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    stopping_ = false;
    // Workers block every signal: Python handles signals on its main thread.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    for (std::size_t i = 1; i <= n_workers; ++i) {
      workers_.emplace_back([this, i, seen = generation_.load()] { worker_loop(i, seen); });
      // Named here, before resize returns, as top, perf and the tests see it: a name the worker
      // set itself could still be missing after a whole job that the caller ran alone.
      pthread_setname_np(workers_.back().native_handle(), "nnkern-worker");
    }
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  }

  void worker_loop(std::size_t index, std::uint64_t seen) {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      if (!stopping_ && generation_.load(std::memory_order_relaxed) == seen) {
        lock.unlock();
        spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; });
        lock.lock();
      }
      work_cv_.wait(lock, [&] { return stopping_ || generation_.load(std::memory_order_relaxed) != seen; });
      if (stopping_) return;
      seen = generation_.load(std::memory_order_relaxed);
      const Job job = job_;
      step_aside(job);
      if (!job.claimed) {
        if (index >= job.n_chunks) continue;
        lock.unlock();
        finish(run_chunk(job, index), lock);
        lock.lock();
        continue;
      }
      lock.unlock();
      for (std::size_t c; (c = claim(seen, job.n_chunks)) != kNone;) finish(run_chunk(job, c), lock);
      lock.lock();
    }
  }

  static constexpr std::size_t kNone = ~std::size_t{0};

  // A worker that finds itself on the CPU its caller runs on moves to the caller's other CPUs.
  // After an idle spell the scheduler may wake the worker onto the caller's CPU; the two then
  // share that CPU (both spin) while another idles, for whole benchmark samples: P3 at 2 threads
  // ran 55-65 us instead of 31-35 in about a third of the samples. One sched_getcpu when placed
  // well. The new mask is the caller's current one without its CPU, so a later restriction of
  // the process (taskset) is kept.
  static void step_aside(const Job& job) {
    if (job.caller_cpu < 0 || job.caller_cpu >= CPU_SETSIZE || sched_getcpu() != job.caller_cpu) return;
    cpu_set_t others;
    if (sched_getaffinity(job.caller_tid, sizeof(others), &others) != 0) return;
    CPU_CLR(job.caller_cpu, &others);
    if (CPU_COUNT(&others) > 0) pthread_setaffinity_np(pthread_self(), sizeof(others), &others);
  }

  // The next unclaimed chunk of job `gen`, or kNone when every chunk is taken
  // or that job is over.
  std::size_t claim(std::uint64_t gen, std::size_t n_chunks) {
    std::uint64_t word = claim_.load(std::memory_order_acquire);
    for (;;) {
      if ((word >> kChunkBits) != gen || (word & kChunkMask) >= n_chunks) return kNone;
      if (claim_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel)) return word & kChunkMask;
    }
  }

  // A worker's chunk is done: record its error, count it (lock: unlocked on entry and exit).
  void finish(std::exception_ptr error, std::unique_lock<std::mutex>& lock) {
    lock.lock();
    if (error && !error_) error_ = error;
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) done_cv_.notify_one();
    lock.unlock();
  }

  std::mutex mutex_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::vector<std::thread> workers_;
  std::atomic<std::uint64_t> generation_{0};  // written under mutex_, polled without it
  bool stopping_ = false;
  Job job_;
  std::atomic<std::size_t> pending_{0};  // chunks 1.. not finished; polled by the caller without mutex_
  std::atomic<std::uint64_t> claim_{0};   // generation << kChunkBits | next chunk (claimed jobs)
  std::exception_ptr error_;
};

std::atomic<int> g_num_threads{0};  // 0: not chosen yet
std::atomic<ThreadPool*> g_pool{nullptr};
std::mutex g_pool_create_mutex;

int affinity_cpu_count() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

void atfork_prepare() { g_pool_create_mutex.lock(); }
void atfork_parent() { g_pool_create_mutex.unlock(); }
void atfork_child() {
  // The parent's workers do not exist here and its mutexes may be held by
  // threads that are gone: abandon that pool, the next call builds a new one.
  g_pool.store(nullptr);
  g_pool_create_mutex.unlock();
}

ThreadPool& pool() {
  ThreadPool* p = g_pool.load(std::memory_order_acquire);
  if (p) return *p;
  static std::once_flag atfork_once;
  std::call_once(atfork_once, [] { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); });
  std::lock_guard<std::mutex> lock(g_pool_create_mutex);
  p = g_pool.load(std::memory_order_acquire);
  if (!p) {
    p = new ThreadPool();  // never deleted: see the header
    g_pool.store(p, std::memory_order_release);
  }
  return *p;
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1 || n > kMaxThreads) {
    throw value_error("set_num_threads: n must be between 1 and " + std::to_string(kMaxThreads) + ", got " +
                      std::to_string(n));
  }
  g_num_threads = n;
}

int get_num_threads() {
  int n = g_num_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    int expected = 0;
    g_num_threads.compare_exchange_strong(expected, affinity_cpu_count());
    n = g_num_threads.load(std::memory_order_relaxed);
  }
  return n;
}

void parallel_for(std::size_t n_tasks, RangeFn fn) {
  if (n_tasks == 0) return;
  if (t_in_chunk) {  // nested: the pool is busy running our parent
    run_sequentially(n_tasks, std::min<std::size_t>(get_num_threads(), n_tasks), fn);
    return;
  }
  ThreadPool& p = pool();
  std::unique_lock<std::mutex> lock(p.run_mutex, std::try_to_lock);
  const std::size_t n_threads = get_num_threads();
  const std::size_t n_chunks = std::min(n_threads, n_tasks);
  if (n_chunks == 1 || !lock.owns_lock()) {
    run_sequentially(n_tasks, n_chunks, fn);
    return;
  }
  p.run(Job{&fn, n_tasks, n_chunks, get_fp_mode()}, n_threads);
}

ScopedSerial::ScopedSerial() : previous_(t_in_chunk) { t_in_chunk = true; }
ScopedSerial::~ScopedSerial() { t_in_chunk = previous_; }

void parallel_team(std::size_t max_members, RangeFn fn) {
  if (max_members == 0) return;
  const std::size_t threads = get_num_threads();  // read once: set_num_threads may run meanwhile
  const std::size_t wanted = std::min<std::size_t>(max_members, threads);
  if (wanted == 1 || t_in_chunk) {
    fn(0, 1);
    return;
  }
  ThreadPool& p = pool();
  std::unique_lock<std::mutex> lock(p.run_mutex, std::try_to_lock);
  if (!lock.owns_lock()) {
    fn(0, 1);
    return;
  }
  // One task per chunk: chunk c is task c, and the pool runs chunk c on thread c,
  // all at once (run() holds every worker until the job is done).
  auto member = [&](std::size_t begin, std::size_t) { fn(begin, wanted); };
  RangeFn member_fn(member);
  p.run(Job{&member_fn, wanted, wanted, get_fp_mode(), /*claimed=*/false}, threads);
}

}  // namespace nnkern
