#include "core/dispatch.h"

#include <atomic>

#include "core/errors.h"

namespace nnkern {
namespace {

std::atomic<int> g_active{-1};  // -1: not selected yet

std::string supported_list() {
  std::string out;
  for (Isa isa : supported_isas()) {
    if (!out.empty()) out += ", ";
    out += isa_name(isa);
  }
  return out;
}

}  // namespace

void select_isa(const std::string& name) {
  if (name.empty()) {
    g_active = static_cast<int>(best_supported_isa());
    return;
  }
  for (Isa isa : {Isa::avx512, Isa::avx2, Isa::scalar}) {
    if (name != isa_name(isa)) continue;
    if (!cpu_supports(isa)) {
      throw value_error("NNKERN_ISA='" + name + "' is not supported by this CPU; it supports: " +
                        supported_list());
    }
    g_active = static_cast<int>(isa);
    return;
  }
  throw value_error("NNKERN_ISA='" + name +
                    "' is not a kernel family; expected one of avx512, avx2, scalar "
                    "(this CPU supports: " + supported_list() + ")");
}

Isa active_isa() {
  int isa = g_active.load(std::memory_order_relaxed);
  if (isa < 0) {
    isa = static_cast<int>(best_supported_isa());
    g_active = isa;
  }
  return static_cast<Isa>(isa);
}

}  // namespace nnkern
