#include "core/workspace.h"

#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <list>
#include <mutex>
#include <new>

namespace nnkern {
namespace {

constexpr std::size_t kCacheLine = 64;
constexpr std::size_t kHugePage = std::size_t{2} << 20;

struct Idle {
  void* data;
  std::size_t capacity;
};

struct Cache {
  std::mutex mutex;
  std::list<Idle> idle;  // most recently returned first
  std::size_t idle_bytes = 0;
  std::size_t in_use_bytes = 0;
};

Cache& cache() {
  static Cache* c = [] {
    // Fork while another thread holds the lock would leave it held forever in
    // the child: take it around fork().
    pthread_atfork([] { cache().mutex.lock(); }, [] { cache().mutex.unlock(); }, [] { cache().mutex.unlock(); });
    return new Cache();  // never destroyed: may be used until the very end of the process
  }();
  return *c;
}

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

void* allocate(std::size_t capacity) {
  const std::size_t align = capacity >= kHugePage ? kHugePage : kCacheLine;
  void* p = std::aligned_alloc(align, capacity);
  if (!p) throw std::bad_alloc();
  if (align == kHugePage) madvise(p, capacity, MADV_HUGEPAGE);
  return p;
}

ScratchBuffer acquire(std::size_t bytes, bool tight) {
  if (bytes > (std::size_t{1} << 62)) throw std::bad_alloc();
  const std::size_t want = round_up(std::max<std::size_t>(bytes, 1), bytes >= kHugePage ? kHugePage : kCacheLine);
  const std::size_t most = tight ? want + want / 4 : ~std::size_t{0};
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    auto best = c.idle.end();
    for (auto it = c.idle.begin(); it != c.idle.end(); ++it) {
      if (it->capacity >= want && it->capacity <= most && (best == c.idle.end() || it->capacity < best->capacity)) {
        best = it;
      }
    }
    if (best != c.idle.end()) {
      ScratchBuffer buffer(best->data, best->capacity);
      c.idle_bytes -= best->capacity;
      c.in_use_bytes += best->capacity;
      c.idle.erase(best);
      return buffer;
    }
  }
  ScratchBuffer buffer(allocate(want), want);
  std::lock_guard<std::mutex> lock(c.mutex);
  c.in_use_bytes += want;
  return buffer;
}

}  // namespace

ScratchBuffer acquire_scratch(std::size_t bytes) { return acquire(bytes, false); }
ScratchBuffer acquire_array_memory(std::size_t bytes) { return acquire(bytes, true); }

ScratchBuffer& ScratchBuffer::operator=(ScratchBuffer&& other) noexcept {
  if (this != &other) {
    ScratchBuffer old(std::move(*this));
    data_ = other.data_;
    capacity_ = other.capacity_;
    other.data_ = nullptr;
  }
  return *this;
}

ScratchBuffer::~ScratchBuffer() {
  if (!data_) return;
  std::list<Idle> evicted;
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    c.in_use_bytes -= capacity_;
    c.idle.push_front({data_, capacity_});
    c.idle_bytes += capacity_;
    while (c.idle_bytes > kWorkspaceIdleLimit) {
      c.idle_bytes -= c.idle.back().capacity;
      evicted.splice(evicted.begin(), c.idle, std::prev(c.idle.end()));
    }
  }
  for (const Idle& b : evicted) std::free(b.data);
}

void empty_cache() {
  std::list<Idle> freed;
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    freed.swap(c.idle);
    c.idle_bytes = 0;
  }
  for (const Idle& b : freed) std::free(b.data);
}

std::size_t workspace_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.idle_bytes + c.in_use_bytes;
}

}  // namespace nnkern
