// CPU feature detection: which kernel families this CPU *and* OS can run.
#pragma once

#include <vector>

namespace nnkern {

// Kernel families, ordered from the most portable to the fastest.
enum class Isa { scalar = 0, avx2 = 1, avx512 = 2 };
constexpr int kIsaCount = 3;

const char* isa_name(Isa isa);

// True when the CPU has the instructions and the OS saves the register state
// (cpuid + xgetbv). avx2 means AVX2+FMA+F16C; avx512 means F/BW/VL/DQ.
bool cpu_supports(Isa isa);

// Every family this machine can run, fastest first (always ends in scalar).
std::vector<Isa> supported_isas();

Isa best_supported_isa();

}  // namespace nnkern
