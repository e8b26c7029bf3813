#include "core/cpu_features.h"

// A family counts only if this build compiled its kernels (NNKERN_X86_KERNELS).
#if (defined(__x86_64__) || defined(_M_X64)) && NNKERN_X86_KERNELS
#include <cpuid.h>
#include <cstdint>
#define NNKERN_DETECT_X86 1
#endif

namespace nnkern {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::scalar: return "scalar";
  }
  return "unknown";
}

#ifdef NNKERN_DETECT_X86
namespace {

struct X86Features {
  bool avx2 = false;
  bool avx512 = false;
};

uint64_t read_xcr0() {
  uint32_t lo = 0, hi = 0;
  // xgetbv(0) via its encoding so that no -mxsave flag is needed.
  __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t{hi} << 32) | lo;
}

X86Features detect() {
  X86Features f;
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool fma = ecx & (1u << 12);
  const bool osxsave = ecx & (1u << 27);
  const bool avx = ecx & (1u << 28);
  const bool f16c = ecx & (1u << 29);
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = read_xcr0();
  const bool os_ymm = (xcr0 & 0x6) == 0x6;     // XMM and YMM state
  const bool os_zmm = (xcr0 & 0xe6) == 0xe6;   // plus opmask, ZMM0-15 high halves, ZMM16-31
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return f;
  const bool avx2 = ebx & (1u << 5);
  const bool avx512f = ebx & (1u << 16);
  const bool avx512dq = ebx & (1u << 17);
  const bool avx512bw = ebx & (1u << 30);
  const bool avx512vl = ebx & (1u << 31);
  f.avx2 = os_ymm && avx2 && fma && f16c;
  f.avx512 = f.avx2 && os_zmm && avx512f && avx512dq && avx512bw && avx512vl;
  return f;
}

const X86Features& features() {
  static const X86Features f = detect();
  return f;
}

}  // namespace

bool cpu_supports(Isa isa) {
  switch (isa) {
    case Isa::avx512: return features().avx512;
    case Isa::avx2: return features().avx2;
    case Isa::scalar: return true;
  }
  return false;
}
#else
bool cpu_supports(Isa isa) { return isa == Isa::scalar; }
#endif

std::vector<Isa> supported_isas() {
  std::vector<Isa> isas;
  for (Isa isa : {Isa::avx512, Isa::avx2, Isa::scalar}) {
    if (cpu_supports(isa)) isas.push_back(isa);
  }
  return isas;
}

Isa best_supported_isa() { return supported_isas().front(); }

}  // namespace nnkern
