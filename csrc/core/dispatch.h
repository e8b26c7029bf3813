// The kernel family in use, chosen once when Python imports the module, and
// the per-op tables that map it to micro-kernels (XNNPACK's config style).
#pragma once

#include <string>

#include "core/cpu_features.h"

namespace nnkern {

// Select the family: "" = the best this CPU supports; otherwise one of
// "avx512", "avx2", "scalar". Throws value_error naming the value and what the
// CPU supports when the name is unknown or the CPU lacks the family.
void select_isa(const std::string& name);

// The family in use (the best supported one until select_isa is called).
Isa active_isa();

// One micro-kernel per family; an entry is null only for a family that this
// build does not compile (avx2/avx512 on non-x86), which cpu_supports rules out.
template <class Fn>
struct PerIsa {
  Fn scalar;
  Fn avx2;
  Fn avx512;

  Fn pick(Isa isa) const {
    switch (isa) {
      case Isa::avx512: return avx512;
      case Isa::avx2: return avx2;
      case Isa::scalar: break;
    }
    return scalar;
  }
  Fn active() const { return pick(active_isa()); }
};

// Builds avx2/avx512 table entries only where those families are compiled.
#if NNKERN_X86_KERNELS
#define NNKERN_X86_ONLY(kernel) kernel
#else
#define NNKERN_X86_ONLY(kernel) nullptr
#endif

}  // namespace nnkern
