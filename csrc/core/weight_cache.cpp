#include "core/weight_cache.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

#include "core/thread_pool.h"
#include "core/workspace.h"

namespace nnkern {
namespace {

// Keys remembered as seen once (a weight is cached on its second call).
constexpr std::size_t kSeenKeys = 64;
// At most this many entries: a loop that draws fresh weights, which the
// allocator often places at addresses seen before, must not fill the byte
// limit with small stale entries.
constexpr std::size_t kMaxEntries = 256;
constexpr std::size_t kDefaultLimitMiB = 256;

bool same_key(const WeightKey& a, const WeightKey& b) {
  return a.data == b.data && a.bytes == b.bytes && a.params == b.params;
}

// Whether n bytes at a and b are equal; weights above one run are compared in
// 256 KiB runs over the threads (a single-thread memcmp of a 9 MB weight takes
// ~0.4 ms; of a recurrent layer's two 1 MiB weights, 3% of L1's forward in perf).
bool same_bytes(const void* a, const void* b, std::size_t n) {
  constexpr std::size_t kRun = std::size_t{256} << 10;
  const auto* pa = static_cast<const unsigned char*>(a);
  const auto* pb = static_cast<const unsigned char*>(b);
  if (n <= kRun) return std::memcmp(pa, pb, n) == 0;
  const std::size_t runs = (n + kRun - 1) / kRun;
  std::atomic<bool> differ{false};
  parallel_for(runs, [&](std::size_t first, std::size_t last) {
    for (std::size_t r = first; r < last && !differ.load(std::memory_order_relaxed); ++r) {
      const std::size_t at = r * kRun, len = std::min(kRun, n - at);
      if (std::memcmp(pa + at, pb + at, len) != 0) differ.store(true, std::memory_order_relaxed);
    }
  });
  return !differ.load();
}

struct Entry {
  WeightKey key;
  ScratchBuffer copy;  // the weight bytes the entry was built from
  Derived derived;
  std::uint64_t last_use = 0;
  std::size_t bytes() const { return key.bytes + derived.bytes; }
};

std::size_t limit_from_env() {
  const char* v = std::getenv("NNKERN_WEIGHT_CACHE_MB");
  if (v == nullptr || *v == '\0') return kDefaultLimitMiB << 20;
  char* end = nullptr;
  const unsigned long long mib = std::strtoull(v, &end, 10);
  if (end == v) return kDefaultLimitMiB << 20;
  return static_cast<std::size_t>(std::min<unsigned long long>(mib, 1ull << 30)) << 20;
}

class Cache {
 public:
  Derived get(const WeightKey& key, const std::function<Derived()>& build) {
    if (limit_ == 0) return build();
    std::shared_ptr<Entry> found;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& e : entries_) {
        if (same_key(e->key, key)) {
          found = e;
          e->last_use = ++tick_;
          break;
        }
      }
    }
    if (found && same_bytes(found->copy.data(), key.data, key.bytes)) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.hits;
      return found->derived;
    }
    Derived derived = build();
    bool store = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.misses;
      store = found != nullptr || remember(key);
    }
    if (!store || key.bytes + derived.bytes > limit_) return derived;
    auto entry = std::make_shared<Entry>();
    entry->key = key;
    entry->copy = acquire_array_memory(std::max<std::size_t>(key.bytes, 1));
    std::memcpy(entry->copy.data(), key.data, key.bytes);
    entry->derived = derived;
    std::lock_guard<std::mutex> lock(mu_);
    erase_key(key);
    entry->last_use = ++tick_;
    bytes_ += entry->bytes();
    entries_.push_back(std::move(entry));
    ++stats_.builds_stored;
    evict();
    return derived;
  }

  void clear() {
    std::vector<std::shared_ptr<Entry>> dropped;
    std::lock_guard<std::mutex> lock(mu_);
    dropped.swap(entries_);
    seen_.clear();
    bytes_ = 0;
  }

  WeightCacheStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    WeightCacheStats s = stats_;
    s.entries = entries_.size();
    s.bytes = bytes_;
    s.limit = limit_;
    return s;
  }

 private:
  // Whether key was seen before (and so is worth storing); remembers it if not.
  bool remember(const WeightKey& key) {
    for (auto it = seen_.begin(); it != seen_.end(); ++it) {
      if (same_key(*it, key)) {
        seen_.erase(it);
        return true;
      }
    }
    seen_.push_back(key);
    if (seen_.size() > kSeenKeys) seen_.pop_front();
    return false;
  }

  void erase_key(const WeightKey& key) {
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (same_key((*it)->key, key)) {
        bytes_ -= (*it)->bytes();
        entries_.erase(it);
        return;
      }
    }
  }

  void evict() {
    while ((bytes_ > limit_ || entries_.size() > kMaxEntries) && !entries_.empty()) {
      auto oldest = std::min_element(entries_.begin(), entries_.end(),
                                     [](const auto& a, const auto& b) { return a->last_use < b->last_use; });
      bytes_ -= (*oldest)->bytes();
      entries_.erase(oldest);
    }
  }

  std::mutex mu_;
  std::vector<std::shared_ptr<Entry>> entries_;
  std::deque<WeightKey> seen_;
  std::size_t bytes_ = 0;
  const std::size_t limit_ = limit_from_env();
  std::uint64_t tick_ = 0;
  WeightCacheStats stats_;
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: entries may outlive static destruction order
  return *c;
}

}  // namespace

Derived cached_weight(const WeightKey& key, const std::function<Derived()>& build) { return cache().get(key, build); }

void empty_weight_cache() { cache().clear(); }

WeightCacheStats weight_cache_stats() { return cache().stats(); }

}  // namespace nnkern
