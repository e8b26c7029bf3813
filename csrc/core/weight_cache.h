// The weight cache: what an operator derives from a weight array (packed GEMM
// panels, Winograd-transformed filters) kept across calls, so that calling a
// layer again with the same weights does not repack them.
//
// Validity is checked, not trusted: an entry keeps a copy of the weight bytes
// it was built from and serves a call only when the weight passed now has
// identical bytes (a memcmp, split over the threads; ~1/10 of what packing
// costs). A weight changed in place (an optimizer step, `w *= 2`, a reload)
// therefore rebuilds its entry; no version counter, key or hash is involved,
// and a stale result is impossible.
//
// Policy:
//  - An entry is built only the second time a key (the weight's address, its
//    size and the operator's parameters: what is derived, the ISA, shapes) is
//    seen within the last kSeenKeys keys: one-off weights (a functional call
//    on a fresh array) cost nothing and take no memory.
//  - A rebuilt key replaces its entry; entries are evicted least recently used
//    when their bytes (copies plus derived data) exceed the limit (256 MiB;
//    NNKERN_WEIGHT_CACHE_MB overrides it, 0 turns the cache off) or there are
//    more than 256 of them.
//  - An entry in use stays alive until its last user is done (shared_ptr),
//    even if evicted meanwhile. Thread-safe.
//  - empty_weight_cache() drops every entry (nnkern.empty_cache() calls it).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

namespace nnkern {

struct WeightKey {
  const void* data = nullptr;           // the weight's first byte
  std::size_t bytes = 0;                // its size (contiguous)
  std::array<std::uint64_t, 8> params{};  // what is derived and how: kind, dtype, ISA, shape...
};

// What a build returns: the derived data (type-erased) and the bytes it holds.
struct Derived {
  std::shared_ptr<const void> value;
  std::size_t bytes = 0;
};

// The derived data for `key`: from the cache when an entry of this key was
// built from identical bytes, else from build() (stored when the policy says so).
Derived cached_weight(const WeightKey& key, const std::function<Derived()>& build);

template <class P>
std::shared_ptr<const P> cached_weight_as(const WeightKey& key, const std::function<Derived()>& build) {
  return std::static_pointer_cast<const P>(cached_weight(key, build).value);
}

void empty_weight_cache();

struct WeightCacheStats {
  std::size_t entries = 0, bytes = 0, limit = 0;
  std::uint64_t hits = 0, misses = 0, builds_stored = 0;
};
WeightCacheStats weight_cache_stats();

}  // namespace nnkern
