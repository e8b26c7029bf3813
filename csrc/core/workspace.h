// Scratch buffers reused across kernel calls.
//
// Large temporaries (packed weights, im2col tiles) are expensive to get from
// the OS: every fresh 4 KiB page faults (~2 us here). Kernels therefore check
// a buffer out of a process-wide cache and return it when done:
//
//   ScratchBuffer tmp = acquire_scratch(bytes);   // 64-byte aligned
//   float* p = tmp.as<float>();                   // returned on scope exit
//
// A checkout takes the smallest idle buffer that is large enough, else
// allocates. Buffers of 2 MiB and more are 2 MiB aligned and advised as
// transparent huge pages. Bound: idle buffers beyond kWorkspaceIdleLimit
// bytes in total are freed on return, least recently used first; buffers in
// use are never counted against it. empty_cache() frees every idle buffer.
#pragma once

#include <cstddef>

namespace nnkern {

constexpr std::size_t kWorkspaceIdleLimit = std::size_t{256} << 20;

class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ScratchBuffer(void* data, std::size_t capacity) : data_(data), capacity_(capacity) {}
  ScratchBuffer(ScratchBuffer&& other) noexcept : data_(other.data_), capacity_(other.capacity_) {
    other.data_ = nullptr;
  }
  ScratchBuffer& operator=(ScratchBuffer&& other) noexcept;
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ~ScratchBuffer();

  void* data() const { return data_; }
  std::size_t capacity() const { return capacity_; }
  template <class T>
  T* as() const { return static_cast<T*>(data_); }

 private:
  void* data_ = nullptr;
  std::size_t capacity_ = 0;
};

// Throws std::bad_alloc (MemoryError) when the memory is not available.
ScratchBuffer acquire_scratch(std::size_t bytes);

// The memory of a large array handed to Python (bindings/arrays.h): like
// acquire_scratch, but an idle buffer is taken only when it is at most a
// quarter larger than asked for, since the array may live long. Its pages
// were touched by an earlier array, so filling it costs no page faults (a
// fresh 4 KiB page faults at ~2 us here: a 13 MB output would spend ~6 ms).
ScratchBuffer acquire_array_memory(std::size_t bytes);

// Frees every idle buffer.
void empty_cache();

// Bytes the cache holds: idle buffers plus those checked out.
std::size_t workspace_bytes();

}  // namespace nnkern
