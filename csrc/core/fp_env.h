// Floating-point environment of kernel calls: flush denormals to zero.
//
// Denormal operands cost ~100 cycles per instruction on x86; deep-learning
// kernels never need them, so every native call runs with FTZ (results that
// would be denormal become 0) and DAZ (denormal inputs read as 0) set in
// MXCSR. The guard is per thread: the thread pool copies the caller's MXCSR
// into each worker for the duration of a task (thread_pool.cpp), and each
// thread gets its previous state back afterwards, so Python's own arithmetic
// is unaffected. On other architectures this is a no-op.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define NNKERN_HAVE_MXCSR 1
#endif

namespace nnkern {

#ifdef NNKERN_HAVE_MXCSR
constexpr unsigned kMxcsrFtz = 1u << 15;
constexpr unsigned kMxcsrDaz = 1u << 6;
inline unsigned get_fp_mode() { return _mm_getcsr(); }
inline void set_fp_mode(unsigned mode) { _mm_setcsr(mode); }
inline bool flushing_denormals() { return (_mm_getcsr() & (kMxcsrFtz | kMxcsrDaz)) == (kMxcsrFtz | kMxcsrDaz); }
#else
inline unsigned get_fp_mode() { return 0; }
inline void set_fp_mode(unsigned) {}
inline bool flushing_denormals() { return false; }
#endif

// Installs `mode` on this thread and restores the previous one on scope exit.
class ScopedFpMode {
 public:
  explicit ScopedFpMode(unsigned mode) : saved_(get_fp_mode()) { set_fp_mode(mode); }
  ~ScopedFpMode() { set_fp_mode(saved_); }
  ScopedFpMode(const ScopedFpMode&) = delete;
  ScopedFpMode& operator=(const ScopedFpMode&) = delete;

 private:
  unsigned saved_;
};

// Sets FTZ and DAZ on this thread for the guard's lifetime.
class FlushDenormalsGuard : public ScopedFpMode {
 public:
#ifdef NNKERN_HAVE_MXCSR
  FlushDenormalsGuard() : ScopedFpMode(get_fp_mode() | kMxcsrFtz | kMxcsrDaz) {}
#else
  FlushDenormalsGuard() : ScopedFpMode(0) {}
#endif
};

}  // namespace nnkern
